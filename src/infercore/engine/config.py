"""EngineConfig and SamplingParams: the engine's settings, validated with readable errors."""

from __future__ import annotations

from typing import Literal, Self

import pydantic

from infercore.config import Config
from infercore.spec.ngram import NgramConfig

__all__ = ["DTYPES", "EngineConfig", "SamplingParams", "SpeculativeConfig"]

#: Names accepted for ``dtype``: ``"auto"`` takes the checkpoint's ``torch_dtype``.
DTYPES = ("auto", "float32", "float16", "bfloat16")


class SamplingParams(Config):
    """How one request is continued.

    Attributes
    ----------
    temperature : float, >= 0
        0 is greedy (the first maximal logit).
    top_k : int
        Keep the ``top_k`` most likely tokens; ``<= 0`` disables.
    top_p : float, in (0, 1]
        Keep the most likely tokens up to mass ``top_p``; 1 disables.
    min_p : float, in [0, 1]
        Keep tokens with probability ``>= min_p`` times the largest; 0 disables.
    max_tokens : int, >= 1
        Most tokens to generate.
    stop_token_ids : list of int
        Generating one of these ends the request (it is kept in the output).
    ignore_eos : bool
        Keep generating past the tokenizer's end-of-sequence token.
    seed : int, optional
        Seeds the request's own random stream: the same seed gives the same tokens
        whatever else is in the batch. Without it the engine's ``seed`` derives one.
    n : int, >= 1
        Independent samples of the prompt; each is its own output, in order.
    """

    temperature: float = pydantic.Field(1.0, ge=0.0, allow_inf_nan=False)
    top_k: int = 0
    top_p: float = pydantic.Field(1.0, gt=0.0, le=1.0)
    min_p: float = pydantic.Field(0.0, ge=0.0, le=1.0)
    max_tokens: int = pydantic.Field(16, ge=1)
    stop_token_ids: list[pydantic.NonNegativeInt] = pydantic.Field(default_factory=list)
    ignore_eos: bool = False
    seed: pydantic.NonNegativeInt | None = None
    n: int = pydantic.Field(1, ge=1)


class SpeculativeConfig(Config):
    """Speculative decoding in the engine.

    Each step, every decoding request gets up to ``num_speculative_tokens`` draft tokens
    from the proposer; the target model scores the request's last token and its drafts in
    one forward, and the verifier emits the accepted drafts plus one target token
    (:func:`infercore.spec.greedy_verify` when every request is greedy, otherwise the
    exact :func:`infercore.spec.rejection_sample`: tokens keep the target's distribution).

    Attributes
    ----------
    method : "ngram" or "draft_model"
        ``ngram``: prompt lookup (drafts copied from the request's own earlier tokens).
        ``draft_model``: a smaller model with the target's vocabulary, run ``k`` steps.
    num_speculative_tokens : int
        Drafts per request and step (``k``); initial default, to be tuned.
    ngram : NgramConfig
        Suffix lengths of the ``ngram`` proposer.
    draft_model : str, optional
        The draft for ``draft_model``: a local Hugging Face directory or ``"tiny-random"``;
        loaded in the engine's dtype on its device, with its own paged KV cache.
    draft_num_blocks : int, optional
        KV-cache blocks of the draft; default as many as the target's cache has.
    """

    method: Literal["ngram", "draft_model"] = "ngram"
    num_speculative_tokens: int = pydantic.Field(4, ge=1)
    ngram: NgramConfig = pydantic.Field(default_factory=NgramConfig)
    draft_model: str | None = None
    draft_num_blocks: int | None = pydantic.Field(None, ge=1)

    @pydantic.model_validator(mode="after")
    def _draft_given(self) -> Self:
        if self.method == "draft_model" and self.draft_model is None:
            raise ValueError("method='draft_model' needs draft_model (a directory or "
                             "'tiny-random')")
        return self


class EngineConfig(Config):
    """Settings of :class:`~infercore.engine.LLM`.

    Attributes
    ----------
    dtype : str
        Weights and activations: ``"auto"`` (the checkpoint's dtype; float32 on CPU
        when that is a 16-bit type), ``"float32"``, ``"float16"`` or ``"bfloat16"``.
    device : str, optional
        ``"cuda"``, ``"cuda:1"``, ``"cpu"``; default CUDA when available.
    seed : int
        Seeds the random weights of ``tiny-random`` and the streams of requests
        without their own seed.
    max_num_seqs : int
        Most requests running at once.
    max_num_batched_tokens : int
        Token budget of one step (decodes take one each, prefill chunks the rest).
    max_model_len : int, optional
        Longest sequence; default the model's ``max_position_embeddings``.
    enable_chunked_prefill : bool
        ``False`` raises the step budget to ``max_model_len`` so that a prompt is
        computed in one step once admitted at the start of a step (the scheduler still
        starts a prompt in the budget a step has left and finishes it in the next).
    enable_prefix_caching : bool
        Reuse cached KV blocks of shared prompt prefixes.
    block_size : int
        Tokens per KV-cache block.
    num_blocks : int, optional
        KV-cache blocks; default sized from ``gpu_memory_utilization`` of free memory
        (CUDA) or ``cpu_kv_cache_bytes`` (CPU).
    gpu_memory_utilization : float
        Fraction of the free device memory, after loading the weights, for the KV cache.
    cpu_kv_cache_bytes : int
        KV-cache budget on CPU.
    cuda_graph : bool
        Capture decode steps in CUDA graphs (CUDA only; eager on CPU).
    cuda_graph_batch_sizes : list of int, optional
        Batch sizes captured; a decode step of ``b`` requests replays the smallest size
        ``>= b``. Default 1, 2, 4, 8 and multiples of 16 up to ``max_num_seqs``.
        Speculative verification steps run eagerly.
    speculative : SpeculativeConfig, optional
        Speculative decoding; off when ``None``.
    tensor_parallel_size : int
        Ranks the weights are split over. Above 1 the engine runs under a launcher
        (``python -m infercore.comm.launch -n N``, or ``torchrun``) with one process per
        rank, each calling the same ``LLM(...)`` and ``generate(...)``; the default 1
        also follows an initialized ``torch.distributed`` world of several ranks.
    """

    dtype: str = "auto"
    device: str | None = None
    seed: int = 0
    max_num_seqs: int = pydantic.Field(256, ge=1)
    max_num_batched_tokens: int = pydantic.Field(8192, ge=1)
    max_model_len: int | None = pydantic.Field(None, ge=1)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    block_size: int = pydantic.Field(16, ge=1, le=1024)
    num_blocks: int | None = pydantic.Field(None, ge=1)
    gpu_memory_utilization: float = pydantic.Field(0.85, gt=0.0, le=1.0)
    cpu_kv_cache_bytes: int = pydantic.Field(1 << 28, ge=1)
    cuda_graph: bool = True
    cuda_graph_batch_sizes: list[pydantic.PositiveInt] | None = None
    speculative: SpeculativeConfig | None = None
    tensor_parallel_size: int = pydantic.Field(1, ge=1)

    @pydantic.field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        value = value.removeprefix("torch.")
        if value not in DTYPES:
            raise ValueError(f"must be one of {', '.join(DTYPES)}")
        return value

    @pydantic.model_validator(mode="after")
    def _budget_fits(self) -> Self:
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens={self.max_num_batched_tokens} must be >= "
                f"max_num_seqs={self.max_num_seqs} (every running request decodes each step)"
            )
        return self

    def graph_batch_sizes(self) -> list[int]:
        """The decode batch sizes to capture, ascending, at most ``max_num_seqs``."""
        sizes = self.cuda_graph_batch_sizes
        if sizes is None:
            sizes = [1, 2, 4, 8, *range(16, self.max_num_seqs + 1, 16)]
        top = self.max_num_seqs
        return sorted({min(s, top) for s in sizes} | {top})
