"""The attention and KV-write ops as torch.library custom ops: fake impls and compile."""

import torch

import infercore
from infercore.ops.attention.reference import paged_attention_reference
from tests.helpers import assert_close
from tests.ops.attention.batches import paged_batch


def test_fake_implementations_on_meta_tensors():
    meta = dict(device="meta")
    q = torch.empty(7, 8, 64, **meta)
    cache = torch.empty(4, 16, 2, 64, **meta)
    table = torch.empty(2, 4, dtype=torch.int32, **meta)
    lens = torch.empty(2, dtype=torch.int32, **meta)
    cu = torch.empty(3, dtype=torch.int32, **meta)
    out, lse = torch.empty_like(q), torch.empty(7, 8, **meta)
    ops = torch.ops.infercore
    ops.attention_varlen(q, q[:, :2], q[:, :2], cu, cu, 4, 4, True, 0.1, None, None, out, lse,
                         True, "auto")
    ops.attention_paged(q, cache, cache, table, lens, cu, 4, True, 0.1, 7, 2.0, None, None, out,
                        None, True, "auto")
    ops.attention_decode(q[:2], cache, cache, table, lens, 0.1, None, None, None, None, 2,
                         out[:2], lse[:2], True, "auto")
    ops.kv_write(q[:, :2], q[:, :2], cache, cache, torch.empty(7, dtype=torch.int64, **meta),
                 None, None, True, "auto")


def test_write_then_attend_under_torch_compile(device):
    batch = paged_batch([23, 5], [23, 1], num_heads=4, num_kv_heads=2, head_dim=64,
                        block_size=16, dtype=torch.float32, device=device)
    new_k = torch.randn(1, 2, 64, device=device)
    slot = (batch.block_tables[1, 0].long() * 16 + 4).reshape(1)  # last token of sequence 1

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(q, k_cache, v_cache):
        infercore.ops.kv.write(new_k, new_k, k_cache, v_cache, slot)
        return infercore.ops.attention.paged(
            q, k_cache, v_cache, batch.block_tables, batch.seq_lens, batch.cu_seqlens_q, 23,
            skip_checks=True) * 2

    k_cache, v_cache = batch.k_cache.clone(), batch.v_cache.clone()
    got = step(batch.q, k_cache, v_cache)
    batch.k_cache[slot // 16, slot % 16] = new_k
    batch.v_cache[slot // 16, slot % 16] = new_k
    assert torch.equal(k_cache.nan_to_num(), batch.k_cache.nan_to_num())
    ref = paged_attention_reference(batch.q.double(), batch.k_cache, batch.v_cache,
                                    batch.block_tables, batch.seq_lens, batch.cu_seqlens_q)[0]
    assert_close(got, ref * 2, dtype=torch.float32)
