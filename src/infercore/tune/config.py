"""``TuneConfig``: what ``infercore tune`` tunes, for how long, and where it writes."""

from __future__ import annotations

from pathlib import Path

import pydantic
import torch

from infercore.config import Config

__all__ = ["DTYPES", "TuneConfig"]

#: Accepted spellings of the tuned dtype.
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


class TuneConfig(Config):
    """Settings of a tuning run.

    Attributes
    ----------
    families : list of str
        Families to tune (``gemm``, ``attention.decode``).
    shapes : list of str
        Shape specs: ``M,N,K`` (gemm), ``BATCH,CONTEXT[,HEADS,KV_HEADS,HEAD_DIM]``
        (attention.decode), optionally prefixed ``FAMILY:``.
    model : str, optional
        ``llama-8b`` or a JSON/YAML file with Hugging Face config fields
        (``hidden_size``, ``intermediate_size``, ``num_attention_heads``,
        ``num_key_value_heads``, optional ``head_dim``): the model's layer shapes.
    dtype : str
        ``bf16``, ``fp16`` or ``fp32``.
    budget_s : float
        Seconds for the whole run, shared evenly by the keys (the default candidate of
        each key is always timed).
    warmup, repeats : int
        Calls before timing, and timed calls (median) per candidate.
    flush_l2 : bool
        Overwrite a 256 MiB buffer before each timed call so operands come from memory.
    device : str
        ``cuda`` (default) or ``cpu`` (interpreter/reference paths, tiny shapes only).
    output : Path, optional
        Write the winners here (same format) instead of the user's cache.
    """

    families: list[str] = pydantic.Field(min_length=1)
    shapes: list[str] = pydantic.Field(default_factory=list)
    model: str | None = None
    dtype: str = "bf16"
    budget_s: float = pydantic.Field(600.0, gt=0)
    warmup: int = pydantic.Field(3, ge=0)
    repeats: int = pydantic.Field(20, ge=1)
    flush_l2: bool = True
    device: str = "cuda"
    output: Path | None = None

    @pydantic.field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"must be one of {', '.join(DTYPES)}")
        return value

    @pydantic.field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if torch.device(value).type not in ("cuda", "cpu"):
            raise ValueError("must be a cuda or cpu device")
        return value

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
