"""Tensor-parallel checks run inside every rank (see dist_worker.py).

Every rank builds the same full modules (seeded, then broadcast from rank 0), computes
the unsharded reference, shards, and compares its own output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infercore.comm import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    ParallelLMHead,
    QKVParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    apply_tensor_parallel,
)
from tests.helpers import assert_close

from .checks_collectives import make

#: Whole-model comparisons: float32 to the per-dtype bound, bfloat16 looser because the
#: sharded sums round in a different order in every layer.
MODEL_TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def _synced(ctx, module: nn.Module) -> nn.Module:
    module = module.to(ctx.device)
    for p in module.parameters():
        ctx.comm.broadcast(p.data, 0)
    return module


def _linear(ctx, in_f: int, out_f: int, bias: bool = True) -> nn.Linear:
    torch.manual_seed(in_f * 131 + out_f)
    return _synced(ctx, nn.Linear(in_f, out_f, bias=bias))


def check_tp_linear_layers(ctx):
    comm, w, r = ctx.comm, ctx.world, ctx.rank
    x = make(0, (2, 3, 7), torch.float32, 900, ctx.device)
    full = _linear(ctx, 7, 3 * w)
    with torch.no_grad():
        ref = full(x)
        gathered = ColumnParallelLinear.from_linear(full, comm, gather_output=True)(x)
        local = ColumnParallelLinear.from_linear(full, comm)(x)
    assert_close(gathered, ref)
    assert_close(local, ref[..., 3 * r : 3 * r + 3])

    full_row = _linear(ctx, 5 * w, 7)
    xr = make(0, (4, 5 * w), torch.float32, 901, ctx.device)
    with torch.no_grad():
        ref = full_row(xr)
        split_here = RowParallelLinear.from_linear(full_row, comm, input_is_parallel=False)(xr)
        parallel_in = RowParallelLinear.from_linear(full_row, comm)(xr[..., 5 * r : 5 * r + 5])
    assert_close(split_here, ref)
    assert_close(parallel_in, ref)

    size = 2 * w
    fused = _linear(ctx, 7, 2 * size)
    with torch.no_grad():
        ref = fused(x)
        out = MergedColumnParallelLinear.from_linear(fused, comm, output_sizes=[size, size])(x)
    gate, up = ref[..., :size], ref[..., size:]
    assert_close(out, torch.cat([gate[..., 2 * r : 2 * r + 2], up[..., 2 * r : 2 * r + 2]], -1))

    fresh = [ColumnParallelLinear(7, 3 * w, comm), RowParallelLinear(5 * w, 7, comm),
             MergedColumnParallelLinear(7, [size, size], comm, bias=False)]
    assert [tuple(m.weight.shape) for m in fresh] == [(3, 7), (7, 5), (4, 7)]


def check_tp_qkv_heads(ctx):
    comm, w, r = ctx.comm, ctx.world, ctx.rank
    head_dim, heads = 3, 2 * w
    x = make(0, (5, 11), torch.float32, 902, ctx.device)
    for kv_heads in sorted({w, 1, 2} - ({2} if w % 2 else set())):
        fused = _linear(ctx, 11, (heads + 2 * kv_heads) * head_dim, bias=True)
        layer = QKVParallelLinear.from_linear(fused, comm, head_dim=head_dim, num_heads=heads,
                                              num_kv_heads=kv_heads)
        with torch.no_grad():
            ref, out = fused(x), layer(x)
        q, k, v = ref.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
        first_q = r * heads // w
        my_q = list(range(first_q, first_q + heads // w))
        # The kv heads of this rank's query heads (their GQA groups), each kept once.
        my_kv = sorted({h // (heads // kv_heads) for h in my_q})

        def rows(t, hs):
            return torch.cat([t[..., h * head_dim : (h + 1) * head_dim] for h in hs], -1)

        assert_close(out, torch.cat([rows(q, my_q), rows(k, my_kv), rows(v, my_kv)], -1))
        assert layer.num_local_kv_heads == len(my_kv)
    if w in (2, 4):
        try:
            QKVParallelLinear(8, 2, 4, 3, comm)
        except ValueError as err:
            assert "num_key_value_heads = 3" in str(err), str(err)
        else:
            raise AssertionError(f"kv heads = 3 over tp = {w} was accepted")


def check_tp_vocab(ctx):
    comm = ctx.comm
    torch.manual_seed(5)
    emb = _synced(ctx, nn.Embedding(101, 6))
    head = _linear(ctx, 6, 101, bias=True)
    ids = torch.tensor([[0, 100, 37, 50, 51], [26, 25, 77, 3, 99]], device=ctx.device)
    h = make(0, (2, 5, 6), torch.float32, 903, ctx.device)
    with torch.no_grad():
        vpe = VocabParallelEmbedding.from_embedding(emb, comm)
        assert torch.equal(vpe(ids), emb(ids))
        assert_close(ParallelLMHead.from_linear(head, comm)(h), head(h))
        tied = nn.Linear(6, 101, bias=False).to(ctx.device)
        tied.weight = emb.weight
        plm = ParallelLMHead.from_linear(tied, comm, tie_to=vpe)
        assert plm.weight is vpe.weight
        assert_close(plm(h), F.linear(h, emb.weight))
    assert VocabParallelEmbedding(101, 6, comm).weight.shape[0] == -(-101 // ctx.world)


def _tiny_llama(ctx, *, tie: bool, attn: str, dtype: torch.dtype, kv_heads: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    if ctx.large:  # Llama-shaped (GPU): 16 heads, 4 (or 1) kv heads, head_dim 64, 4 layers
        sizes = dict(hidden_size=1024, num_attention_heads=16,
                     num_key_value_heads=4 if kv_heads == 2 else kv_heads,
                     intermediate_size=2816, vocab_size=32003, num_hidden_layers=4)
    else:
        sizes = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=kv_heads,
                     intermediate_size=96, vocab_size=101, num_hidden_layers=2)
    config = LlamaConfig(**sizes, max_position_embeddings=128, tie_word_embeddings=tie,
                         bos_token_id=1, eos_token_id=None, pad_token_id=0,
                         attn_implementation=attn)
    torch.manual_seed(0)
    return _synced(ctx, LlamaForCausalLM(config).to(dtype).eval()), config.vocab_size


def _tiny_phi3(ctx, dtype: torch.dtype):
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=96, vocab_size=101, num_hidden_layers=2,
                        max_position_embeddings=128, bos_token_id=1, eos_token_id=None,
                        pad_token_id=0)
    torch.manual_seed(0)
    return _synced(ctx, Phi3ForCausalLM(config).to(dtype).eval()), config.vocab_size


def _compare_sharded(ctx, model, vocab: int, dtype: torch.dtype, generate: bool) -> None:
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (2, 9 if not ctx.large else 33), generator=g).to(ctx.device)
    with torch.no_grad():
        ref = model(ids).logits.float()
        ref_tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                    do_sample=False) if generate else None
    params_before = sum(p.numel() for p in model.parameters())
    apply_tensor_parallel(model, ctx.comm)
    info = model.infercore_tensor_parallel
    assert (info.world_size, info.rank) == (ctx.world, ctx.rank)
    if ctx.world > 1:
        assert sum(p.numel() for p in model.parameters()) < params_before
        assert model.config.num_attention_heads == info.num_attention_heads // ctx.world
    with torch.no_grad():
        out = model(ids).logits.float()
        tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                do_sample=False) if generate else None
    assert out.shape == ref.shape
    assert_close(out, ref, tol=MODEL_TOL[dtype])
    if generate:
        assert torch.equal(tokens, ref_tokens), f"greedy tokens {tokens} != {ref_tokens}"


def _model_dtypes(ctx) -> list[torch.dtype]:
    return [torch.float32, torch.bfloat16] if ctx.device.type == "cuda" else [torch.float32]


def check_tp_llama_forward(ctx):
    for dtype in _model_dtypes(ctx):
        model, vocab = _tiny_llama(ctx, tie=False, attn="sdpa", dtype=dtype)
        _compare_sharded(ctx, model, vocab, dtype, generate=not ctx.large)
        attn = model.model.layers[0].self_attn
        assert isinstance(attn.o_proj, RowParallelLinear)
        assert isinstance(model.lm_head, ParallelLMHead)
        kv_local = max(model.infercore_tensor_parallel.num_key_value_heads // ctx.world, 1)
        if ctx.world > 1:
            assert attn.k_proj.weight.shape[0] == kv_local * attn.head_dim


def check_tp_llama_one_kv_head_tied_eager(ctx):
    """One kv head (replicated on every rank), tied embeddings, eager attention."""
    model, vocab = _tiny_llama(ctx, tie=True, attn="eager", dtype=torch.float32, kv_heads=1)
    _compare_sharded(ctx, model, vocab, torch.float32, generate=not ctx.large)
    if ctx.world > 1:
        assert model.lm_head.weight is model.model.embed_tokens.weight
        attn = model.model.layers[0].self_attn
        info = model.infercore_tensor_parallel
        assert attn.num_key_value_groups == info.num_attention_heads // ctx.world
        assert info.kv_heads_replicated


def check_tp_phi3_fused(ctx):
    model, vocab = _tiny_phi3(ctx, torch.float32)
    _compare_sharded(ctx, model, vocab, torch.float32, generate=False)
    if ctx.world > 1:
        assert isinstance(model.model.layers[0].self_attn.qkv_proj, QKVParallelLinear)


LAYER_CHECKS = {
    "tp_linear_layers": check_tp_linear_layers,
    "tp_qkv_heads": check_tp_qkv_heads,
    "tp_vocab": check_tp_vocab,
}
#: These import transformers (seconds per process).
MODEL_CHECKS = {
    "tp_llama_forward": check_tp_llama_forward,
    "tp_llama_one_kv_head_tied_eager": check_tp_llama_one_kv_head_tied_eager,
    "tp_phi3_fused": check_tp_phi3_fused,
}
