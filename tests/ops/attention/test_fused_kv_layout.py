"""kv.write and attention.paged on caches laid out as vLLM lays them out.

One tensor per layer, logically ``[num_blocks, num_kv_heads, block_size, 2 * head_dim]``
(K in the first ``head_dim`` features of a slot, V in the rest), stored head-major or
slot-major; K and V are its views ``[num_blocks, block_size, num_kv_heads, head_dim]``, so
every stride differs from a dense cache's and K and V interleave in memory. Every backend
writes and reads them in place, and matches the reference run on dense copies.
"""

import pytest
import torch

import infercore
from infercore.ops.attention.reference import paged_attention_reference
from tests.helpers import assert_close, backend_params, poison
from tests.ops.attention.batches import odd_lengths

F32, F16 = torch.float32, torch.float16

# (heads, kv heads, head dim, block size, dtype, physical order of the fused tensor)
CASES = {
    "gqa2-d64-b16-head-major": (4, 2, 64, 16, F32, "head-major"),
    "gqa3-d96-b32-slot-major-fp16": (3, 1, 96, 32, F16, "slot-major"),
}


def fused_caches(num_blocks, block, kv_heads, dim, dtype, order, device):
    """K and V views of one NaN-filled fused tensor in vLLM's per-layer layout."""
    if order == "head-major":
        fused = torch.empty(num_blocks, kv_heads, block, 2 * dim, dtype=dtype, device=device)
    else:
        fused = torch.empty(num_blocks, block, kv_heads, 2 * dim, dtype=dtype,
                            device=device).transpose(1, 2)
    poison(fused)
    k_cache, v_cache = fused.transpose(1, 2).split(dim, dim=-1)
    assert not k_cache.is_contiguous() and k_cache.data_ptr() != v_cache.data_ptr()
    return k_cache, v_cache


def _batch(name, device):
    heads, kv_heads, dim, block, dtype, order = CASES[name]
    g = torch.Generator().manual_seed(dim + block)
    seq = odd_lengths(3, 1, 120, dim)
    lq = [seq[0], max(1, seq[1] // 2), 1]
    num_blocks = sum(-(-n // block) for n in seq) + 2
    order_ids = torch.randperm(num_blocks, generator=g)
    width = max(-(-n // block) for n in seq)
    tables = torch.zeros(len(seq), width, dtype=torch.int32)
    slots, start = [], 0
    for b, n in enumerate(seq):
        nb = -(-n // block)
        tables[b, :nb] = order_ids[start : start + nb].to(torch.int32)
        start += nb
        pos = torch.arange(n)
        slots.append(tables[b, pos // block].long() * block + pos % block)
    total = sum(seq)
    k = torch.randn(total, kv_heads, dim, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(total, kv_heads, dim, generator=g).to(device=device, dtype=dtype)
    q = torch.randn(sum(lq), heads, dim, generator=g).to(device=device, dtype=dtype)
    cu = torch.tensor([0, *lq]).cumsum(0).to(device=device, dtype=torch.int32)
    return dict(
        q=q, k=k, v=v, slots=torch.cat(slots).to(device), tables=tables.to(device),
        seq_lens=torch.tensor(seq, dtype=torch.int32, device=device), cu=cu,
        max_q=max(lq), shape=(num_blocks, block, kv_heads, dim, dtype, order),
    )


@pytest.mark.parametrize("backend", backend_params("kv.write", include_reference=True))
@pytest.mark.parametrize("name", list(CASES))
def test_kv_write_into_fused_views(backend, name, device):
    b = _batch(name, device)
    k_cache, v_cache = fused_caches(*b["shape"], device)
    infercore.ops.kv.write(b["k"], b["v"], k_cache, v_cache, b["slots"], backend=backend)
    num_blocks, block = b["shape"][:2]
    for cache, src in ((k_cache, b["k"]), (v_cache, b["v"])):
        flat = cache.reshape(num_blocks * block, *cache.shape[2:])
        assert torch.equal(flat[b["slots"]], src)
        unused = torch.ones(num_blocks * block, dtype=torch.bool, device=device)
        unused[b["slots"]] = False
        assert flat[unused].isnan().all(), "slots not named stay untouched"


@pytest.mark.parametrize("backend", backend_params("attention.paged"))
@pytest.mark.parametrize("name", list(CASES))
def test_paged_reads_fused_views(backend, name, device):
    b = _batch(name, device)
    dtype = b["shape"][4]
    k_cache, v_cache = fused_caches(*b["shape"], device)
    infercore.ops.kv.write(b["k"], b["v"], k_cache, v_cache, b["slots"], backend="reference")
    out = poison(torch.empty_like(b["q"]))
    got = infercore.ops.attention.paged(
        b["q"], k_cache, v_cache, b["tables"], b["seq_lens"], b["cu"], b["max_q"], out=out,
        backend=backend,
    )
    assert got is out
    ref, _ = paged_attention_reference(
        b["q"].double(), k_cache.contiguous(), v_cache.contiguous(), b["tables"], b["seq_lens"],
        b["cu"], causal=True,
    )
    assert_close(got, ref, dtype=dtype)
