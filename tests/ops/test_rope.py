"""rotary: every registered backend against the reference, in place on strided q/k."""

import pytest
import torch

import infercore
from infercore.ops.rope import build_cos_sin_cache
from infercore.ops.rope.reference import rotary_reference
from tests.helpers import assert_close, backend_params

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (tokens, heads, kv_heads, head_dim, rotary_dim): GQA 1, 3, 5; partial rotary; odd halves.
CASES = [(1, 1, 1, 16, 16), (7, 5, 1, 64, 64), (13, 6, 2, 80, 40), (5, 12, 4, 96, 32),
         (9, 3, 3, 8, 6), (4, 32, 8, 128, 128)]
MAX_POSITION = 300


def _qkv(tokens, heads, kv_heads, head_dim, dtype, device, seed):
    """A fused qkv projection output and q/k as strided views into it."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    qkv = (torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=g) * 2 + 0.1)
    qkv = qkv.to(device, dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    positions = torch.randint(0, MAX_POSITION, (tokens,), generator=g).to(device)
    return qkv, q, k, positions


def _expected(q, k, positions, cache, is_neox):
    q64, k64 = q.double(), k.double()
    rotary_reference(q64, k64, positions, cache.double(), is_neox)
    return q64, k64


@pytest.mark.parametrize("backend", backend_params("rope"))
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_rotary_matches_reference(backend, is_neox, dtype, case, device):
    tokens, heads, kv_heads, head_dim, rotary_dim = case
    qkv, q, k, positions = _qkv(tokens, heads, kv_heads, head_dim, dtype, device, sum(case))
    cache = build_cos_sin_cache(rotary_dim, MAX_POSITION, 10000.0, device=device)
    before = qkv.clone()
    want_q, want_k = _expected(q, k, positions, cache, is_neox)
    out_q, out_k = infercore.ops.rotary(q, k, positions, cache, is_neox=is_neox,
                                        rotary_dim=rotary_dim, backend=backend)
    assert out_q is q and out_k is k
    assert_close(q, want_q, dtype=dtype)
    assert_close(k, want_k, dtype=dtype)
    # The rotation happened inside qkv: the same storage, nothing else touched.
    q_end, k_end = heads * head_dim, (heads + kv_heads) * head_dim
    assert_close(qkv[:, :q_end].view_as(q), want_q, dtype=dtype)
    assert torch.equal(qkv[:, k_end:], before[:, k_end:])  # v
    for t, start, n in ((q, 0, heads), (k, q_end, kv_heads)):
        tail = before[:, start : start + n * head_dim].view(tokens, n, head_dim)[..., rotary_dim:]
        assert torch.equal(t[..., rotary_dim:], tail)  # partial rotary leaves the rest


@pytest.mark.parametrize("backend", backend_params("rope"))
def test_rotary_accepts_int32_positions_and_a_half_precision_cache(backend, device):
    _, q, k, positions = _qkv(6, 4, 2, 32, torch.float32, device, seed=1)
    cache32 = build_cos_sin_cache(32, MAX_POSITION, device=device)
    cache16 = cache32.half()
    want_q, want_k = _expected(q, k, positions, cache16, True)
    infercore.ops.rotary(q, k, positions.int(), cache16, backend=backend)
    assert_close(q, want_q, dtype=torch.float32)
    assert_close(k, want_k, dtype=torch.float32)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_reference_is_a_complex_rotation(is_neox):
    """The rotation equals multiplying feature pairs, as complex numbers, by e^(i p theta)."""
    tokens, heads, head_dim, rotary_dim = 5, 3, 24, 16
    _, q, k, positions = _qkv(tokens, heads, heads, head_dim, torch.float64, "cpu", seed=4)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    table = torch.arange(MAX_POSITION, dtype=torch.float64)[:, None] * inv_freq
    cache = torch.cat([table.cos(), table.sin()], dim=-1)
    angles = table[positions]
    want = []
    for t in (q, k):
        rot = t[..., :rotary_dim]
        pairs = (torch.stack([rot[..., : rotary_dim // 2], rot[..., rotary_dim // 2 :]], -1)
                 if is_neox else rot.unflatten(-1, (rotary_dim // 2, 2)))
        z = torch.view_as_complex(pairs.contiguous()) * torch.polar(torch.ones_like(angles),
                                                                    angles)[:, None, :]
        r = torch.view_as_real(z)
        rotated = torch.cat([r[..., 0], r[..., 1]], -1) if is_neox else r.flatten(-2)
        want.append(torch.cat([rotated, t[..., rotary_dim:]], -1))
    rotary_reference(q, k, positions, cache, is_neox)
    assert_close(q, want[0], tol=1e-12)
    assert_close(k, want[1], tol=1e-12)


def test_reference_matches_transformers_llama_rotary():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama

    config = transformers.LlamaConfig(
        hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=512, rope_theta=500000.0,
    )
    tokens = 11
    _, q, k, positions = _qkv(tokens, 4, 2, 64, torch.float32, "cpu", seed=9)
    rope = modeling_llama.LlamaRotaryEmbedding(config)
    cos, sin = rope(q, positions[None])
    # transformers' layout: [batch, heads, tokens, head_dim]
    want_q, want_k = modeling_llama.apply_rotary_pos_emb(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin
    )
    cache = infercore.ops.rope.cos_sin_cache_from_config(config)
    rotary_reference(q, k, positions, cache, True)
    assert_close(q, want_q[0].transpose(0, 1), tol=1e-5)
    assert_close(k, want_k[0].transpose(0, 1), tol=1e-5)


def test_non_unit_head_dim_stride_falls_back_to_reference(device):
    base = torch.randn(5, 3, 32, 2, device=device)
    q = base[..., 0]  # head_dim stride 2
    k = torch.randn(5, 1, 32, device=device)
    positions = torch.arange(5, device=device) * 7
    cache = build_cos_sin_cache(32, 64, device=device)
    want_q, want_k = _expected(q, k, positions, cache, True)
    if any(b.name == "triton" and not b.environment_reasons()
           for b in infercore.registry.backends("rope")):
        with pytest.raises(ValueError, match="q needs unit stride in head_dim"):
            infercore.ops.rotary(base.clone()[..., 0], k.clone(), positions, cache,
                                 backend="triton")
    infercore.ops.rotary(q, k, positions, cache)
    assert_close(base[..., 0], want_q, dtype=torch.float32)
    assert_close(k, want_k, dtype=torch.float32)


def test_rotary_handles_zero_tokens(device):
    q, k = torch.randn(0, 4, 16, device=device), torch.randn(0, 2, 16, device=device)
    cache = build_cos_sin_cache(16, 8, device=device)
    positions = torch.zeros(0, dtype=torch.int64, device=device)
    out_q, out_k = infercore.ops.rotary(q, k, positions, cache)
    assert out_q.shape == (0, 4, 16) and out_k.shape == (0, 2, 16)


def _bad(**changes):
    args = {
        "q": torch.randn(4, 2, 16), "k": torch.randn(4, 1, 16),
        "positions": torch.arange(4), "cos_sin_cache": torch.randn(32, 16),
    }
    kwargs = {}
    for key, value in changes.items():
        (args if key in args else kwargs)[key] = value
    return lambda: infercore.ops.rotary(*args.values(), **kwargs)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (_bad(q=torch.randn(4, 32)), ValueError, "q must have 3 dimensions"),
        (_bad(q=torch.randn(4, 2, 16, dtype=torch.float64)), TypeError, "q must have dtype"),
        (_bad(k=torch.randn(4, 1, 16, dtype=torch.float16)), TypeError,
         "k must have the dtype of q"),
        (_bad(k=torch.randn(3, 1, 16)), ValueError, r"k must be \[tokens, kv_heads, head_dim\]"),
        (_bad(k=torch.randn(4, 1, 8)), ValueError, r"k must be \[tokens, kv_heads, head_dim\]"),
        (_bad(positions=torch.arange(5)), ValueError, r"positions must have shape \[tokens\]"),
        (_bad(positions=torch.arange(4).float()), TypeError, "positions must have dtype"),
        (_bad(cos_sin_cache=torch.randn(32, 15)), ValueError, "rotary_dim even"),
        (_bad(cos_sin_cache=torch.randn(32, 18)), ValueError, "rotary_dim even"),
        (_bad(cos_sin_cache=torch.randn(32)), ValueError, "cos_sin_cache must have 2"),
        (_bad(rotary_dim=8), ValueError, "rotary_dim must equal cos_sin_cache.shape"),
        (_bad(is_neox=1), TypeError, "is_neox must be a bool"),
    ],
)
def test_rotary_rejects_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_rotary_under_torch_compile_fullgraph_on_qkv_views(device):
    qkv, q, k, positions = _qkv(6, 4, 2, 32, torch.float32, device, seed=2)
    cache = build_cos_sin_cache(32, MAX_POSITION, device=device)
    want_q, want_k = _expected(q, k, positions, cache, True)
    v = qkv[:, 6 * 32 :].clone()

    @torch.compile(fullgraph=True, dynamic=False)
    def f(qkv, positions, cache):
        q = qkv[:, : 4 * 32].view(6, 4, 32)
        k = qkv[:, 4 * 32 : 6 * 32].view(6, 2, 32)
        infercore.ops.rotary(q, k, positions, cache)
        return q.sum(-1)

    assert_close(f(qkv, positions, cache), want_q.sum(-1), dtype=torch.float32)
    assert_close(q, want_q, dtype=torch.float32)
    assert_close(k, want_k, dtype=torch.float32)
    assert torch.equal(qkv[:, 6 * 32 :], v)


def test_custom_op_has_fake_implementation():
    q = torch.randn(3, 4, 16, device="meta", dtype=torch.bfloat16)
    k = torch.randn(3, 2, 16, device="meta", dtype=torch.bfloat16)
    pos = torch.zeros(3, dtype=torch.int64, device="meta")
    cache = torch.randn(8, 16, device="meta")
    assert torch.ops.infercore.rotary(q, k, pos, cache, True, "auto") is None
    torch.library.opcheck(
        torch.ops.infercore.rotary.default,
        (torch.randn(3, 4, 16), torch.randn(3, 2, 16), torch.arange(3),
         build_cos_sin_cache(16, 8), False, "reference"),
        test_utils=("test_schema", "test_faketensor"),
    )


@pytest.mark.cuda
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("tokens", [1, 4099], ids=str)
def test_triton_rotary_bf16_on_cuda(is_neox, tokens):
    _, q, k, positions = _qkv(tokens, 32, 8, 128, torch.bfloat16, "cuda", seed=tokens)
    cache = build_cos_sin_cache(128, MAX_POSITION, 500000.0, device="cuda")
    want_q, want_k = _expected(q, k, positions, cache, is_neox)
    infercore.ops.rotary(q, k, positions, cache, is_neox=is_neox, backend="triton")
    assert_close(q, want_q, dtype=torch.bfloat16)
    assert_close(k, want_k, dtype=torch.bfloat16)
