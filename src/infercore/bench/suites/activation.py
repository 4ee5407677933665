"""silu_and_mul / gelu_and_mul against torch eager, torch.compile and liger-kernel.

Shapes are a Llama-3-8B MLP (hidden 4096, intermediate 14336): ``x [tokens, 2 * 14336]``
is the fused gate/up projection. liger takes the gate and up halves as two contiguous
tensors (separate projections, as in its SwiGLU / GeGLU MLPs), prepared outside the
timed call; liger has no erf-GELU, so that case is compared with torch.compile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from infercore.bench import Case, suite
from infercore.bench.compare import check_close
from infercore.ops.activation import gelu_and_mul, silu_and_mul
from infercore.ops.activation.reference import act_and_mul_reference

TOKENS = (1, 16, 256, 4096, 16384)
INTERMEDIATE = 14336


def _silu_mul_torch(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


def _gelu_mul_torch(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return F.gelu(x[..., :d]) * x[..., d:]


def _gelu_tanh_mul_torch(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return F.gelu(x[..., :d], approximate="tanh") * x[..., d:]


def _liger(activation: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    try:
        if activation == "silu":
            from liger_kernel.ops.swiglu import LigerSiLUMulFunction as fn
        elif activation == "gelu_tanh":
            from liger_kernel.ops.geglu import LigerGELUMulFunction as fn
        else:
            return None
    except ImportError:
        return None
    return lambda a, b: fn.apply(a, b)


# activation name -> (infercore call, torch formula)
_OPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable]] = {
    "silu": (silu_and_mul, _silu_mul_torch),
    "gelu": (gelu_and_mul, _gelu_mul_torch),
    "gelu_tanh": (lambda x: gelu_and_mul(x, "tanh"), _gelu_tanh_mul_torch),
}


@suite("activation", "silu_and_mul / gelu_and_mul, bf16, d 14336: bytes = read x [T, 2d] + "
       "write [T, d]")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    for activation, (ours, formula) in _OPS.items():
        compiled = torch.compile(formula, dynamic=False)
        liger = _liger(activation)
        for tokens in (16384,) if quick else TOKENS:
            x = torch.randn(tokens, 2 * INTERMEDIATE, device=device, dtype=torch.bfloat16)
            impls = {
                "infercore": lambda ours=ours, x=x: ours(x),
                "torch.eager": lambda formula=formula, x=x: formula(x),
                "torch.compile": lambda compiled=compiled, x=x: compiled(x),
            }
            if liger is not None:
                a, b = x[:, :INTERMEDIATE].contiguous(), x[:, INTERMEDIATE:].contiguous()
                impls["liger"] = lambda liger=liger, a=a, b=b: liger(a, b)

            def check(ours=ours, activation=activation, x=x) -> None:
                check_close(f"{activation} {tuple(x.shape)}", ours(x),
                            act_and_mul_reference(x.double(), activation), 1e-2)

            nbytes = 3 * tokens * INTERMEDIATE * x.element_size()
            peer = "liger" if "liger" in impls else "torch.compile"
            yield Case(f"{activation} {tokens}x{INTERMEDIATE} bf16", impls, peer=peer,
                       bytes=nbytes, check=check)
