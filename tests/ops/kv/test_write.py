"""kv.write: every registered backend against the reference."""

import pytest
import torch

import infercore
from infercore.ops.attention.checks import FP8_DTYPE
from tests.helpers import backend_params, poison

# (tokens, kv heads, head dim, block size, value dtype, cache dtype, scales, shared K/V tensor)
CASES = {
    "bf16-b16": (37, 2, 64, 16, torch.bfloat16, torch.bfloat16, None, False),
    "fp16-into-fp32-d80-b32-shared": (19, 3, 80, 32, torch.float16, torch.float32, None, True),
    "fp8-scaled-d128-b16": (23, 2, 128, 16, torch.bfloat16, FP8_DTYPE, (0.05, 0.02), False),
    "fp32-scaled-d96-shared": (11, 1, 96, 16, torch.float32, torch.float16, (0.5, 2.0), True),
}


def _caches(num_blocks, block, heads, dim, dtype, shared, device):
    if shared:
        kv = torch.empty(num_blocks, 2, block, heads, dim, dtype=dtype, device=device)
        return poison(kv)[:, 0], kv[:, 1]
    shape = (num_blocks, block, heads, dim)
    return (poison(torch.empty(shape, dtype=dtype, device=device)),
            poison(torch.empty(shape, dtype=dtype, device=device)))


@pytest.mark.parametrize("backend", backend_params("kv.write", include_reference=True))
@pytest.mark.parametrize("name", list(CASES))
def test_kv_write_matches_reference(backend, name, device):
    tokens, heads, dim, block, dtype, cache_dtype, scales, shared = CASES[name]
    if cache_dtype == FP8_DTYPE and backend != "reference" and device.type == "cpu":
        pytest.skip("the Triton interpreter rounds float32 -> float8e4nv wrongly where the "
                    "mantissa carries into the exponent (31.0 -> 16.0); runs on CUDA")
    g = torch.Generator().manual_seed(tokens)
    num_blocks = -(-tokens // block) + 2
    # k and v as strided views of a fused QKV output.
    qkv = (torch.randn(tokens, 4 * heads, dim, generator=g) * 3).to(device=device, dtype=dtype)
    k, v = qkv[:, heads : 2 * heads], qkv[:, 3 * heads :]
    slots = torch.randperm(num_blocks * block, generator=g)[:tokens].to(device)
    slots[torch.arange(0, tokens, 5, device=device)] = -1  # padding tokens, skipped
    k_scale, v_scale = scales if scales else (None, None)
    got_k, got_v = _caches(num_blocks, block, heads, dim, cache_dtype, shared, device)
    ref_k, ref_v = _caches(num_blocks, block, heads, dim, cache_dtype, shared, device)
    infercore.ops.kv.write(k, v, got_k, got_v, slots, k_scale=k_scale, v_scale=v_scale,
                           backend=backend)
    infercore.ops.kv.write(k, v, ref_k, ref_v, slots, k_scale=k_scale, v_scale=v_scale,
                           backend="reference")
    keep = slots >= 0
    written = torch.zeros(num_blocks * block, dtype=torch.bool, device=device)
    written[slots[keep]] = True
    written = written.view(num_blocks, block)
    for got, ref, src, scale in ((got_k, ref_k, k, k_scale), (got_v, ref_v, v, v_scale)):
        assert got[~written].float().isnan().all(), "slots not named (or -1) stay untouched"
        g32, r32 = got[written].float(), ref[written].float()
        if cache_dtype == FP8_DTYPE:
            # One float8 step at most (rounding of exact ties may differ), and rarely.
            step = r32.abs().clamp(min=2.0**-6) * 2.0**-3
            assert ((g32 - r32).abs() <= step).all()
            assert (g32 != r32).float().mean() < 0.01
        else:
            assert torch.equal(g32, r32)
        # Read back by slot: the cache holds src / scale, to the cache dtype's precision.
        stored = got.reshape(num_blocks * block, heads, dim)[slots[keep]].float()
        expect = src[keep].float() / (scale or 1.0)
        tol = 0.07 if cache_dtype == FP8_DTYPE else 1e-2
        assert (stored - expect).norm() / expect.norm() < tol
