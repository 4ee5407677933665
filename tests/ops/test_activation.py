"""silu_and_mul / gelu_and_mul: every registered backend against the reference."""

import math

import pytest
import torch

import infercore
from infercore.ops.activation.reference import act_and_mul_reference
from tests.helpers import assert_close, backend_params, poison

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Last dims 2d: d = 1, 37, 64 (rows packed per program), 1000, 2500 (several column blocks).
SHAPES = [(1, 2), (3, 5, 74), (65, 128), (17, 2000), (2, 5000)]
# (public function, keyword arguments, family, activation name in the reference)
OPS = {
    "silu": (infercore.ops.silu_and_mul, {}, "act.silu_mul", "silu"),
    "gelu": (infercore.ops.gelu_and_mul, {"approximate": "none"}, "act.gelu_mul", "gelu"),
    "gelu_tanh": (infercore.ops.gelu_and_mul, {"approximate": "tanh"}, "act.gelu_mul",
                  "gelu_tanh"),
}
CASES = [
    pytest.param(op, backend.values[0], id=f"{op}-{backend.id}", marks=backend.marks)
    for op, (_, _, family, _) in OPS.items()
    for backend in backend_params(family)
]


def _x(shape, dtype, device, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(shape, generator=g) * 2.5 + 0.25).to(device, dtype)


@pytest.mark.parametrize(("op", "backend"), CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gated_activation_matches_reference(op, backend, dtype, shape, device):
    fn, kwargs, _, activation = OPS[op]
    x = _x(shape, dtype, device, seed=shape[-1] * 7 + len(shape))
    out = poison(torch.empty((*shape[:-1], shape[-1] // 2), dtype=dtype, device=device))
    got = fn(x, out=out, backend=backend, **kwargs)
    assert got is out
    assert_close(out, act_and_mul_reference(x.double(), activation), dtype=dtype)
    fresh = fn(x, backend=backend, **kwargs)
    assert fresh.is_contiguous() and torch.equal(fresh, out)


@pytest.mark.parametrize(("op", "backend"), CASES)
def test_gated_activation_reads_and_writes_strided_views(op, backend, device):
    fn, kwargs, _, activation = OPS[op]
    base = _x((9, 3, 260), torch.float32, device, seed=3)
    x = base[:, 1, :200]  # [9, 200], row stride 780
    out_base = poison(torch.empty(9, 130, device=device))
    out = out_base[:, 10:110]  # [9, 100], row stride 130
    fn(x, out=out, backend=backend, **kwargs)
    assert_close(out_base[:, 10:110], act_and_mul_reference(x.double(), activation),
                 dtype=torch.float32)
    assert out_base[:, :10].isnan().all() and out_base[:, 110:].isnan().all()


@pytest.mark.parametrize("op", list(OPS))
def test_reference_follows_the_gated_formulas(op):
    _, _, _, activation = OPS[op]
    x = _x((4, 3, 2 * 33), torch.float64, "cpu", seed=11)
    a, b = x[..., :33], x[..., 33:]
    if op == "silu":
        g = a / (1 + torch.exp(-a))
    elif op == "gelu":
        g = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    else:
        g = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
    assert_close(act_and_mul_reference(x, activation), g * b, tol=1e-12)


def test_gated_activation_handles_empty_batch(device):
    x = torch.randn(0, 3, 16, device=device)
    assert infercore.ops.silu_and_mul(x).shape == (0, 3, 8)
    assert infercore.ops.gelu_and_mul(x, "tanh").shape == (0, 3, 8)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: infercore.ops.silu_and_mul(torch.randn(4, 7)), ValueError,
         "x must have an even last dim"),
        (lambda: infercore.ops.silu_and_mul(torch.randn(4, 8), out=torch.empty(4, 8)),
         ValueError, r"out must have shape \(4, 4\)"),
        (lambda: infercore.ops.silu_and_mul(torch.randn(4, 8),
                                            out=torch.empty(4, 4, dtype=torch.float16)),
         TypeError, "out must have the dtype of x"),
        (lambda: infercore.ops.gelu_and_mul(torch.randn(4, 8), "erf"), ValueError,
         "approximate must be 'none' or 'tanh'"),
        (lambda: infercore.ops.gelu_and_mul(torch.randn(4, 8, dtype=torch.float64)), TypeError,
         "x must have dtype"),
        (lambda: infercore.ops.silu_and_mul(torch.tensor(1.0)), ValueError,
         "x must have at least 1"),
        (lambda: infercore.ops.silu_and_mul([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
    ],
)
def test_gated_activation_rejects_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_gated_activations_under_torch_compile_fullgraph(device):
    x = _x((3, 5, 64), torch.float32, device, seed=5)

    @torch.compile(fullgraph=True, dynamic=False)
    def f(x):
        return infercore.ops.silu_and_mul(x) + infercore.ops.gelu_and_mul(x, "tanh") * 2

    want = act_and_mul_reference(x, "silu") + act_and_mul_reference(x, "gelu_tanh") * 2
    assert_close(f(x), want, dtype=torch.float32)


def test_custom_ops_have_fake_implementations():
    x = torch.randn(2, 3, 16, device="meta", dtype=torch.bfloat16)
    out = torch.empty(2, 3, 8, device="meta", dtype=torch.bfloat16)
    assert torch.ops.infercore.silu_and_mul(x, out, "auto") is None
    assert torch.ops.infercore.gelu_and_mul(x, out, "tanh", "auto") is None
    args = (torch.randn(3, 16), torch.empty(3, 8))
    tests = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.infercore.silu_and_mul.default, (*args, "reference"),
                          test_utils=tests)
    torch.library.opcheck(torch.ops.infercore.gelu_and_mul.default, (*args, "none", "reference"),
                          test_utils=tests)


@pytest.mark.cuda
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("shape", [(16384, 2 * 14336), (1, 2 * 14336), (7, 2 * 1001)], ids=str)
def test_triton_gated_activation_bf16_on_cuda(op, shape):
    fn, kwargs, _, activation = OPS[op]
    x = _x(shape, torch.bfloat16, "cuda", seed=shape[0])
    out = poison(torch.empty(shape[0], shape[1] // 2, dtype=torch.bfloat16, device="cuda"))
    fn(x, out=out, backend="triton", **kwargs)
    assert_close(out, act_and_mul_reference(x.double(), activation), dtype=torch.bfloat16)
