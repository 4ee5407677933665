"""transformers integration: the "infercore" attention implementation and apply_infercore.

Most tests force the reference backends (the Triton interpreter is slow); the
``default dispatch`` tests run whatever the registry picks (Triton kernels in the
interpreter on CPU).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from infercore import ops
from infercore.registry import use_backend
from tests.helpers import assert_close
from tests.integrations.hf_models import (
    ARCHS,
    left_padded_batch,
    padded_batch,
    tiny_model,
    transformers,
)

hf = pytest.importorskip("infercore.integrations.hf")

REFERENCE = {"attention.varlen": "reference", "rope": "reference", "norm.rms": "reference",
             "act.silu_mul": "reference"}


@pytest.fixture
def reference_backends():
    with use_backend(REFERENCE):
        yield


@pytest.fixture(autouse=True)
def registered():
    hf.register()


def _logits(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def _generate(model, ids, mask, new_tokens: int = 8) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=0)


def _assert_close_where(out, ref, mask) -> None:
    """Close at real tokens; finite everywhere (padded queries give zeros, not NaN)."""
    assert torch.isfinite(out).all(), "NaN/Inf in the logits of padded positions"
    valid = mask.bool()
    assert_close(out[valid], ref[valid])


class _Spy:
    """Counts calls of ``module.name`` while passing them through."""

    def __init__(self, monkeypatch, module, name: str):
        self.calls: list[tuple] = []
        original = getattr(module, name)

        def spy(*args, **kwargs):
            self.calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)


# -- attn_implementation="infercore" ------------------------------------------------------


@pytest.mark.usefixtures("reference_backends")
@pytest.mark.parametrize(("arch", "peer"), [(arch, "sdpa") for arch in ARCHS]
                         + [("mistral", "eager")])
def test_attention_matches_peer_with_padding(arch, peer, monkeypatch):
    model = tiny_model(arch, attn_implementation=peer)
    ids, mask = padded_batch()
    ref = _logits(model, ids, mask)
    model.set_attn_implementation("infercore")
    varlen = _Spy(monkeypatch, ops.attention, "varlen")
    out = _logits(model, ids, mask)
    _assert_close_where(out, ref, mask)
    assert len(varlen.calls) == model.config.num_hidden_layers
    q, k = varlen.calls[0][:2]
    assert (q.shape[1], k.shape[1]) == (4, 2), "GQA K/V must keep their own head count"
    assert q.shape[0] == int(mask.sum()), "padding must be dropped from the packed queries"


@pytest.mark.usefixtures("reference_backends")
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_attention_generate_with_cache_matches_sdpa(arch):
    model = tiny_model(arch)
    ids, mask = left_padded_batch()
    ref = _generate(model, ids, mask)
    model.set_attn_implementation("infercore")
    assert torch.equal(_generate(model, ids, mask), ref)


@pytest.mark.usefixtures("reference_backends")
def test_attention_decode_step_matches_full_forward():
    """One cached decode step (q len 1, k len past + 1), with and without padding."""
    model = tiny_model("llama", attn_implementation="infercore")
    ids, mask = padded_batch()
    ids, mask = ids[[0, 2, 3]], mask[[0, 2, 3]]  # left-padded and unpadded rows
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        prefix = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                       position_ids=positions[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], attention_mask=mask,
                     past_key_values=prefix.past_key_values,
                     position_ids=positions[:, -1:]).logits
    assert_close(step[:, 0], full[:, -1])


@pytest.mark.usefixtures("reference_backends")
def test_attention_function_zeros_at_padded_queries():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 5, 32)
    k, v = torch.randn(2, 2, 5, 32), torch.randn(2, 2, 5, 32)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    module = torch.nn.Module()
    out, weights = hf.attention_forward(module, q, k, v, hf.padding_mask(attention_mask=mask),
                                        scaling=0.3)
    assert weights is None and out.shape == (2, 5, 4, 32)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    for row in range(2):
        real = mask[row]
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[row][:, real], k[row][:, real], v[row][:, real], is_causal=True, scale=0.3,
            enable_gqa=True)
        assert_close(out[row][real], ref.transpose(0, 1))


def test_padding_mask_is_none_without_padding():
    assert hf.padding_mask(attention_mask=None) is None
    assert hf.padding_mask(attention_mask=torch.ones(2, 7, dtype=torch.bool)) is None


def test_from_pretrained_with_infercore_attention(tmp_path):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    ref = _logits(model, ids, mask)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="infercore").eval()
    assert loaded.config._attn_implementation == "infercore"
    with use_backend(REFERENCE):
        _assert_close_where(_logits(loaded, ids, mask), ref, mask)


def test_attention_default_dispatch():
    model = tiny_model("mistral")
    ids, mask = padded_batch()
    ref = _logits(model, ids, mask)
    model.set_attn_implementation("infercore")
    _assert_close_where(_logits(model, ids, mask), ref, mask)


# -- apply_infercore -------------------------------------------------------------------------


@pytest.mark.usefixtures("reference_backends")
@pytest.mark.parametrize("arch", ARCHS)
def test_apply_infercore_logits_generate_and_revert(arch):
    model = tiny_model(arch)
    ids, mask = padded_batch()
    gen_ids, gen_mask = left_padded_batch()
    ref_logits, ref_tokens = _logits(model, ids, mask), _generate(model, gen_ids, gen_mask)
    patch = hf.apply_infercore(model)
    assert model.config._attn_implementation == "infercore"
    _assert_close_where(_logits(model, ids, mask), ref_logits, mask)
    assert torch.equal(_generate(model, gen_ids, gen_mask), ref_tokens)
    patch.revert()
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(_logits(model, ids, mask), ref_logits)
    assert torch.equal(_generate(model, gen_ids, gen_mask), ref_tokens)


def test_apply_infercore_default_dispatch():
    model = tiny_model("qwen3")
    ids, mask = padded_batch()
    ref = _logits(model, ids, mask)
    hf.apply_infercore(model)
    _assert_close_where(_logits(model, ids, mask), ref, mask)
    hf.revert_infercore(model)
    assert torch.equal(_logits(model, ids, mask), ref)


OPS = {"rms_norm": (ops, "rms_norm"), "rotary": (ops, "rotary"),
       "mlp": (ops, "silu_and_mul"), "attention": (ops.attention, "varlen")}


@pytest.mark.usefixtures("reference_backends")
@pytest.mark.parametrize(("arch", "enabled"), [
    ("qwen3", tuple(OPS)), ("llama", tuple(OPS)), ("llama", ("rms_norm",)),
    ("llama", ("rotary", "mlp")), ("qwen3", ("attention",)),
], ids=lambda v: "+".join(v) if isinstance(v, tuple) else v)
def test_apply_infercore_runs_the_enabled_ops(arch, enabled, monkeypatch):
    model = tiny_model(arch)
    ids, mask = padded_batch()
    ref = _logits(model, ids, mask)
    spies = {flag: _Spy(monkeypatch, *where) for flag, where in OPS.items()}
    hf.apply_infercore(model, **{flag: flag in enabled for flag in OPS})
    _assert_close_where(_logits(model, ids, mask), ref, mask)
    layers = model.config.num_hidden_layers
    norms = 2 * layers + 1 + (2 * layers if arch == "qwen3" else 0)
    expected = {"rms_norm": norms, "rotary": layers, "mlp": layers, "attention": layers}
    for flag, spy in spies.items():
        assert len(spy.calls) == (expected[flag] if flag in enabled else 0), flag
    hf.revert_infercore(model)
    for spy in spies.values():
        spy.calls.clear()
    assert torch.equal(_logits(model, ids, mask), ref)
    assert all(not spy.calls for spy in spies.values())


@pytest.mark.usefixtures("reference_backends")
def test_apply_infercore_fuses_gate_up_and_revert_unshares():
    model = tiny_model("llama")
    mlp = model.model.layers[0].mlp
    gate, up = mlp.gate_proj.weight.detach().clone(), mlp.up_proj.weight.detach().clone()
    patch = hf.apply_infercore(model, rms_norm=False, rotary=False, attention=False)
    assert len(patch.fused_mlps) == model.config.num_hidden_layers
    assert isinstance(mlp.gate_proj, torch.nn.Linear)
    assert torch.equal(mlp.gate_proj.weight, gate) and torch.equal(mlp.up_proj.weight, up)
    assert mlp.gate_proj.weight.untyped_storage().data_ptr() == \
        mlp.up_proj.weight.untyped_storage().data_ptr()
    patch.revert()
    assert mlp.gate_proj.weight.untyped_storage().data_ptr() != \
        mlp.up_proj.weight.untyped_storage().data_ptr()
    assert torch.equal(mlp.gate_proj.weight, gate) and torch.equal(mlp.up_proj.weight, up)


@pytest.mark.usefixtures("reference_backends")
def test_mlp_forward_without_fused_storage_matches():
    """A model whose gate/up weights were replaced after patching (or moved) still
    computes the right MLP, through the concatenating path."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    ref = _logits(model, ids, mask)
    hf.apply_infercore(model, rms_norm=False, rotary=False, attention=False)
    for layer in model.model.layers:
        proj = layer.mlp.up_proj
        proj.weight = torch.nn.Parameter(proj.weight.detach().clone())
    _assert_close_where(_logits(model, ids, mask), ref, mask)


def test_apply_infercore_unknown_architecture():
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)
    model = transformers.GPT2LMHeadModel(config)
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*'gpt2'") as info:
        hf.apply_infercore(model)
    for name in hf.SUPPORTED_MODEL_TYPES:
        assert repr(name) in str(info.value)


def test_apply_infercore_twice_and_revert_unpatched():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="has no infercore patch"):
        hf.revert_infercore(model)
    patch = hf.apply_infercore(model, attention=False)
    with pytest.raises(ValueError, match="already applied"):
        hf.apply_infercore(model)
    patch.revert()
    with pytest.raises(ValueError, match="already reverted"):
        patch.revert()


def test_apply_infercore_rejects_non_silu_mlp():
    model = tiny_model("llama", hidden_act="gelu")
    with pytest.raises(ValueError, match=r"hidden_act 'silu'.*'gelu'"):
        hf.apply_infercore(model)
    hf.apply_infercore(model, mlp=False)


def test_import_does_not_import_transformers():
    code = ("import sys, infercore, infercore.integrations.hf; "
            "sys.exit('transformers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- GPU ----------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ARCHS)
def test_apply_infercore_cuda_bf16(arch):
    """In bf16, the patched model is about as close to the float32 model as HF's own bf16
    run is (the two round differently, so they are compared to the exact model, not to
    each other)."""
    model = tiny_model(arch, hidden_size=256, intermediate_size=512, head_dim=128,
                       num_attention_heads=8, num_key_value_heads=2).to("cuda")
    ids, mask = (t.cuda() for t in padded_batch())
    valid = mask.bool()
    exact = _logits(model, ids, mask).float()[valid]
    model = model.to(torch.bfloat16)
    ref = _logits(model, ids, mask).float()[valid]
    hf.apply_infercore(model)
    out = _logits(model, ids, mask).float()[valid]
    assert torch.isfinite(out).all()
    hf_err = ((ref - exact).norm() / exact.norm()).item()
    ours = ((out - exact).norm() / exact.norm()).item()
    assert ours <= 1.5 * hf_err + 1e-3, (ours, hf_err)
