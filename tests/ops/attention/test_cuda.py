"""GPU tests: bf16, larger shapes, fp8 caches, CUDA-graph capture, torch.compile."""

import pytest
import torch

import infercore
from infercore.ops.attention import PagedAttentionWrapper
from infercore.ops.attention.checks import FP8_DTYPE
from infercore.ops.attention.reference import (
    paged_attention_reference,
    varlen_attention_reference,
)
from tests.helpers import assert_close, poison
from tests.ops.attention.batches import cu_seqlens, odd_lengths, paged_batch

pytestmark = pytest.mark.cuda

BF16 = torch.bfloat16
CUDA = torch.device("cuda")


@pytest.mark.parametrize(
    ("head_dim", "causal", "window", "softcap"),
    [(64, True, None, None), (80, True, None, None), (96, False, None, None),
     (128, True, 700, 30.0), (128, False, 300, None), (256, True, None, None)],
)
def test_varlen_bf16(head_dim, causal, window, softcap):
    torch.manual_seed(head_dim)
    lq, lk = [1000, 517, 1, 2049], [1000, 900, 77, 2049]
    q = torch.randn(sum(lq), 32, head_dim, device=CUDA, dtype=BF16)
    k = torch.randn(sum(lk), 8, head_dim, device=CUDA, dtype=BF16)
    v = torch.randn(sum(lk), 8, head_dim, device=CUDA, dtype=BF16)
    cq, ck = cu_seqlens(lq, CUDA), cu_seqlens(lk, CUDA)
    out = poison(torch.empty_like(q))
    got, lse = infercore.ops.attention.varlen(
        q, k, v, cq, ck, max(lq), max(lk), causal=causal, sliding_window=window,
        softcap=softcap, return_lse=True, out=out, backend="triton")
    ref, ref_lse = varlen_attention_reference(q, k, v, cq, ck, causal=causal,
                                              sliding_window=window, softcap=softcap)
    assert_close(got, ref, dtype=BF16)
    assert_close(lse, ref_lse, tol=1e-3)


@pytest.mark.parametrize("kv_dtype", [BF16, FP8_DTYPE], ids=["bf16", "fp8"])
@pytest.mark.parametrize("block_size", [16, 32])
def test_paged_mixed_bf16(kv_dtype, block_size):
    seq = [700, 1500, 513, 2001, *odd_lengths(40, 1, 3000, seed=7)]
    lq = [700, 512, 129, 33] + [1] * 40
    batch = paged_batch(seq, lq, num_heads=32, num_kv_heads=8, head_dim=128,
                        block_size=block_size, dtype=BF16, kv_dtype=kv_dtype, device=CUDA)
    out = poison(torch.empty_like(batch.q))
    infercore.ops.attention.paged(batch.q, *batch.cache_args(), batch.cu_seqlens_q,
                                  batch.max_seqlen_q, k_scale=batch.k_scale,
                                  v_scale=batch.v_scale, out=out, backend="triton")
    ref = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.block_tables,
                                    batch.seq_lens, batch.cu_seqlens_q, k_scale=batch.k_scale,
                                    v_scale=batch.v_scale)[0]
    assert_close(out, ref, dtype=BF16)


@pytest.mark.parametrize(("group", "kv_dtype"), [(1, BF16), (4, FP8_DTYPE), (8, BF16)], ids=str)
def test_decode_bf16_long_contexts(group, kv_dtype):
    seq = [9001, 1, 4097, 333, 12000]
    batch = paged_batch(seq, [1] * len(seq), num_heads=8 * group, num_kv_heads=8,
                        head_dim=128, block_size=16, dtype=BF16, kv_dtype=kv_dtype, device=CUDA)
    out = poison(torch.empty_like(batch.q))
    infercore.ops.attention.decode(batch.q, *batch.cache_args(), k_scale=batch.k_scale,
                                   v_scale=batch.v_scale, out=out, backend="triton")
    ref = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.block_tables,
                                    batch.seq_lens, batch.cu_seqlens_q, k_scale=batch.k_scale,
                                    v_scale=batch.v_scale)[0]
    assert_close(out, ref, dtype=BF16)


def _graph_batch(seq, lq, seed):
    return paged_batch(seq, lq, num_heads=32, num_kv_heads=8, head_dim=128, block_size=16,
                       dtype=BF16, device=CUDA, seed=seed)


@pytest.mark.parametrize("mixed", [True, False], ids=["mixed", "decode"])
def test_plan_run_captured_in_cuda_graph(mixed):
    first = _graph_batch([900, 77, 4001], [300 if mixed else 1, 1, 1], seed=1)
    later = _graph_batch([3000, 65, 1200, 9], [129 if mixed else 1, 1, 1, 1], seed=2)
    num_blocks = max(first.k_cache.shape[0], later.k_cache.shape[0])
    w = PagedAttentionWrapper(32, 8, 128, 16, max_batch=4, max_tokens=512,
                              max_blocks_per_seq=256, dtype=BF16, device=CUDA, cuda_graph=True,
                              num_blocks=num_blocks)
    # Fixed buffers: queries, caches and outputs live at fixed addresses across replays.
    q = torch.zeros(512, 32, 128, device=CUDA, dtype=BF16)
    caches = [torch.zeros(num_blocks, 16, 8, 128, device=CUDA, dtype=BF16) for _ in range(4)]
    outs = [torch.empty(512, 32, 128, device=CUDA, dtype=BF16) for _ in range(2)]

    def load(batch):
        n = batch.q.shape[0]
        q[:n] = batch.q
        for layer in range(2):
            for c, src in zip(caches[2 * layer : 2 * layer + 2], (batch.k_cache, batch.v_cache),
                              strict=True):
                c[: src.shape[0]] = src * (1.0 - 0.5 * layer)
        w.plan(batch.cu_seqlens_q.cpu(), batch.seq_lens.cpu(), batch.block_tables.cpu())

    def step():
        for layer in range(2):
            w.run(q, caches[2 * layer], caches[2 * layer + 1], out=outs[layer],
                  sliding_window=None if layer == 0 else 1000, skip_checks=True)

    load(first)
    step()  # compiles the kernels outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for batch in (first, later):
        load(batch)
        for o in outs:
            poison(o)
        graph.replay()
        torch.cuda.synchronize()
        n = batch.q.shape[0]
        for layer in range(2):
            ref = paged_attention_reference(
                batch.q, batch.k_cache * (1.0 - 0.5 * layer), batch.v_cache * (1.0 - 0.5 * layer),
                batch.block_tables, batch.seq_lens, batch.cu_seqlens_q,
                sliding_window=None if layer == 0 else 1000)[0]
            assert_close(outs[layer][:n], ref, dtype=BF16)


def test_direct_decode_captured_in_cuda_graph():
    batch = _graph_batch([5000, 17, 700], [1, 1, 1], seed=3)
    out = torch.empty_like(batch.q)
    lens = batch.seq_lens

    def call():
        infercore.ops.attention.decode(batch.q, *batch.cache_args(), out=out, skip_checks=True)

    call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    for new_lens in ([5000, 17, 700], [4000, 3, 699]):
        lens.copy_(torch.tensor(new_lens, dtype=torch.int32))
        poison(out)
        graph.replay()
        ref = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache,
                                        batch.block_tables, lens, batch.cu_seqlens_q)[0]
        assert_close(out, ref, dtype=BF16)


def test_torch_compile_inductor_fullgraph():
    batch = _graph_batch([333, 45], [100, 1], seed=4)

    @torch.compile(fullgraph=True)
    def f(q):
        o = infercore.ops.attention.paged(q * 1.5, *batch.cache_args(), batch.cu_seqlens_q, 100,
                                          skip_checks=True)
        return o.float().sum(-1)

    ref = paged_attention_reference(batch.q * 1.5, batch.k_cache, batch.v_cache,
                                    batch.block_tables, batch.seq_lens, batch.cu_seqlens_q)[0]
    assert_close(f(batch.q), ref.sum(-1), tol=2e-2)
