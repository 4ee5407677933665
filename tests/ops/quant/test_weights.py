"""quantize_weight / dequantize_weight: error bounds per method, packing, validation."""

import pytest
import torch

from infercore.ops.quant import QuantizedWeight, dequantize_weight, quantize_weight
from infercore.ops.quant.weights import pack_int4, unpack_int4

CASES = [
    ("int8", True, None), ("int8", True, 32), ("int8", False, 16), ("int8", False, None),
    ("int4", True, 32), ("int4", True, 64), ("int4", False, 32), ("int4", True, None),
    ("fp8", True, None), ("fp8", True, 32),
]


def _scales_per_element(qw: QuantizedWeight) -> torch.Tensor:
    return qw.scales.float().t().repeat_interleave(qw.group_size, dim=1)


def _weight(n: int, k: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    w[:, 3] *= 20  # an outlier column, as in real checkpoints
    w[1] += 0.3  # a row of one sign: asymmetric grids shift the zero point
    return w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("method", "symmetric", "group_size"), CASES, ids=str)
def test_round_trip_error_bound(method, symmetric, group_size, dtype):
    """Integer grids: the scale is rounded up to its dtype before values are rounded, so no
    value clips and |w - deq(w)| <= scale / 2 per element (round to nearest). fp8 e4m3 has
    3 mantissa bits: relative error <= 2**-4, plus 2**-10 * scale in the subnormal range."""
    w = _weight(19, 192, dtype, seed=len(method) + (group_size or 0))
    qw = quantize_weight(w, method, group_size=group_size, symmetric=symmetric)
    assert qw.scales.dtype == dtype and qw.group_size == (group_size or 192)
    err = (dequantize_weight(qw) - w.float()).abs()
    s = _scales_per_element(qw)
    if method == "fp8":
        bound = 2**-4 * w.float().abs() + 2**-10 * s
    else:
        bound = 0.5 * s * (1 + 1e-5)
    assert (err <= bound).all(), f"max excess {(err - bound).max().item():.3e}"
    # the grid is used: the error is not trivially small nor the scale oversized
    assert err.max() > 0.05 * s.max() or method == "fp8"
    assert s.min() > 0


def test_scales_fit_the_group_absmax():
    w = _weight(8, 64, torch.float32, seed=3)
    qw = quantize_weight(w, "int4", group_size=32)
    absmax = w.reshape(8, 2, 32).abs().amax(-1).t()
    assert torch.allclose(qw.scales, absmax / 7, rtol=1e-6)
    assert qw.qweight.shape == (8, 32) and qw.qweight.dtype == torch.uint8
    assert qw.nbytes == 8 * 32 + 2 * 8 * 4


def test_asymmetric_zero_points_and_exact_zero():
    w = _weight(6, 32, torch.float32, seed=4)
    w[0] = torch.linspace(0.1, 1.6, 32)  # all positive: range [0, 1.6], zero point 0
    qw = quantize_weight(w, "int4", group_size=16, symmetric=False)
    assert qw.zeros is not None and qw.zeros.dtype == torch.uint8
    assert qw.zeros.shape == (2, 6) and int(qw.zeros[:, 0].max()) == 0
    zero_w = torch.zeros(4, 32)
    zero_w[0, 5] = 1.0
    deq = dequantize_weight(quantize_weight(zero_w, "int4", 16, symmetric=False))
    assert deq[1:].abs().max() == 0 and deq[0, :5].abs().max() == 0


def test_all_zero_group_has_finite_scale():
    w = torch.zeros(4, 64)
    w[:, 40] = 1.0
    for method in ("int8", "int4", "fp8"):
        qw = quantize_weight(w, method, group_size=32)
        assert torch.isfinite(qw.scales).all() and (qw.scales > 0).all()
        assert torch.equal(dequantize_weight(qw), w)


def test_int4_packing_is_low_nibble_first():
    u = torch.tensor([[1, 2, 3, 4, 15, 0]], dtype=torch.uint8)
    packed = pack_int4(u)
    assert packed.tolist() == [[0x21, 0x43, 0x0F]]
    assert torch.equal(unpack_int4(packed), u)
    # symmetric int4 stores q + 8
    w = torch.tensor([[-7.0, 7.0, 0.0, 1.0] + [0.0] * 12])
    qw = quantize_weight(w, "int4", group_size=16)
    assert unpack_int4(qw.qweight)[0, :4].tolist() == [1, 15, 8, 9]


def test_to_moves_every_tensor():
    qw = quantize_weight(_weight(8, 32, torch.float32, 5), "int4", 16, symmetric=False)
    moved = qw.to("meta")
    assert moved.qweight.is_meta and moved.scales.is_meta and moved.zeros.is_meta
    assert "int4" in repr(qw) and "asymmetric" in repr(qw)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"group_size": 48}, ValueError, "group_size=48 must divide in_features"),
        ({"group_size": 0}, ValueError, "group_size must be a positive int"),
        ({"method": "int3"}, ValueError, "method must be one of"),
        ({"method": "fp8", "symmetric": False}, ValueError, "fp8' is symmetric only"),
    ],
)
def test_quantize_weight_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        quantize_weight(torch.randn(8, 128), **kwargs)


def test_quantize_weight_rejects_bad_tensors():
    with pytest.raises(ValueError, match="int4 packs two values per byte"):
        quantize_weight(torch.randn(8, 63), "int4", group_size=None)
    with pytest.raises(TypeError, match="w must have dtype"):
        quantize_weight(torch.randn(8, 64, dtype=torch.float64), "int8")
    with pytest.raises(ValueError, match="w must have 2 dimensions"):
        quantize_weight(torch.randn(64), "int8")
    bad = torch.randn(8, 128)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="w must be finite"):
        quantize_weight(bad, "int8")


def test_quantized_weight_validates_its_tensors():
    qw = quantize_weight(torch.randn(8, 64), "int4", group_size=32)
    with pytest.raises(ValueError, match="qweight must be contiguous"):
        QuantizedWeight("int4", qw.qweight.t().contiguous().t(), qw.scales, None, 32)
    with pytest.raises(TypeError, match="qweight must have dtype uint8"):
        QuantizedWeight("int4", qw.qweight.to(torch.int32), qw.scales, None, 32)
    with pytest.raises(ValueError, match=r"scales must be a contiguous \[K // group_size, N\]"):
        QuantizedWeight("int4", qw.qweight, qw.scales.t().contiguous(), None, 32)
    with pytest.raises(ValueError, match="group_size must be a positive divisor"):
        QuantizedWeight("int4", qw.qweight, qw.scales, None, 24)
    with pytest.raises(ValueError, match="zeros must be a contiguous"):
        QuantizedWeight("int4", qw.qweight, qw.scales, torch.zeros(1, 8, dtype=torch.uint8), 32)
    q8 = quantize_weight(torch.randn(8, 64), "int8", group_size=32)
    with pytest.raises(TypeError, match="int8 qweight must be int8 when symmetric"):
        QuantizedWeight("int8", q8.qweight.view(torch.uint8), q8.scales, None, 32)
    with pytest.raises(TypeError, match="qw must be a QuantizedWeight"):
        dequantize_weight(q8.qweight)
