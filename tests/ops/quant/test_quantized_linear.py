"""quantized_linear: every gemm.w8a16 / gemm.w4a16 backend against the reference."""

import pytest
import torch

import infercore
from infercore.ops.quant import quantize_weight, quantized_linear
from infercore.ops.quant.reference import quantized_linear_reference
from infercore.ops.quant.triton_wo_splitk import MAX_M
from infercore.registry import backends
from tests.helpers import assert_close, backend_params

# (method, symmetric, group_size, K): K a multiple of the group size; per-channel weights
# take K values that leave a partial last tile.
W8_FORMATS = [("int8", True, None, 300), ("int8", False, 32, 96), ("fp8", True, None, 75)]
W4_FORMATS = [("int4", True, 32, 96), ("int4", False, 64, 128), ("int4", True, None, 298)]
# 1 and 5 rows: split-K decode kernel; 67 rows: tiled prefill kernel (two row tiles).
ROWS = [1, 5, MAX_M + 3]
N = 133  # three decode tiles of 64 rows, two prefill tiles of 128


def _case(method, symmetric, group_size, k, m, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed + m + k)
    w = (torch.randn(N, k, generator=g) * 0.1).to(device)
    x = torch.randn(m, k, generator=g).to(device=device, dtype=dtype)
    bias = torch.randn(N, generator=g).to(device=device, dtype=dtype)
    qw = quantize_weight(w.to(dtype), method, group_size=group_size, symmetric=symmetric)
    return x, qw, bias


def _check(backend, fmt, m, dtype, device):
    x, qw, bias = _case(*fmt, m, dtype, device)
    out = quantized_linear(x, qw, bias, backend=backend)
    ref = quantized_linear_reference(x.double(), qw, bias.double())
    assert out.dtype == dtype and out.shape == (m, N)
    assert_close(out, ref, dtype=dtype)


@pytest.mark.parametrize("backend", backend_params("gemm.w8a16"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("fmt", W8_FORMATS, ids=str)
def test_w8a16_matches_reference(backend, fmt, m, dtype, device):
    _check(backend, fmt, m, dtype, device)


@pytest.mark.parametrize("backend", backend_params("gemm.w4a16"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("fmt", W4_FORMATS, ids=str)
def test_w4a16_matches_reference(backend, fmt, m, dtype, device):
    _check(backend, fmt, m, dtype, device)


@pytest.mark.parametrize("backend", backend_params("gemm.w4a16", include_reference=True))
def test_batched_strided_input_without_bias(backend, device):
    base = torch.randn(2, 3, 2, 64, device=device)
    x = base[:, :, 1, :]  # [2, 3, 64], row stride 128
    qw = quantize_weight(torch.randn(40, 64, device=device), "int4", group_size=32)
    out = quantized_linear(x, qw, backend=backend)
    assert out.shape == (2, 3, 40)
    ref = quantized_linear_reference(x.reshape(6, 64).double(), qw, None).reshape(2, 3, 40)
    assert_close(out, ref, dtype=torch.float32)


def test_plan_splits_fills_the_gpu():
    from infercore.ops.quant.triton_wo_splitk import plan_splits

    # [4096, 14336] weight (down projection) on 132 SMs: 64 tiles of rows, 112 K tiles
    splits, per_split = plan_splits(64, 112, 132)
    assert 64 * splits >= 2 * 132 and splits * per_split >= 112 > (splits - 1) * per_split
    assert plan_splits(300, 8, 132) == (2, 4)
    assert plan_splits(5, 1, 132) == (1, 1)


def test_empty_batch(device):
    qw = quantize_weight(torch.randn(24, 32, device=device), "int8", group_size=None)
    assert quantized_linear(torch.randn(0, 32, device=device), qw).shape == (0, 24)


def test_triton_declines_what_it_cannot_run(device):
    qw = quantize_weight(torch.randn(16, 96, device=device), "int4", group_size=24)
    x = torch.randn(2, 96, device=device)
    with pytest.raises(ValueError, match="group_size=24 is not a multiple of 16"):
        quantized_linear(x, qw, backend="triton")
    # auto falls back to the reference and says why the others declined
    triton = next(b for b in backends("gemm.w4a16") if b.name == "triton")
    from infercore.ops.quant.linear import QuantizedLinearInputs

    assert triton.not_supported_reasons(QuantizedLinearInputs(x, qw, None))
    assert_close(quantized_linear(x, qw), quantized_linear_reference(x.double(), qw, None),
                 dtype=torch.float32)


def test_rejects_bad_arguments():
    qw = quantize_weight(torch.randn(16, 64), "int8", group_size=32)
    with pytest.raises(ValueError, match=r"x must have shape \[..., K\] with K = qweight"):
        quantized_linear(torch.randn(3, 63), qw)
    with pytest.raises(TypeError, match="x must have dtype"):
        quantized_linear(torch.randint(0, 3, (3, 64)), qw)
    with pytest.raises(TypeError, match="qweight must be a QuantizedWeight"):
        quantized_linear(torch.randn(3, 64), torch.randn(16, 64))
    with pytest.raises(ValueError, match=r"bias must have shape \[N\] = \[16\]"):
        quantized_linear(torch.randn(3, 64), qw, torch.randn(15))
    with pytest.raises(ValueError, match="tensors must be on one device"):
        quantized_linear(torch.randn(3, 64), qw.to("meta"))


def test_custom_op_fake_and_compile(device):
    qw = quantize_weight(torch.randn(24, 64, device=device), "int4", group_size=32,
                         symmetric=False)
    meta = qw.to("meta")
    x = torch.randn(5, 64, device="meta", dtype=torch.float16)
    out = torch.ops.infercore.quantized_linear(
        x, meta.qweight, meta.scales, meta.zeros, None, "int4", 32, "auto"
    )
    assert out.shape == (5, 24) and out.dtype == torch.float16

    @torch.compile(fullgraph=True, dynamic=False)
    def f(x, qweight, scales, zeros):
        w = infercore.ops.QuantizedWeight("int4", qweight, scales, zeros, 32)
        return infercore.ops.quantized_linear(x, w, backend="reference") * 2

    x = torch.randn(3, 64, device=device)
    ref = quantized_linear_reference(x.double(), qw, None) * 2
    assert_close(f(x, qw.qweight, qw.scales, qw.zeros), ref, dtype=torch.float32)


CUDA_FORMATS = [("int4", True, 128), ("int4", False, 128), ("int8", True, None),
                ("int8", False, 64), ("fp8", True, None), ("int4", True, 32)]


@pytest.mark.cuda
@pytest.mark.parametrize("m", [1, 7, 16, 33, 65, 300])
@pytest.mark.parametrize("fmt", CUDA_FORMATS, ids=str)
@pytest.mark.parametrize(
    ("n", "k", "dtype"),
    [(4096, 4096, torch.bfloat16), (1000, 1536, torch.bfloat16), (1000, 1536, torch.float16)],
    ids=str,
)
def test_triton_on_cuda(n, k, dtype, fmt, m):
    method, symmetric, group_size = fmt
    torch.manual_seed(m)
    w = torch.randn(n, k, device="cuda") * 0.02
    qw = quantize_weight(w.to(dtype), method, group_size=group_size, symmetric=symmetric)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype)
    out = quantized_linear(x, qw, bias, backend="triton")
    ref = quantized_linear_reference(x.double(), qw, bias.double())
    assert_close(out, ref, dtype=dtype)
    assert torch.equal(out, quantized_linear(x, qw, bias, backend="triton"))
