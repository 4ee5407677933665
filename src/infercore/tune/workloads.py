"""What ``infercore tune`` times: problems built from shape specs or a model's layers.

A *workload* is a family and a shape; :meth:`Workload.build` makes random inputs on a
device and returns a :class:`Problem`, whose ``call(backend, config)`` runs one backend
(with a launch configuration, or its default for ``None``) into the problem's output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MODELS",
    "DecodeWorkload",
    "GemmWorkload",
    "Problem",
    "Workload",
    "model_dims",
    "model_workloads",
    "parse_shape",
]

#: Hugging Face config fields of the models ``--model-config`` knows by name.
MODELS: dict[str, dict[str, int]] = {
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128),
}
#: Token counts (GEMM M) tuned for a model: decode, small batch, chunk, prefill.
MODEL_GEMM_M = (1, 16, 128, 2048)
#: Decode batch sizes and context lengths tuned for a model.
MODEL_DECODE_BATCH = (1, 8, 32, 128)
MODEL_DECODE_CONTEXT = (1024, 4096, 16384)
#: Paged-cache block size of the decode problems.
DECODE_PAGE = 16
#: Families with workloads here.
TUNABLE = ("gemm", "attention.decode")


@dataclass
class Problem:
    """Inputs of one family on a device and how to run a backend on them."""

    inputs: Any
    output: torch.Tensor
    call: Callable[[Any, Any], None]


def _kwargs(config: Any) -> dict[str, Any]:
    return {} if config is None else {"config": config}


@dataclass(frozen=True)
class GemmWorkload:
    """``out[M, N] = a[M, K] @ w[N, K].t()``: a linear layer (``b`` is a K-major view)."""

    m: int
    n: int
    k: int
    name: str = ""
    family: str = "gemm"

    @property
    def label(self) -> str:
        return f"{self.name + ' ' if self.name else ''}M={self.m} N={self.n} K={self.k}"

    @property
    def work(self) -> int:
        return self.m * self.n * self.k

    def build(self, device: torch.device, dtype: torch.dtype) -> Problem:
        from infercore.ops.gemm import GemmInputs

        a = torch.randn(self.m, self.k, device=device, dtype=dtype)
        b = torch.randn(self.n, self.k, device=device, dtype=dtype).t()
        out = torch.empty(self.m, self.n, device=device, dtype=dtype)

        def call(backend: Any, config: Any) -> None:
            backend.run(a, b, None, out, **_kwargs(config))

        return Problem(GemmInputs(a, b, None, out), out, call)


@dataclass(frozen=True)
class DecodeWorkload:
    """Paged decode: ``batch`` sequences of ``context`` cached tokens, blocks scattered."""

    batch: int
    context: int
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    family: str = "attention.decode"

    @property
    def label(self) -> str:
        return (f"batch={self.batch} ctx={self.context} heads={self.heads}/{self.kv_heads} "
                f"d={self.head_dim}")

    @property
    def work(self) -> int:
        return self.batch * self.context * self.heads * self.head_dim

    def build(self, device: torch.device, dtype: torch.dtype) -> Problem:
        from infercore.bench.suites.attention_common import paged_setup
        from infercore.ops.attention.inputs import PagedInputs

        s = paged_setup([self.context] * self.batch, [1] * self.batch, num_heads=self.heads,
                        num_kv_heads=self.kv_heads, head_dim=self.head_dim,
                        block_size=DECODE_PAGE, dtype=dtype, device=device)
        out = torch.empty_like(s.q)
        scale = self.head_dim**-0.5

        def call(backend: Any, config: Any) -> None:
            backend.run(s.q, *s.cache_args, scale=scale, sliding_window=None, softcap=None,
                        k_scale=None, v_scale=None, num_splits=None, out=out, lse=None,
                        **_kwargs(config))

        inputs = PagedInputs(s.q, s.k_cache, s.v_cache, True, None, None, s.block_tables)
        return Problem(inputs, out, call)


Workload = GemmWorkload | DecodeWorkload


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"shape {text!r}: {what} must be comma-separated integers") from None
    if any(v <= 0 for v in values):
        raise ValueError(f"shape {text!r}: sizes must be positive")
    return values


def parse_shape(family: str, spec: str) -> Workload | None:
    """The workload of ``spec`` for ``family``, ``None`` when ``spec`` has another arity
    (a spec without a ``FAMILY:`` prefix applies to every family it fits)."""
    if family == "gemm":
        values = _ints(spec, "M,N,K")
        return GemmWorkload(*values) if len(values) == 3 else None
    if family == "attention.decode":
        values = _ints(spec, "BATCH,CONTEXT[,HEADS,KV_HEADS,HEAD_DIM]")
        if len(values) not in (2, 5):
            return None
        w = DecodeWorkload(*values)
        if w.heads % w.kv_heads:
            raise ValueError(f"shape {spec!r}: heads {w.heads} not a multiple of kv heads "
                             f"{w.kv_heads}")
        return w
    raise ValueError(f"family {family!r} has no tuning workload; tunable: {', '.join(TUNABLE)}")


def model_dims(model: str) -> dict[str, int]:
    """Layer dimensions of a named model or of a JSON/YAML Hugging Face config file."""
    if model in MODELS:
        return MODELS[model]
    path = Path(model)
    if not path.is_file():
        raise ValueError(f"model {model!r}: not a known name ({', '.join(MODELS)}) nor a file")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text())
    else:
        import json

        data = json.loads(path.read_text())
    need = ("hidden_size", "intermediate_size", "num_attention_heads")
    missing = [k for k in need if k not in data]
    if missing:
        raise ValueError(f"model config {path}: missing {', '.join(missing)}")
    heads = int(data["num_attention_heads"])
    return dict(hidden_size=int(data["hidden_size"]),
                intermediate_size=int(data["intermediate_size"]), num_attention_heads=heads,
                num_key_value_heads=int(data.get("num_key_value_heads") or heads),
                head_dim=int(data.get("head_dim") or data["hidden_size"] // heads))


def model_workloads(family: str, dims: dict[str, int]) -> list[Workload]:
    """The layer shapes of a model for ``family``: its four linear layers at
    :data:`MODEL_GEMM_M` tokens, or decode at :data:`MODEL_DECODE_BATCH` x
    :data:`MODEL_DECODE_CONTEXT`."""
    hidden, inter = dims["hidden_size"], dims["intermediate_size"]
    heads, kv, d = dims["num_attention_heads"], dims["num_key_value_heads"], dims["head_dim"]
    if family == "gemm":
        layers = [("qkv", (heads + 2 * kv) * d, hidden), ("o", hidden, heads * d),
                  ("gate_up", 2 * inter, hidden), ("down", hidden, inter)]
        return [GemmWorkload(m, n, k, name) for m in MODEL_GEMM_M for name, n, k in layers]
    if family == "attention.decode":
        return [DecodeWorkload(b, c, heads, kv, d)
                for b in MODEL_DECODE_BATCH for c in MODEL_DECODE_CONTEXT]
    raise ValueError(f"family {family!r} has no tuning workload; tunable: {', '.join(TUNABLE)}")
