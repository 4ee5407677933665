"""rms_norm: every registered backend against the reference."""

import pytest
import torch

import infercore
from infercore.ops.norm.reference import rms_norm_reference
from tests.helpers import assert_close, backend_params

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 7), (3, 5, 129), (17, 1000), (2, 3, 4, 96), (5, 4096), (2, 20001)]


@pytest.mark.parametrize("backend", backend_params("norm.rms"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rms_norm_matches_reference(backend, dtype, shape, device):
    torch.manual_seed(hash((shape, str(dtype))) % 2**31)
    x = torch.randn(shape, device=device, dtype=dtype) * 3 + 0.5
    w = torch.randn(shape[-1], device=device, dtype=dtype)
    out = infercore.ops.rms_norm(x, w, 1e-5, backend=backend)
    ref = rms_norm_reference(x.double(), w.double(), 1e-5)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close(out, ref, dtype=dtype)


@pytest.mark.parametrize("backend", backend_params("norm.rms"))
def test_rms_norm_writes_every_element_of_strided_input(backend, device):
    base = torch.randn(6, 2, 300, device=device)
    x = base[:, 1, :]  # row stride 600: not contiguous
    w = torch.randn(300, device=device)
    out = infercore.ops.rms_norm(x, w, backend=backend)
    assert_close(out, rms_norm_reference(x.double(), w.double(), 1e-6), dtype=torch.float32)


def test_rms_norm_handles_empty_batch(device):
    x = torch.randn(0, 64, device=device)
    w = torch.randn(64, device=device)
    assert infercore.ops.rms_norm(x, w).shape == (0, 64)


@pytest.mark.parametrize(
    ("x", "w", "eps", "exc", "match"),
    [
        (torch.randn(4, 8), torch.randn(7), 1e-6, ValueError, "weight must have shape"),
        (torch.randn(4, 8).double(), torch.randn(8), 1e-6, TypeError, "x must have dtype"),
        (torch.randn(4, 8), torch.randn(8), 0.0, ValueError, "eps must be a positive"),
        ([1.0, 2.0], torch.randn(2), 1e-6, TypeError, "x must be a torch.Tensor"),
        (torch.randn(4, 8), torch.randn(8, 1), 1e-6, ValueError, "weight must have 1"),
    ],
)
def test_rms_norm_rejects_bad_arguments(x, w, eps, exc, match):
    with pytest.raises(exc, match=match):
        infercore.ops.rms_norm(x, w, eps)


def test_rms_norm_under_torch_compile_fullgraph(device):
    x = torch.randn(3, 5, 64, device=device)
    w = torch.randn(64, device=device)

    @torch.compile(fullgraph=True, dynamic=False)
    def f(x, w):
        return infercore.ops.rms_norm(x, w, 1e-6) * 2 + 1

    expected = rms_norm_reference(x.double(), w.double(), 1e-6) * 2 + 1
    assert_close(f(x, w), expected, dtype=torch.float32)


def test_custom_op_has_fake_implementation():
    x = torch.randn(2, 3, 16, device="meta", dtype=torch.bfloat16)
    w = torch.randn(16, device="meta", dtype=torch.bfloat16)
    out = torch.ops.infercore.rms_norm(x, w, 1e-6, "auto")
    assert out.shape == x.shape and out.dtype == torch.bfloat16 and out.device.type == "meta"


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(16384, 4096), (7, 5120), (3, 131)], ids=str)
def test_triton_rms_norm_bf16_on_cuda(shape):
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(shape[-1], device="cuda", dtype=torch.bfloat16)
    out = infercore.ops.rms_norm(x, w, backend="triton")
    assert_close(out, rms_norm_reference(x.double(), w.double(), 1e-6), dtype=torch.bfloat16)
