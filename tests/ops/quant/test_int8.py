"""INT8 W8A8: quantize_int8, gemm_w8a8 (every backend against the reference) and smooth."""

import pytest
import torch

import infercore
from infercore.ops.quant import gemm_w8a8, quantize_int8, smooth
from infercore.ops.quant.reference import gemm_w8a8_reference, quantize_int8_reference
from tests.helpers import assert_close, backend_params


def _x(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2 + 0.3
    x.view(-1, shape[-1])[:, 1] *= 30  # outlier channel
    return x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("backend", backend_params("quant.int8", include_reference=True))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(1, 7), (5, 3, 129), (17, 1000), (3, 20001)], ids=str)
def test_quantize_int8_token(backend, dtype, shape, device):
    """|x - q * scale| <= scale / 2 (round to nearest; no clipping since scale = absmax / 127);
    backends may differ from the reference by one step where x / scale is a tie."""
    x = _x(shape, dtype, device)
    q, scale = quantize_int8(x, "token", backend=backend)
    q_ref, scale_ref = quantize_int8_reference(x, "token")
    assert q.dtype == torch.int8 and q.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (*shape[:-1], 1)
    torch.testing.assert_close(scale, scale_ref, rtol=1e-6, atol=0)
    assert (q.int() - q_ref.int()).abs().max() <= 1
    err = (q.float() * scale - x.float()).abs()
    assert (err <= scale / 2 * (1 + 1e-5)).all()
    assert q.abs().max() == 127


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantize_int8_tensor_and_channel(granularity, device):
    w = _x((40, 24), torch.float32, device, seed=1)
    x = w.t()  # a [K, N] GEMM operand, as a transposed view
    q, scale = quantize_int8(x, granularity)
    assert scale.shape == ((1, 1) if granularity == "tensor" else (1, 40))
    assert q.shape == x.shape
    err = (q.float() * scale - x).abs()
    assert (err <= scale / 2 * (1 + 1e-5)).all()
    if granularity == "channel":
        full = torch.full((40,), 127, dtype=torch.int8, device=device)
        assert torch.equal(q.abs().amax(dim=0), full)


def test_quantize_int8_zero_row_and_errors(device):
    x = torch.zeros(3, 16, device=device)
    x[1, 4] = -2.0
    q, scale = quantize_int8(x)
    assert torch.isfinite(scale).all() and q[0].abs().max() == 0 and q[1, 4] == -127
    with pytest.raises(ValueError, match="granularity must be one of"):
        quantize_int8(x, "row")
    with pytest.raises(ValueError, match="granularity='channel' takes a 2-D"):
        quantize_int8(x[None], "channel")
    with pytest.raises(TypeError, match="x must have dtype"):
        quantize_int8(x.to(torch.int32))
    with pytest.raises(ValueError, match="granularity 'tensor' not supported"):
        quantize_int8(x, "tensor", backend="triton")


def _w8a8_operands(m, n, k, device, *, per_tensor=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    a_s = torch.rand(m, 1, generator=g) * 0.02 + 1e-3
    b_s = torch.rand(1, n, generator=g) * 0.02 + 1e-3
    bias = torch.randn(n, generator=g)
    if per_tensor:
        a_s, b_s = a_s[:1, :1].reshape(()), b_s[:1, :1].reshape(1)
    b = w.to(device).t()  # column-major [K, N], as a linear layer's weight transposed
    return a.to(device), b, a_s.to(device), b_s.to(device), bias.to(device)


def _skip_unsupported(family, backend, inputs):
    b = next(b for b in infercore.registry.backends(family) if b.name == backend)
    reasons = b.not_supported_reasons(inputs)
    if reasons:
        pytest.skip("; ".join(reasons))


@pytest.mark.parametrize("backend", backend_params("gemm.w8a8"))
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("m", "n", "k"), [(1, 9, 33), (19, 40, 72), (70, 133, 200)], ids=str)
def test_gemm_w8a8_matches_reference(backend, m, n, k, out_dtype, device):
    from infercore.ops.quant.int8 import GemmW8A8Inputs

    a, b, a_s, b_s, bias = _w8a8_operands(m, n, k, device)
    _skip_unsupported("gemm.w8a8", backend, GemmW8A8Inputs(a, b, a_s, b_s, bias, out_dtype))
    out = gemm_w8a8(a, b, a_s, b_s, out_dtype=out_dtype, bias=bias, backend=backend)
    ref = gemm_w8a8_reference(a, b, a_s.double(), b_s.double(), bias.double(), torch.float64)
    assert out.dtype == out_dtype and out.shape == (m, n)
    assert_close(out, ref, dtype=out_dtype)


@pytest.mark.parametrize("backend", backend_params("gemm.w8a8", include_reference=True))
def test_gemm_w8a8_per_tensor_scales_row_major_b(backend, device):
    a, b, a_s, b_s, _ = _w8a8_operands(21, 24, 48, device, per_tensor=True, seed=3)
    b = b.contiguous()  # row-major [K, N]
    out = gemm_w8a8(a, b, a_s, b_s, out_dtype=torch.float32, backend=backend)
    ref = (a.double() @ b.double()) * a_s.double() * b_s.double()
    assert_close(out, ref, dtype=torch.float32)


def test_w8a8_linear_end_to_end_with_smoothing(device):
    """An outlier channel (30x) coarsens every token's grid; smoothing (alpha 0.5) balances
    the channel maxima of both sides, after which int8 rounding of each operand costs about
    0.3% (scale / sqrt(12) against the RMS), so the product is within 1%."""
    x = _x((6, 96), torch.float32, device, seed=4)
    w = torch.randn(50, 96, device=device) * 0.05
    ref = x.double() @ w.double().t()

    def w8a8(x, w):
        xq, xs = quantize_int8(x, "token")
        wq, ws = quantize_int8(w.t(), "channel")
        return gemm_w8a8(xq, wq, xs, ws, out_dtype=torch.float32)

    s, w_smooth = smooth(x.abs().amax(0), w, alpha=0.5)
    plain = (w8a8(x, w) - ref).norm() / ref.norm()
    smoothed = (w8a8(x / s, w_smooth) - ref).norm() / ref.norm()
    assert smoothed < 1e-2 and smoothed < plain / 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"a_q": torch.randn(4, 8)}, TypeError, "a_q must have dtype int8"),
        ({"b_q": torch.zeros(9, 5, dtype=torch.int8)}, ValueError, r"b_q must have shape \[K, N\]"),
        ({"a_scale": torch.ones(3)}, ValueError, "a_scale must hold one scale or 4"),
        ({"b_scale": torch.ones(2, 5)}, ValueError, "b_scale must hold one scale or 5"),
        ({"out_dtype": torch.int32}, TypeError, "out_dtype must be float16"),
        ({"bias": torch.ones(4)}, ValueError, r"bias must have shape \[N\] = \[5\]"),
    ],
)
def test_gemm_w8a8_rejects_bad_arguments(kwargs, exc, match):
    args = {"a_q": torch.zeros(4, 8, dtype=torch.int8), "b_q": torch.zeros(8, 5, dtype=torch.int8),
            "a_scale": torch.ones(4, 1), "b_scale": torch.ones(1, 5), "out_dtype": torch.float16}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        gemm_w8a8(args.pop("a_q"), args.pop("b_q"), args.pop("a_scale"), args.pop("b_scale"),
                  **args)


def test_fake_implementations():
    a = torch.empty(5, 32, dtype=torch.int8, device="meta")
    b = torch.empty(32, 12, dtype=torch.int8, device="meta")
    s = torch.empty(5, device="meta")
    out = torch.ops.infercore.gemm_w8a8(a, b, s, s[:1], None, torch.bfloat16, "auto")
    assert out.shape == (5, 12) and out.dtype == torch.bfloat16
    q, scale = torch.ops.infercore.quantize_int8(torch.empty(2, 5, 32, device="meta"), "token",
                                                 "auto")
    assert q.dtype == torch.int8 and scale.shape == (2, 5, 1)


def test_smooth_preserves_the_product_and_flattens_outliers():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 48, generator=g)
    x[:, 7] *= 40  # outlier channel
    w = torch.randn(24, 48, generator=g) * 0.05
    s, w_new = smooth(x.abs().amax(0), w, alpha=0.5)
    assert s.dtype == torch.float32 and s.shape == (48,) and w_new.shape == w.shape
    torch.testing.assert_close((x / s) @ w_new.t(), x @ w.t(), rtol=1e-4, atol=1e-4)
    # alpha = 0.5 equalizes the per-channel maxima of both sides
    torch.testing.assert_close((x / s).abs().amax(0), w_new.abs().amax(0), rtol=1e-4, atol=1e-6)
    ratio = lambda t: (t.abs().amax(0).max() / t.abs().amax(0).median()).item()
    assert ratio(x / s) < ratio(x) / 4
    s0, _ = smooth(x.abs().amax(0), w, alpha=0.0)
    torch.testing.assert_close(s0, 1 / w.abs().amax(0))


def test_smooth_rejects_bad_arguments():
    w = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"act_absmax must have shape \[K\] = \[8\]"):
        smooth(torch.ones(7), w)
    with pytest.raises(ValueError, match="alpha must be a number in"):
        smooth(torch.ones(8), w, alpha=1.5)
    with pytest.raises(ValueError, match="act_absmax must be non-negative"):
        smooth(-torch.ones(8), w)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize(("m", "n", "k"), [(17, 4096, 4096), (300, 1000, 1536), (2048, 6144, 4096)],
                         ids=str)
def test_gemm_w8a8_on_cuda(backend, m, n, k):
    a, b, a_s, b_s, bias = _w8a8_operands(m, n, k, "cuda", seed=m)
    out = gemm_w8a8(a, b, a_s, b_s, out_dtype=torch.bfloat16, bias=bias.bfloat16(), backend=backend)
    ref = gemm_w8a8_reference(a, b, a_s.double(), b_s.double(), bias.double(), torch.float64)
    assert_close(out, ref, dtype=torch.bfloat16)


@pytest.mark.cuda
def test_triton_w8a8_small_m_on_cuda_and_torch_reasons():
    a, b, a_s, b_s, _ = _w8a8_operands(5, 256, 512, "cuda")
    out = gemm_w8a8(a, b, a_s, b_s, out_dtype=torch.float16, backend="triton")
    ref = gemm_w8a8_reference(a, b, a_s.double(), b_s.double(), None, torch.float64)
    assert_close(out, ref, dtype=torch.float16)
    with pytest.raises(ValueError, match="needs M > 16 rows"):
        gemm_w8a8(a, b, a_s, b_s, out_dtype=torch.float16, backend="torch")


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 4096), (4096, 4096), (7, 20001)], ids=str)
def test_quantize_int8_triton_on_cuda(shape):
    x = _x(shape, torch.bfloat16, "cuda")
    q, scale = quantize_int8(x, backend="triton")
    q_ref, scale_ref = quantize_int8_reference(x, "token")
    torch.testing.assert_close(scale, scale_ref, rtol=1e-6, atol=0)
    assert (q.int() - q_ref.int()).abs().max() <= 1
