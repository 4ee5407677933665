"""A serving step: prefill chunks over cached prefixes plus many decodes, three ways.

Lengths are tile-aligned (chunks a multiple of the prefill tile, prefixes a multiple of
the key step, decode contexts a whole number of blocks) and the block table has no
spare column: its rows are views whose next entry holds a wild block id. Every path
(one ``paged`` call, a prefill ``paged`` call plus ``decode``, the cuda_graph-layout
wrapper) must form K/V addresses from ``block_tables[b, : ceil(seq_lens[b] / block)]``
only.
"""

import pytest
import torch

import infercore
from infercore.ops.attention import PagedAttentionWrapper
from tests.helpers import assert_close, backend_params, poison
from tests.ops.attention.batches import paged_batch
from tests.ops.attention.test_paged import _reference

F16 = torch.float16
HEADS, KV_HEADS, HEAD_DIM, BLOCK = 8, 2, 32, 16  # GQA 4: 32-token prefill tiles in fp16
CHUNK, PREFIX, DECODE_CONTEXT = 64, 128, 96
NUM_PREFILL, NUM_DECODE = 3, 37
#: Block id no cache holds: an address formed from it is outside any allocation.
WILD_BLOCK = 2**30


def _step(device):
    seq = [PREFIX + CHUNK] * NUM_PREFILL + [DECODE_CONTEXT] * NUM_DECODE
    lq = [CHUNK] * NUM_PREFILL + [1] * NUM_DECODE
    batch = paged_batch(seq, lq, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                        block_size=BLOCK, dtype=F16, device=device, seed=11)
    # paged_batch leaves one spare column; fill it with a wild id and drop it from the view.
    batch.block_tables[:, -1] = WILD_BLOCK
    batch.block_tables = batch.block_tables[:, :-1]
    return batch


def _separate(batch, out, backend):
    n_pre = NUM_PREFILL * CHUNK
    bt, lens = batch.block_tables, batch.seq_lens
    infercore.ops.attention.paged(
        batch.q[:n_pre], batch.k_cache, batch.v_cache, bt[:NUM_PREFILL], lens[:NUM_PREFILL],
        batch.cu_seqlens_q[: NUM_PREFILL + 1], CHUNK, out=out[:n_pre], backend=backend)
    infercore.ops.attention.decode(
        batch.q[n_pre:], batch.k_cache, batch.v_cache, bt[NUM_PREFILL:], lens[NUM_PREFILL:],
        out=out[n_pre:], backend=backend)


def _planned(batch, out, backend):
    wrapper = PagedAttentionWrapper(
        HEADS, KV_HEADS, HEAD_DIM, BLOCK, max_batch=batch.seq_lens.shape[0],
        max_tokens=batch.q.shape[0], max_blocks_per_seq=batch.block_tables.shape[1], dtype=F16,
        device=batch.q.device, cuda_graph=True, backend=backend)
    wrapper.plan(batch.cu_seqlens_q.cpu(), batch.seq_lens.cpu(), batch.block_tables)
    wrapper.run(batch.q, batch.k_cache, batch.v_cache, out=out)


def _mixed(batch, out, backend):
    infercore.ops.attention.paged(batch.q, *batch.cache_args(), batch.cu_seqlens_q, CHUNK,
                                  out=out, backend=backend)


@pytest.mark.parametrize("backend", backend_params("attention.paged"))
@pytest.mark.parametrize("path", [_mixed, _separate, _planned], ids=["mixed", "separate",
                                                                      "planned"])
def test_aligned_mixed_step_without_spare_block_column(backend, path, device):
    batch = _step(device)
    out = poison(torch.empty_like(batch.q))
    path(batch, out, backend)
    assert_close(out, _reference(batch)[0], dtype=F16)
