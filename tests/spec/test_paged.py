"""The paged-cache model adapter: cached logits equal a full recompute through rollbacks,
and the draft-model proposer over it keeps greedy output exact."""

from __future__ import annotations

import pytest
import torch

import infercore.ops.attention as attention
import infercore.ops.kv as kv_ops
from infercore.cache import KVCacheConfig, KVCacheLayout, KVCacheManager
from infercore.spec import (
    AcceptanceStats,
    CallableModel,
    DraftModelProposer,
    speculative_generate,
)
from infercore.spec.paged import PagedBatch, PagedModel
from tests.helpers import assert_close

V, D, H, HKV, HD, MAXPOS = 23, 16, 4, 2, 32, 128


class ToyAttentionLM:
    """One attention layer (GQA, learned positions) with a dense and a paged forward."""

    def __init__(self, seed: int, device: torch.device | str = "cpu",
                 backend: str = "reference") -> None:
        g = torch.Generator().manual_seed(seed)

        def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
            return (torch.randn(*shape, generator=g) * scale).to(device)

        self.emb, self.pos = r(V, D), r(MAXPOS, D)
        self.wq = r(D, H * HD, scale=D**-0.5)
        self.wk, self.wv = r(D, HKV * HD, scale=D**-0.5), r(D, HKV * HD, scale=D**-0.5)
        self.wo, self.head = r(H * HD, D, scale=(H * HD) ** -0.5), r(D, V, scale=4 * D**-0.5)
        self.backend = backend

    def _qkv(self, ids, positions):
        x = self.emb[ids] + self.pos[positions]
        shape = x.shape[:-1]
        return (x, (x @ self.wq).view(*shape, H, HD), (x @ self.wk).view(*shape, HKV, HD),
                (x @ self.wv).view(*shape, HKV, HD))

    def _out(self, x, o):
        return (x + o.flatten(-2) @ self.wo) @ self.head

    def dense(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x, q, k, v = self._qkv(ids, positions)
        k, v = (t.repeat_interleave(H // HKV, dim=2).transpose(1, 2) for t in (k, v))
        o = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k, v,
                                                             is_causal=True)
        return self._out(x, o.transpose(1, 2))

    def paged(self, ids: torch.Tensor, positions: torch.Tensor, b: PagedBatch) -> torch.Tensor:
        x, q, k, v = self._qkv(ids, positions)
        ((k_cache, v_cache),) = b.kv_caches
        kv_ops.write(k, v, k_cache, v_cache, b.slot_mapping, backend=self.backend)
        o = attention.paged(q, k_cache, v_cache, b.block_tables, b.seq_lens, b.cu_seqlens_q,
                            b.max_seqlen_q, backend=self.backend)
        return self._out(x, o)


def _manager(device: torch.device | str = "cpu") -> KVCacheManager:
    layout = KVCacheLayout(num_layers=1, num_kv_heads=HKV, head_dim=HD, dtype=torch.float32)
    return KVCacheManager(KVCacheConfig(num_blocks=40, block_size=4), layout, device=device)


def _held_blocks_match_lengths(model: PagedModel) -> None:
    manager = model.manager
    held = sum(len(model.cache.block_table(key)) for key in model._tokens)
    assert manager.allocator.num_used_blocks == held
    for key in model._tokens:
        n = model.cache.num_tokens(key)
        assert len(model.cache.block_table(key)) == -(-n // manager.block_size)


def test_paged_logits_match_full_forward_through_rollbacks(device):
    # On CUDA the default backends run (Triton dot products may use TF32: fp16 bound).
    cuda = device.type == "cuda"
    lm = ToyAttentionLM(0, device, "auto" if cuda else "reference")
    model = PagedModel(lm.paged, V, _manager(device))
    dense = CallableModel(lm.dense, V, device=device)
    tol_dtype = torch.float16 if cuda else torch.float32
    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(0, V, (n,), generator=g).tolist()
    rows = [rand(9), rand(3), rand(14)]
    steps = [
        (rows, [1, 2, 1]),
        ([r + rand(4) for r in rows], [5, 5, 5]),
        ([rows[0] + rand(2), rows[1] + rand(6), rows[2] + rand(1)], [3, 1, 2]),
        ([rows[0][:5], rows[1] + rand(3), rows[2] + rand(2)], [1, 4, 3]),
    ]
    for rows_now, ns in steps:
        out = model.logits(rows_now, ns, keys=["a", "b", "c"])
        ref = dense.logits(rows_now, ns)
        assert out.shape == (3, max(ns), V) and out.dtype == torch.float32
        for b, n in enumerate(ns):
            assert_close(out[b, :n], ref[b, :n], dtype=tol_dtype)
        _held_blocks_match_lengths(model)
    model.logits([rows[1]], 1, keys=["b"])  # "a" and "c" finished: their blocks are freed
    assert model.manager.allocator.num_used_blocks == 1
    model.reset()
    assert model.manager.allocator.num_used_blocks == 0


def test_draft_model_over_the_paged_cache_keeps_greedy_output():
    target, draft = ToyAttentionLM(0), ToyAttentionLM(0)
    draft.wq = draft.wq + 0.3 * torch.randn_like(draft.wq)  # a close but imperfect draft
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5], [1, 1]]
    plain = speculative_generate(CallableModel(target.dense, V), prompts, 20)
    stats = AcceptanceStats()
    proposer = DraftModelProposer(PagedModel(draft.paged, V, _manager()), target_vocab_size=V)
    target_model = PagedModel(target.paged, V, _manager())
    spec = speculative_generate(target_model, prompts, 20, proposer=proposer, k=3, stats=stats)
    assert spec == plain
    assert stats.total.num_accepted_tokens > 0 and stats.total.num_rejections > 0
    _held_blocks_match_lengths(target_model)
    _held_blocks_match_lengths(proposer.model)


def test_bad_paged_forward_output_and_keys_are_errors():
    model = PagedModel(lambda ids, pos, b: torch.zeros(ids.shape[0], V + 1), V, _manager())
    with pytest.raises(ValueError, match="the paged forward returned logits of shape"):
        model.logits([[1, 2]])
    with pytest.raises(ValueError, match="distinct ids"):
        model.logits([[1], [2]], keys=["x", "x"])
