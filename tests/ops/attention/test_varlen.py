"""attention.varlen: every registered backend against the reference on random batches."""

import pytest
import torch

import infercore
from infercore.ops.attention.reference import varlen_attention_reference
from tests.helpers import REL_TOL, assert_close, backend_params, poison
from tests.ops.attention.batches import cu_seqlens, odd_lengths

# (heads, kv heads, head dim, dtype, causal, window, softcap, query lens, key lens)
CASES = {
    "gqa4-d64-causal": (8, 2, 64, torch.float32, True, None, None,
                        odd_lengths(3, 1, 300, seed=1), None),
    "mha-d128-cross-fp16": (2, 2, 128, torch.float16, False, None, None, [17, 3], [40, 99]),
    "gqa8-d80-window": (8, 1, 80, torch.float32, True, 29, None, [151, 9], None),
    "mqa-d96-softcap-short-keys": (4, 1, 96, torch.float32, True, None, 5.0, [21, 6, 1],
                                   [9, 60, 1]),
    "d256-window-noncausal": (2, 1, 256, torch.float16, False, 40, None, [37], [101]),
}


def _packed(case, device):
    heads, kv_heads, dim, dtype, *_, lq, lk = case
    lk = lq if lk is None else lk
    g = torch.Generator().manual_seed(sum(lq) + dim)
    # q, k and v are strided views of fused buffers, as hosts hand them over.
    qkv = torch.randn(sum(lq), heads + 2 * kv_heads, dim, generator=g)
    kv = torch.randn(sum(lk), 2, kv_heads, dim, generator=g)
    q = qkv.to(device=device, dtype=dtype)[:, :heads]
    kv = kv.to(device=device, dtype=dtype)
    return q, kv[:, 0], kv[:, 1], cu_seqlens(lq, device), cu_seqlens(lk, device), lq, lk


@pytest.mark.parametrize("backend", backend_params("attention.varlen"))
@pytest.mark.parametrize("name", list(CASES))
def test_varlen_matches_reference(backend, name, device):
    case = CASES[name]
    _, _, _, dtype, causal, window, softcap, _, _ = case
    q, k, v, cq, ck, lq, lk = _packed(case, device)
    out = poison(torch.empty(q.shape, dtype=dtype, device=device))
    got, lse = infercore.ops.attention.varlen(
        q, k, v, cq, ck, max(lq), max(lk), causal=causal, sliding_window=window,
        softcap=softcap, return_lse=True, out=out, backend=backend,
    )
    ref, ref_lse = varlen_attention_reference(
        q.double(), k.double(), v.double(), cq, ck, causal=causal, sliding_window=window,
        softcap=softcap,
    )
    assert got is out
    assert_close(out, ref, dtype=dtype)
    seen = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), seen), "LSE -inf exactly where a query sees no key"
    assert_close(lse[seen], ref_lse[seen].float(), tol=REL_TOL[dtype])


def test_varlen_default_scale_matches_explicit(device):
    q, k, v, cq, ck, lq, lk = _packed(CASES["gqa4-d64-causal"], device)
    a = infercore.ops.attention.varlen(q, k, v, cq, ck, max(lq), max(lk), backend="reference")
    b = infercore.ops.attention.varlen(q, k, v, cq, ck, max(lq), max(lk), scale=0.125,
                                       backend="reference")
    assert torch.equal(a, b)
    c = infercore.ops.attention.varlen(q, k, v, cq, ck, max(lq), max(lk), scale=0.3,
                                       backend="reference")
    assert not torch.allclose(a, c)
