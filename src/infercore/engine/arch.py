"""The Llama-family architectures the engine runs, read from a ``config.json``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SUPPORTED_ARCHITECTURES", "ModelArgs"]

#: ``architectures`` values of ``config.json`` -> (qkv bias by default, q/k head norms).
SUPPORTED_ARCHITECTURES: dict[str, tuple[bool, bool]] = {
    "LlamaForCausalLM": (False, False),
    "MistralForCausalLM": (False, False),
    "Qwen2ForCausalLM": (True, False),
    "Qwen3ForCausalLM": (False, True),
}


@dataclass(frozen=True)
class ModelArgs:
    """Dimensions and switches of one decoder-only Llama-family model.

    ``hf_config`` keeps the parsed ``config.json`` (rotary scaling is read from it).
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str | None = None
    hf_config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], *, source: str = "config.json"
                       ) -> ModelArgs:
        """Parse a Hugging Face ``config.json`` (as a dict).

        Raises
        ------
        ValueError
            The ``architectures`` value is not a supported one (the message names both),
            or a required field is missing.
        """
        archs = list(config.get("architectures") or [])
        known = [a for a in archs if a in SUPPORTED_ARCHITECTURES]
        if not known:
            raise ValueError(
                f"{source}: architectures={archs!r} is not supported; the engine runs "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        arch = known[0]
        default_bias, qk_norm = SUPPORTED_ARCHITECTURES[arch]

        def need(key: str) -> Any:
            if config.get(key) is None:
                raise ValueError(f"{source}: {arch} needs the field {key!r}, which is missing")
            return config[key]

        heads = int(need("num_attention_heads"))
        hidden = int(need("hidden_size"))
        eos = config.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        window = config.get("sliding_window")
        if arch.startswith("Qwen") and not config.get("use_sliding_window", False):
            window = None
        return cls(
            architecture=arch,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", default_bias)),
            qk_norm=qk_norm,
            sliding_window=int(window) if window else None,
            eos_token_ids=eos_ids,
            torch_dtype=config.get("torch_dtype") or config.get("dtype"),
            hf_config=dict(config),
        )
