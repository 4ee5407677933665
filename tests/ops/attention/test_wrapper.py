"""PagedAttentionWrapper: plan once, run per layer; fixed layouts for CUDA graphs."""

import pytest
import torch

import infercore
from infercore.ops.attention import PagedAttentionWrapper
from infercore.ops.attention.reference import paged_attention_reference
from tests.helpers import assert_close, backend_params, poison
from tests.ops.attention.batches import paged_batch

F32 = torch.float32
GEOMETRY = dict(num_heads=4, num_kv_heads=1, head_dim=64, block_size=16)


def _wrapper(device, backend="auto", **kw):
    g = GEOMETRY
    return PagedAttentionWrapper(
        g["num_heads"], g["num_kv_heads"], g["head_dim"], g["block_size"], max_batch=6,
        max_tokens=400, max_blocks_per_seq=24, dtype=F32, device=device, backend=backend, **kw)


def _reference(batch, **kw):
    return paged_attention_reference(
        batch.q.double()[: int(batch.cu_seqlens_q[-1])], batch.k_cache, batch.v_cache,
        batch.block_tables, batch.seq_lens, batch.cu_seqlens_q, **kw)[0]


@pytest.mark.parametrize("backend", backend_params("attention.paged", include_reference=True))
def test_plan_once_run_two_layers(backend, device):
    batch = paged_batch([201, 57, 1, 9], [140, 3, 1, 1], **GEOMETRY, dtype=F32, device=device,
                        seed=1)
    w = _wrapper(device, backend, num_blocks=batch.k_cache.shape[0])
    w.plan(batch.cu_seqlens_q.cpu(), batch.seq_lens.cpu(), batch.block_tables)
    # Layer 1: other caches (unused slots stay NaN), other queries, its own window.
    layer1 = (torch.randn_like(batch.q), batch.k_cache * -0.7 + 0.1, batch.v_cache * 1.3 - 0.2)
    for (q, k_cache, v_cache), window in (((batch.q, batch.k_cache, batch.v_cache), None),
                                          (layer1, 50)):
        out = poison(torch.empty_like(q))
        w.run(q, k_cache, v_cache, sliding_window=window, out=out)
        ref = paged_attention_reference(
            q.double(), k_cache, v_cache, batch.block_tables, batch.seq_lens,
            batch.cu_seqlens_q, sliding_window=window)[0]
        assert_close(out, ref, dtype=F32)


@pytest.mark.parametrize("backend", backend_params("attention.paged"))
def test_cuda_graph_layout_serves_later_smaller_batches(backend, device):
    w = _wrapper(device, backend, cuda_graph=True)
    first = paged_batch([150, 33, 1], [150, 4, 1], **GEOMETRY, dtype=F32, device=device, seed=3)
    w.plan(first.cu_seqlens_q.cpu(), first.seq_lens.cpu(), first.block_tables)
    assert_close(w.run(first.q, first.k_cache, first.v_cache), _reference(first), dtype=F32)
    # A later step: fewer sequences, other lengths, queries padded to a fixed token count.
    later = paged_batch([77, 300], [20, 1], **GEOMETRY, dtype=F32, device=device, seed=4)
    padded = torch.cat([later.q, torch.randn(9, *later.q.shape[1:], device=device)])
    w.plan(later.cu_seqlens_q.cpu(), later.seq_lens.cpu(), later.block_tables)
    out = poison(torch.empty_like(padded))
    w.run(padded, later.k_cache, later.v_cache, out=out)
    assert_close(out[:21], _reference(later), dtype=F32)
    assert out[21:].isnan().all(), "rows past the planned tokens are left alone"


@pytest.mark.parametrize("backend", backend_params("attention.paged"))
def test_planned_decode_splits(backend, device):
    batch = paged_batch([333, 5, 64], [1, 1, 1], **GEOMETRY, dtype=F32, device=device, seed=6)
    w = _wrapper(device, backend)
    w.plan(batch.cu_seqlens_q, batch.seq_lens, batch.block_tables, num_splits=3)
    out, lse = w.run(batch.q, batch.k_cache, batch.v_cache, return_lse=True)
    ref, ref_lse = paged_attention_reference(
        batch.q.double(), batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens,
        batch.cu_seqlens_q)
    assert_close(out, ref, dtype=F32)
    assert_close(lse, ref_lse.float(), dtype=F32)


def test_cuda_graph_layout_is_fixed_by_first_plan(device):
    decode = paged_batch([40, 9], [1, 1], **GEOMETRY, dtype=F32, device=device)
    prefill = paged_batch([40, 90], [1, 90], **GEOMETRY, dtype=F32, device=device)
    w = _wrapper(device, cuda_graph=True)
    w.plan(decode.cu_seqlens_q, decode.seq_lens, decode.block_tables, num_splits=2)
    with pytest.raises(ValueError, match="layout was fixed by a plan without prefill"):
        w.plan(prefill.cu_seqlens_q, prefill.seq_lens, prefill.block_tables)
    with pytest.raises(ValueError, match="num_splits=1 differs"):
        w.plan(decode.cu_seqlens_q, decode.seq_lens, decode.block_tables, num_splits=1)
    with pytest.raises(ValueError, match="needs more split workspace"):
        w.plan(decode.cu_seqlens_q, decode.seq_lens, decode.block_tables, num_splits=10**4)


def test_wrapper_rejects_bad_plans_and_runs(device):
    batch = paged_batch([40, 9], [5, 1], **GEOMETRY, dtype=F32, device=device)
    w = _wrapper(device, num_blocks=batch.k_cache.shape[0])
    with pytest.raises(RuntimeError, match="call plan"):
        w.run(batch.q, batch.k_cache, batch.v_cache)
    too_long = batch.seq_lens.clone()
    too_long[1] = 24 * 16 + 1
    with pytest.raises(ValueError, match="exceeds the block table's capacity"):
        w.plan(batch.cu_seqlens_q, too_long, batch.block_tables)
    bad_blocks = batch.block_tables.clone()
    bad_blocks[0, 0] = batch.k_cache.shape[0]
    with pytest.raises(ValueError, match=r"block_tables\[0, 0\]"):
        w.plan(batch.cu_seqlens_q, batch.seq_lens, bad_blocks)
    w.plan(batch.cu_seqlens_q, batch.seq_lens, batch.block_tables)
    with pytest.raises(ValueError, match="q has 5 tokens; the plan has 6"):
        w.run(batch.q[:5], batch.k_cache, batch.v_cache)
    with pytest.raises(ValueError, match="k_cache must be"):
        w.run(batch.q, batch.k_cache[:, :8], batch.v_cache[:, :8])
    assert infercore.registry.backends("attention.paged")
