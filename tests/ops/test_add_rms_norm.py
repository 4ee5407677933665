"""fused_add_rms_norm: every registered backend against the reference, in place."""

import pytest
import torch

import infercore
from infercore.ops.norm.reference import rms_norm_reference
from tests.helpers import assert_close, backend_params

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 7), (3, 5, 129), (17, 1000), (2, 3, 4, 96), (5, 4096), (2, 20001)]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2 + 0.3).to(device, dtype)
    residual = (torch.randn(shape, generator=g) * 3 - 0.5).to(device, dtype)
    w = torch.randn(shape[-1], generator=g).to(device, dtype)
    return x, residual, w


def _expected(x, residual, w, eps):
    """(x, residual) after the op: the sum rounded to the dtype, then normalized in float64."""
    summed = (x.double() + residual.double()).to(residual.dtype)
    return rms_norm_reference(summed.double(), w.double(), eps), summed


@pytest.mark.parametrize("backend", backend_params("norm.add_rms"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_add_rms_norm_matches_reference(backend, dtype, shape, device):
    x, residual, w = _inputs(shape, dtype, device, seed=len(shape) * 1000 + shape[-1])
    want_x, want_r = _expected(x, residual, w, 1e-5)
    x_ptr, r_ptr = x.data_ptr(), residual.data_ptr()
    out_x, out_r = infercore.ops.fused_add_rms_norm(x, residual, w, 1e-5, backend=backend)
    assert out_x is x and out_r is residual
    assert x.data_ptr() == x_ptr and residual.data_ptr() == r_ptr
    assert_close(residual, want_r, dtype=dtype)
    assert_close(x, want_x, dtype=dtype)


@pytest.mark.parametrize("backend", backend_params("norm.add_rms", include_reference=True))
def test_fused_add_rms_norm_writes_through_strided_views(backend, device):
    x_base = torch.randn(6, 2, 300, device=device)
    r_base = torch.randn(6, 3, 300, device=device)
    x, residual = x_base[:, 1, :], r_base[:, 2, :]  # row strides 600 and 900
    untouched_x, untouched_r = x_base[:, 0, :].clone(), r_base[:, :2, :].clone()
    w = torch.randn(300, device=device)
    want_x, want_r = _expected(x, residual, w, 1e-6)
    infercore.ops.fused_add_rms_norm(x, residual, w, backend=backend)
    assert_close(x_base[:, 1, :], want_x, dtype=torch.float32)
    assert_close(r_base[:, 2, :], want_r, dtype=torch.float32)
    assert torch.equal(x_base[:, 0, :], untouched_x) and torch.equal(r_base[:, :2, :], untouched_r)


def test_unviewable_rows_fall_back_to_reference(device):
    x = torch.randn(3, 4, 64, device=device).transpose(0, 1)  # [4, 3, 64], rows not collapsible
    residual = torch.randn(4, 3, 64, device=device)
    w = torch.randn(64, device=device)
    want_x, want_r = _expected(x, residual, w, 1e-6)
    if any(b.name == "triton" and not b.environment_reasons()
           for b in infercore.registry.backends("norm.add_rms")):
        with pytest.raises(ValueError, match="x cannot be viewed as"):
            infercore.ops.fused_add_rms_norm(x.clone(), residual.clone(), w, backend="triton")
    infercore.ops.fused_add_rms_norm(x, residual, w)
    assert_close(x, want_x, dtype=torch.float32)
    assert_close(residual, want_r, dtype=torch.float32)


def test_fused_add_rms_norm_handles_empty_batch(device):
    x, r, w = torch.randn(0, 64, device=device), torch.randn(0, 64, device=device), torch.randn(64)
    out_x, out_r = infercore.ops.fused_add_rms_norm(x, r, w.to(device))
    assert out_x.shape == (0, 64) and out_r.shape == (0, 64)


@pytest.mark.parametrize(
    ("x", "r", "w", "eps", "exc", "match"),
    [
        (torch.randn(4, 8), torch.randn(4, 7), torch.randn(8), 1e-6, ValueError,
         "residual must have the shape of x"),
        (torch.randn(4, 8), torch.randn(4, 8, dtype=torch.float16), torch.randn(8), 1e-6,
         TypeError, "residual must have the dtype of x"),
        (torch.randn(4, 8), torch.randn(4, 8), torch.randn(7), 1e-6, ValueError,
         "weight must have shape"),
        (torch.randn(4, 8), torch.randn(4, 8), torch.randn(8), -1.0, ValueError,
         "eps must be a positive"),
        (torch.randn(4, 8), None, torch.randn(8), 1e-6, TypeError,
         "residual must be a torch.Tensor"),
        (torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64),
         torch.randn(8), 1e-6, TypeError, "x must have dtype"),
    ],
)
def test_fused_add_rms_norm_rejects_bad_arguments(x, r, w, eps, exc, match):
    with pytest.raises(exc, match=match):
        infercore.ops.fused_add_rms_norm(x, r, w, eps)


def test_fused_add_rms_norm_under_torch_compile_fullgraph(device):
    x, residual, w = _inputs((3, 5, 64), torch.float32, device, seed=7)
    want_x, want_r = _expected(x, residual, w, 1e-6)

    @torch.compile(fullgraph=True, dynamic=False)
    def f(x, residual, w):
        x, residual = infercore.ops.fused_add_rms_norm(x, residual, w, 1e-6)
        return x * 2 + 1

    out = f(x, residual, w)
    assert_close(out, want_x * 2 + 1, dtype=torch.float32)
    assert_close(x, want_x, dtype=torch.float32)  # the mutation reaches the caller's tensors
    assert_close(residual, want_r, dtype=torch.float32)


def test_custom_op_has_fake_implementation():
    x = torch.randn(2, 3, 16, device="meta", dtype=torch.bfloat16)
    r = torch.randn(2, 3, 16, device="meta", dtype=torch.bfloat16)
    w = torch.randn(16, device="meta", dtype=torch.bfloat16)
    assert torch.ops.infercore.fused_add_rms_norm(x, r, w, 1e-6, "auto") is None
    torch.library.opcheck(
        torch.ops.infercore.fused_add_rms_norm.default,
        (torch.randn(3, 16), torch.randn(3, 16), torch.randn(16), 1e-6, "reference"),
        test_utils=("test_schema", "test_faketensor"),
    )


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(16384, 4096), (7, 5120), (3, 131), (2, 20001)], ids=str)
def test_triton_fused_add_rms_norm_bf16_on_cuda(shape):
    x, residual, w = _inputs(shape, torch.bfloat16, "cuda", seed=shape[0])
    want_x, want_r = _expected(x, residual, w, 1e-6)
    infercore.ops.fused_add_rms_norm(x, residual, w, backend="triton")
    assert_close(residual, want_r, dtype=torch.bfloat16)
    assert_close(x, want_x, dtype=torch.bfloat16)
