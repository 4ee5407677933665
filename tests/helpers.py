"""Shared test helpers: registry-generated parameters, tolerances, poisoning."""

from __future__ import annotations

import pytest
import torch

from infercore.registry import backends

#: Bound on ||out - ref|| / ||ref|| per output dtype (float32 allows for tf32 dots on GPU).
REL_TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def backend_params(family: str, *, include_reference: bool = False) -> list:
    """One pytest param per backend of ``family``; backends unavailable here are skipped
    with their reasons, so a newly registered backend is tested without new test code."""
    params = []
    for b in backends(family):
        if b.name == "reference" and not include_reference:
            continue
        reasons = b.environment_reasons()
        marks = [pytest.mark.skip(reason="; ".join(reasons))] if reasons else []
        params.append(pytest.param(b.name, id=b.name, marks=marks))
    return params


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out64, ref64 = out.double(), ref.double()
    denom = ref64.norm().item()
    return (out64 - ref64).norm().item() / (denom if denom > 0 else 1.0)


def assert_close(out: torch.Tensor, ref: torch.Tensor, *, tol: float | None = None,
                 dtype: torch.dtype | None = None) -> None:
    """Relative-norm comparison with a per-dtype bound; NaN or Inf never passes."""
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), "output has NaN/Inf (unwritten or overflowed elements)"
    bound = tol if tol is not None else REL_TOL[dtype or out.dtype]
    err = rel_err(out, ref)
    assert err <= bound, f"relative error {err:.3e} > {bound:.1e}"


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN (floats) or a sentinel (ints) so unwritten elements show up."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(-0x7EADBEEF if t.dtype in (torch.int32, torch.int64) else 0x5A)


def skip_unless_supported(family: str, backend: str, inputs: object) -> None:
    """Skip the test, with the backend's reasons, when it declines these inputs."""
    from infercore.registry import get_registry

    reasons = get_registry().get(family, backend).not_supported_reasons(inputs)
    if reasons:
        pytest.skip(f"{family}:{backend} declines these inputs: " + "; ".join(reasons))
