"""attention.paged and attention.decode: every registered backend against the reference.

Batches mix full prefills, prefill chunks (``len_q < seq_len``), short runs and decodes;
caches are shuffled blocks whose unused slots are NaN.
"""

import pytest
import torch

import infercore
from infercore.ops.attention import partition
from infercore.ops.attention.checks import FP8_DTYPE
from infercore.ops.attention.reference import paged_attention_reference
from tests.helpers import REL_TOL, assert_close, backend_params, poison
from tests.ops.attention.batches import odd_lengths, paged_batch

F32, F16 = torch.float32, torch.float16

# (heads, kv heads, head dim, block size, dtype, kv dtype, causal, window, softcap)
PAGED_CASES = {
    "mha-d64-b16": (2, 2, 64, 16, F32, None, True, None, None),
    "gqa4-d128-b32-fp16": (8, 2, 128, 32, F16, None, True, None, None),
    "gqa8-d80-b16-window": (8, 1, 80, 16, F32, None, True, 45, None),
    "gqa4-d64-b32-fp8-softcap": (4, 1, 64, 32, F32, FP8_DTYPE, True, None, 8.0),
    "gqa4-d96-b16-noncausal": (4, 1, 96, 16, F16, None, False, None, None),
}


def _mixed_lengths(seed: int) -> tuple[list[int], list[int]]:
    """A full prefill, a prefill chunk, a 3-token run and two decodes."""
    seq = odd_lengths(5, 1, 300, seed)
    seq[2], seq[4] = max(seq[2], 3), max(seq[4], 1)
    lq = [seq[0], max(1, seq[1] // 3) | 1, 3, 1, 1]
    return seq, lq


def _reference(batch, causal=True, window=None, softcap=None, cu=None):
    cu = batch.cu_seqlens_q if cu is None else cu
    return paged_attention_reference(
        batch.q.double(), batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, cu,
        causal=causal, sliding_window=window, softcap=softcap, k_scale=batch.k_scale,
        v_scale=batch.v_scale,
    )


@pytest.mark.parametrize("backend", backend_params("attention.paged"))
@pytest.mark.parametrize("name", list(PAGED_CASES))
def test_paged_mixed_batch_matches_reference(backend, name, device):
    heads, kv_heads, dim, block, dtype, kv_dtype, causal, window, softcap = PAGED_CASES[name]
    seq, lq = _mixed_lengths(seed=dim + block)
    batch = paged_batch(seq, lq, num_heads=heads, num_kv_heads=kv_heads, head_dim=dim,
                        block_size=block, dtype=dtype, kv_dtype=kv_dtype, device=device,
                        shared_kv=block == 32, seed=dim)
    out = poison(torch.empty_like(batch.q))
    got, lse = infercore.ops.attention.paged(
        batch.q, *batch.cache_args(), batch.cu_seqlens_q, batch.max_seqlen_q, causal=causal,
        sliding_window=window, softcap=softcap, k_scale=batch.k_scale, v_scale=batch.v_scale,
        return_lse=True, out=out, backend=backend,
    )
    ref, ref_lse = _reference(batch, causal, window, softcap)
    assert_close(got, ref, dtype=dtype)
    assert_close(lse, ref_lse.float(), tol=REL_TOL[dtype])


# (heads, kv heads, head dim, block size, kv dtype, window, softcap, num_splits, seq lens)
DECODE_CASES = {
    "gqa8-auto-splits": (8, 1, 64, 16, None, None, None, None, [599, 5, 1]),
    "mha-3-splits-window": (2, 2, 128, 32, None, 100, None, 3, [257, 31]),
    "gqa4-fp8-softcap-7-splits": (4, 1, 80, 16, FP8_DTYPE, None, 10.0, 7, [211, 2]),
}


@pytest.mark.parametrize("backend", backend_params("attention.decode"))
@pytest.mark.parametrize("name", list(DECODE_CASES))
def test_decode_matches_reference(backend, name, device):
    heads, kv_heads, dim, block, kv_dtype, window, softcap, splits, seq = DECODE_CASES[name]
    batch = paged_batch(seq, [1] * len(seq), num_heads=heads, num_kv_heads=kv_heads,
                        head_dim=dim, block_size=block, dtype=F32, kv_dtype=kv_dtype,
                        device=device, seed=len(seq) + dim)
    out = poison(torch.empty_like(batch.q))
    got, lse = infercore.ops.attention.decode(
        batch.q, *batch.cache_args(), sliding_window=window, softcap=softcap,
        k_scale=batch.k_scale, v_scale=batch.v_scale, num_splits=splits, return_lse=True,
        out=out, backend=backend,
    )
    ref, ref_lse = _reference(batch, True, window, softcap)
    assert_close(got, ref, dtype=F32)
    assert_close(lse, ref_lse.float(), tol=REL_TOL[F32])


@pytest.mark.parametrize("backend", backend_params("attention.paged"))
def test_paged_all_decode_batch_splits_keys(backend, device, monkeypatch):
    """max_seqlen_q == 1 takes the split-KV path of the paged op."""
    monkeypatch.setattr(partition, "MIN_KEYS_PER_SPLIT", 64)
    seq = [263, 1, 97]
    assert partition.choose_num_splits(len(seq), 288, device) > 1
    batch = paged_batch(seq, [1, 1, 1], num_heads=4, num_kv_heads=1, head_dim=64,
                        block_size=16, dtype=F32, device=device, seed=5)
    got = infercore.ops.attention.paged(batch.q, *batch.cache_args(), batch.cu_seqlens_q, 1,
                                        backend=backend)
    assert_close(got, _reference(batch)[0], dtype=F32)
