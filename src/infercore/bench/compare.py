"""Correctness checks that benchmark cases run on the device before timing."""

from __future__ import annotations

import torch

__all__ = ["check_close"]


def check_close(what: str, out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    """Raise ``AssertionError`` unless ``||out - ref|| / ||ref|| < tol`` and ``out`` is finite."""
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        raise AssertionError(f"{what}: output has NaN/Inf")
    out64, ref64 = out.double(), ref.double()
    err = ((out64 - ref64).norm() / ref64.norm().clamp_min(1e-300)).item()
    if not err < tol:
        raise AssertionError(f"{what}: relative error {err:.2e} >= {tol:.0e}")
