"""quantize_fp8 and gemm_fp8: round-trip bounds, every backend against the reference."""

import dataclasses

import pytest
import torch

import infercore
from infercore.ops.gemm import GemmFp8Inputs
from infercore.ops.gemm.fp8_quant import FP8_DTYPE, FP8_MAX, expand_scale, scale_groups
from infercore.ops.gemm.fp8_reference import gemm_fp8_reference
from infercore.registry import get_registry
from tests.helpers import assert_close, backend_params, skip_unless_supported

#: Largest relative-norm error of a quantize/dequantize round trip on Gaussian data:
#: e4m3 keeps 3 mantissa bits (worst case 2**-4 per element, about 2.6% RMS measured).
ROUND_TRIP_TOL = 0.035
GRANULARITIES = [
    ("tensor", (128, 128)),
    ("token", (128, 128)),
    ("channel", (128, 128)),
    ("block", (128, 128)),
    ("block", (1, 128)),
    ("block", (16, 8)),
]

# Hopper's FP8 tensor cores accumulate with fewer bits than float32: on an H200 the Triton
# FP8 GEMM with float32 output landed at relative errors of 1.2e-4 to 1.3e-4 against the
# float64 reference (operands exact), so float32 output gets this bound instead of 1e-4.
FP8_DOT_TOL = 1e-3


def _randn(*shape, seed, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def _group_maxima(q, granularity, block_size):
    """max |q| of every scale group, computed block by block."""
    a = q.float().abs()
    if granularity == "tensor":
        return a.max().reshape(1)
    if granularity == "token":
        return a.amax(dim=-1)
    if granularity == "channel":
        return a.amax(dim=0)
    br, bc = block_size
    return torch.stack([a[i : i + br, j : j + bc].max()
                        for i in range(0, a.shape[0], br) for j in range(0, a.shape[1], bc)])


def _dequant(q, scale, granularity, block_size):
    groups = scale_groups(q.dim(), granularity, block_size)
    return q.float() * expand_scale(scale, q.shape, groups)


@pytest.mark.parametrize("backend", backend_params("quant.fp8", include_reference=True))
@pytest.mark.parametrize(("granularity", "block_size"), GRANULARITIES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_quantize_round_trip_error_bounds(backend, granularity, block_size, dtype, device):
    x = (_randn(37, 300, seed=1) * 3 + 0.5).to(device=device, dtype=dtype)
    q, scale = infercore.ops.quantize_fp8(
        x, granularity, block_size=block_size, backend=backend
    )
    assert q.dtype == FP8_DTYPE and q.shape == x.shape and scale.dtype == torch.float32
    full_scale = expand_scale(scale, x.shape, scale_groups(2, granularity, block_size))
    deq = q.float() * full_scale
    xf = x.float()
    # Round to nearest: at most half a unit in the last place (2**-4 relative for normal
    # values, 2**-10 * scale below e4m3's smallest normal).
    bound = xf.abs() * 2**-4 + full_scale * 2**-10
    assert ((deq - xf).abs() <= bound * (1 + 1e-6)).all()
    assert_close(deq, xf, tol=ROUND_TRIP_TOL)
    # Dynamic scales map each group's largest magnitude to exactly +-448.
    assert (_group_maxima(q, granularity, block_size) == FP8_MAX).all()


def test_finer_granularity_tracks_columns_of_different_magnitude():
    x = _randn(64, 96, seed=2) * torch.logspace(-4, 2, 96)  # columns span 6 decades
    errs = {}
    for g in ("tensor", "channel"):
        q, s = infercore.ops.quantize_fp8(x, g)
        deq = _dequant(q, s, g, (128, 128))
        errs[g] = ((deq - x).norm(dim=0) / x.norm(dim=0))[:16].max().item()
    assert errs["channel"] < ROUND_TRIP_TOL < errs["tensor"]


def test_quantize_with_static_scale_saturates():
    x = torch.tensor([[0.5, -3.0, 1000.0, -2000.0]])
    scale = torch.tensor([[2.0]])
    q, s = infercore.ops.quantize_fp8(x, scale=scale)
    assert s is scale
    assert q.float().tolist() == [[0.25, -1.5, 448.0, -448.0]]


def test_quantize_keeps_layout_and_token_dims():
    w = _randn(48, 80, seed=3)
    q, s = infercore.ops.quantize_fp8(w.t(), "channel")
    assert q.shape == (80, 48) and q.stride() == w.t().stride() and s.shape == (1, 48)
    q3, s3 = infercore.ops.quantize_fp8(_randn(2, 3, 40, seed=4), "token")
    assert q3.shape == (2, 3, 40) and s3.shape == (2, 3, 1)


def test_quantize_all_zero_group_is_finite():
    x = torch.zeros(4, 8)
    x[1] = _randn(8, seed=5)
    q, s = infercore.ops.quantize_fp8(x, "token")
    assert torch.isfinite(s).all() and (s > 0).all()
    assert (q[0].float() == 0).all() and (q[1].float() != 0).any()


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((torch.randn(4, 8), "row"), {}, ValueError, "granularity must be one of"),
        ((torch.randn(2, 4, 8), "block"), {}, ValueError, "needs a 2-D x"),
        ((torch.randn(4, 8), "block"), {"block_size": (0, 128)}, ValueError,
         "block_size must be two positive ints"),
        ((torch.randn(4, 8), "token"), {"scale": torch.ones(1, 1)}, ValueError,
         r"scale for granularity='token' must have shape \[4, 1\]"),
        ((torch.randn(4, 8), "tensor"), {"scale": torch.ones(1, 1, dtype=torch.float16)},
         TypeError, "scale must have dtype float32"),
        ((torch.randint(0, 5, (4, 8)),), {}, TypeError, "x must have dtype"),
    ],
)
def test_quantize_rejects_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        infercore.ops.quantize_fp8(*args, **kwargs)


# (M, N, K) and scale recipes: (a granularity, a block, b granularity, b block).
FP8_SHAPES = [(1, 17, 129), (33, 48, 300)]
RECIPES = {
    "tensor": ("tensor", None, "tensor", None),
    "token_channel": ("token", None, "channel", None),
    "tensor_channel": ("tensor", None, "channel", None),
    "group_block": ("block", (1, 128), "block", (128, 128)),
    "block_group": ("block", (128, 128), "block", (128, 1)),
    "token_block": ("token", None, "block", (128, 128)),
}


def _quantized_operands(m, n, k, recipe, device):
    ga, ba, gb, bb = RECIPES[recipe]
    x = _randn(m, k, seed=m + k, device=device)
    w = _randn(n, k, seed=n, device=device)
    a_q, a_s = infercore.ops.quantize_fp8(x, ga, block_size=ba or (128, 128))
    b_q, b_s = infercore.ops.quantize_fp8(w.t(), gb, block_size=bb or (128, 128))
    return a_q, b_q, a_s, b_s


def _run_fp8(backend, a_q, b_q, a_s, b_s, out_dtype, bias=None, fast_accum=False):
    probe = torch.empty(a_q.shape[0], b_q.shape[1], dtype=out_dtype, device=a_q.device)
    inputs = GemmFp8Inputs(a_q, b_q, a_s, b_s, bias, probe, fast_accum)
    skip_unless_supported("gemm.fp8", backend, inputs)
    out = infercore.ops.gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=out_dtype, bias=bias,
                                 fast_accum=fast_accum, backend=backend)
    return out, gemm_fp8_reference(dataclasses.replace(inputs, out=out), torch.float64)


@pytest.mark.parametrize("backend", backend_params("gemm.fp8", include_reference=True))
@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("shape", FP8_SHAPES, ids=str)
def test_gemm_fp8_matches_dequantized_matmul(backend, recipe, shape, device):
    m, n, k = shape
    a_q, b_q, a_s, b_s = _quantized_operands(m, n, k, recipe, device)
    out, ref = _run_fp8(backend, a_q, b_q, a_s, b_s, torch.float32)
    assert out.shape == (m, n) and out.dtype == torch.float32
    assert_close(out, ref, tol=FP8_DOT_TOL)


@pytest.mark.parametrize("backend", backend_params("gemm.fp8", include_reference=True))
@pytest.mark.parametrize("recipe", ["tensor", "token_channel", "group_block"])
def test_gemm_fp8_fast_accumulation_matches_dequantized_matmul(backend, recipe, device):
    """fast_accum=True computes the same product (the interpreter and CPU sum in float32
    either way; on Hopper the CUDA test below bounds the error)."""
    a_q, b_q, a_s, b_s = _quantized_operands(33, 48, 300, recipe, device)
    out, ref = _run_fp8(backend, a_q, b_q, a_s, b_s, torch.float32, fast_accum=True)
    assert_close(out, ref, tol=FP8_DOT_TOL)


@pytest.mark.parametrize("backend", backend_params("gemm.fp8", include_reference=True))
@pytest.mark.parametrize("recipe", ["group_block", "block_group"])
def test_gemm_fp8_blocks_along_m_and_n(backend, recipe, device):
    """M and N past one 128-block, K past two: every block of scales is used."""
    a_q, b_q, a_s, b_s = _quantized_operands(130, 136, 260, recipe, device)
    out, ref = _run_fp8(backend, a_q, b_q, a_s, b_s, torch.float32)
    assert_close(out, ref, tol=FP8_DOT_TOL)


@pytest.mark.parametrize("backend", backend_params("gemm.fp8", include_reference=True))
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gemm_fp8_bias_and_16bit_output(backend, out_dtype, device):
    a_q, b_q, a_s, b_s = _quantized_operands(20, 32, 64, "token_channel", device)
    bias = _randn(32, seed=6, device=device).to(out_dtype) * 8
    out, ref = _run_fp8(backend, a_q, b_q, a_s, b_s, out_dtype, bias)
    assert out.dtype == out_dtype
    assert_close(out, ref, dtype=out_dtype)


def test_gemm_fp8_reference_approximates_the_float_product():
    x, w = _randn(16, 256, seed=7), _randn(24, 256, seed=8)
    a_q, a_s = infercore.ops.quantize_fp8(x, "token")
    b_q, b_s = infercore.ops.quantize_fp8(w.t(), "channel")
    out = infercore.ops.gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=torch.float32,
                                 backend="reference")
    assert_close(out, x @ w.t(), tol=2 * ROUND_TRIP_TOL)


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (dict(a_q=torch.randn(8, 32)), TypeError, "a_q must have dtype float8_e4m3fn"),
        (dict(b_q=torch.randn(31, 16).to(FP8_DTYPE)), ValueError,
         r"b_q must have shape \[K, N\] with K = a_q.shape\[1\] = 32"),
        (dict(a_scale=torch.ones(3, 1)), ValueError, r"a_scale has shape \[3, 1\]; allowed"),
        (dict(b_scale=torch.ones(16, 1)), ValueError, r"b_scale has shape \[16, 1\]"),
        (dict(a_scale=torch.ones(8, 1, dtype=torch.float16)), TypeError,
         "a_scale must have dtype float32"),
        (dict(out_dtype=torch.int8), TypeError, "out_dtype must be one of"),
        (dict(bias=torch.ones(15)), ValueError, r"bias must have shape \[N\] = \[16\]"),
        (dict(fast_accum=1), TypeError, "fast_accum must be True or False, got 1"),
    ],
)
def test_gemm_fp8_rejects_bad_arguments(change, exc, match):
    args = dict(
        a_q=torch.randn(8, 32).to(FP8_DTYPE), b_q=torch.randn(32, 16).to(FP8_DTYPE),
        a_scale=torch.ones(8, 1), b_scale=torch.ones(1, 16), out_dtype=torch.bfloat16,
    )
    args.update(change)
    with pytest.raises(exc, match=match):
        infercore.ops.gemm_fp8(**args)


class _OnCuda(GemmFp8Inputs):
    """Inputs that claim to live on CUDA device 0 (to check capability reasons here)."""

    @property
    def device(self):
        return torch.device("cuda", 0)


def test_fp8_backends_report_gpus_without_fp8(monkeypatch):
    from infercore import backend

    monkeypatch.setattr(backend, "_compute_capability", lambda index: (8, 0))
    a_q, b_q, a_s, b_s = _quantized_operands(16, 16, 32, "tensor", "cpu")
    inputs = _OnCuda(a_q, b_q, a_s, b_s, None, torch.empty(16, 16))
    for name in ("torch", "triton"):
        backend = get_registry().get("gemm.fp8", name)
        if backend.environment_reasons():
            continue
        reasons = backend.not_supported_reasons(inputs)
        assert any("compute capability >= 8.9, device has 8.0" in r for r in reasons), reasons


def test_torch_backend_gives_reasons_for_block_scales():
    a_q, b_q, a_s, b_s = _quantized_operands(16, 16, 256, "group_block", "cpu")
    inputs = GemmFp8Inputs(a_q, b_q, a_s, b_s, None, torch.empty(16, 16))
    reasons = get_registry().get("gemm.fp8", "torch").not_supported_reasons(inputs)
    assert any("block-wise scales" in r for r in reasons)


def test_fp8_custom_ops_have_fake_implementations():
    x = torch.empty(6, 256, device="meta")
    q, s = torch.ops.infercore.quantize_fp8(x, "block", [1, 128], "auto")
    assert q.dtype == FP8_DTYPE and s.shape == (6, 2)
    b_q = torch.empty(256, 8, device="meta", dtype=FP8_DTYPE)
    out = torch.ops.infercore.gemm_fp8(q, b_q, s, torch.empty(2, 1, device="meta"), None,
                                       torch.bfloat16, "auto", False)
    assert out.shape == (6, 8) and out.dtype == torch.bfloat16


def test_fp8_under_torch_compile_fullgraph():
    x, w = _randn(8, 64, seed=9), _randn(16, 64, seed=10)
    b_q, b_s = infercore.ops.quantize_fp8(w.t(), "channel")

    @torch.compile(fullgraph=True, dynamic=False, backend="aot_eager")
    def f(x):
        a_q, a_s = infercore.ops.quantize_fp8(x, "token")
        return infercore.ops.gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=torch.float32)

    a_q, a_s = infercore.ops.quantize_fp8(x, "token")
    ref = infercore.ops.gemm_fp8(a_q, b_q, a_s, b_s, out_dtype=torch.float32)
    assert_close(f(x), ref.double(), dtype=torch.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("gemm.fp8"))
@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("shape", [(16, 4096, 4096), (512, 6144, 4096), (512, 4096, 14336),
                                   (4096, 1024, 2048), (200, 272, 400)], ids=str)
@pytest.mark.parametrize("fast_accum", [False, True], ids=["float32-steps", "fast-accum"])
def test_gemm_fp8_bf16_on_cuda(backend, recipe, shape, fast_accum):
    m, n, k = shape
    a_q, b_q, a_s, b_s = _quantized_operands(m, n, k, recipe, "cuda")
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    out, ref = _run_fp8(backend, a_q, b_q, a_s, b_s, torch.bfloat16, bias, fast_accum)
    assert_close(out, ref, dtype=torch.bfloat16)


@pytest.mark.cuda
def test_triton_fp8_with_row_major_b_on_cuda():
    """b_q [K, N] row-major (not the column-major layout FP8 tensor cores read)."""
    a_q, b_q, a_s, b_s = _quantized_operands(300, 512, 1024, "token_channel", "cuda")
    out, ref = _run_fp8("triton", a_q, b_q.contiguous(), a_s, b_s, torch.bfloat16)
    assert_close(out, ref, dtype=torch.bfloat16)


@pytest.mark.cuda
def test_quantize_fp8_on_cuda_matches_cpu():
    x = _randn(300, 520, seed=11)
    for granularity, block in GRANULARITIES:
        q, s = infercore.ops.quantize_fp8(x.cuda(), granularity, block_size=block)
        q_cpu, s_cpu = infercore.ops.quantize_fp8(x, granularity, block_size=block)
        torch.testing.assert_close(s.cpu(), s_cpu)
        # Scales can differ in the last bit between devices, moving a few values to the
        # neighbouring e4m3 code: allow one code step (3 mantissa bits: 1/8 relative).
        torch.testing.assert_close(q.cpu().float(), q_cpu.float(), rtol=0.125, atol=2.0**-9)
        assert (q.cpu().float() != q_cpu.float()).float().mean() < 1e-2
