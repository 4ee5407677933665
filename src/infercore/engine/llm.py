"""LLM: the reference engine's entry point.

A step is ``Scheduler.schedule()`` -> :class:`ModelRunner` (batch tensors, model,
sampling) -> ``Scheduler.update()``; the scheduler and the paged KV cache are the
registry's components, so prefix caching and chunked prefill are switched by
:class:`EngineConfig`. With ``EngineConfig(speculative=...)`` a step first drafts tokens
for the decoding requests and verifies them in the same forward
(:mod:`infercore.engine.spec`). Under several ranks (``tensor_parallel_size``) the
weights are split over them (:mod:`infercore.engine.parallel`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from infercore.cache import KVCacheConfig, KVCacheLayout, KVCacheManager
from infercore.engine.arch import ModelArgs
from infercore.engine.config import EngineConfig, SamplingParams
from infercore.engine.loader import load_config, load_weights
from infercore.engine.model import LlamaModel, ModelWeights
from infercore.engine.outputs import RequestOutput, StreamChunk
from infercore.engine.parallel import (
    ParallelLlamaModel,
    agree_num_blocks,
    broadcast_tokens,
    shard_args,
    shard_weights,
    tensor_parallel_communicator,
)
from infercore.engine.runner import ModelRunner, step_seed
from infercore.engine.spec import Speculator
from infercore.engine.tiny import TINY_RANDOM, tiny_random_args, tiny_random_weights
from infercore.engine.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer
from infercore.sched import Request, Scheduler, SchedulerConfig
from infercore.spec import AcceptanceStats

__all__ = ["LLM", "Prompt"]

#: A prompt: text (needs a tokenizer) or token ids.
Prompt = str | Sequence[int]


def _torch_dtype(name: str, checkpoint: str | None, device: torch.device) -> torch.dtype:
    if name == "auto":
        name = str(checkpoint or ("bfloat16" if device.type == "cuda" else "float32"))
        name = name.removeprefix("torch.")
        if device.type == "cpu" and name in ("float16", "bfloat16"):
            name = "float32"
    return getattr(torch, name)


@dataclass
class _Live:
    """A running request: its output, settings, seed and streaming state."""

    output: RequestOutput
    params: SamplingParams
    seed: int
    request: Request
    num_emitted_tokens: int = 0
    num_emitted_chars: int = 0


class LLM:
    """Generate with a Llama-family model over infercore's components.

    Parameters
    ----------
    model : str, Path or ModelArgs
        A local Hugging Face directory (``config.json``, safetensors weights, optionally a
        tokenizer), ``"tiny-random"`` (a small random Llama with a byte tokenizer), or the
        :class:`ModelArgs` of ``weights``.
    dtype : str, optional
        Overrides ``config.dtype``: ``"auto"``, ``"float32"``, ``"float16"``,
        ``"bfloat16"``.
    config : EngineConfig, optional
    tokenizer : Tokenizer, optional
        Overrides the directory's tokenizer.
    weights : ModelWeights, optional
        Weights already built for the model, on one device, of the engine's dtype (the
        directory's safetensors are then not read; benchmarks share a peer's tensors
        this way).

    Examples
    --------
    >>> llm = LLM("tiny-random")
    >>> [out] = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=8))
    >>> len(out.token_ids), out.finish_reason
    (8, 'length')
    """

    def __init__(
        self,
        model: str | Path | ModelArgs = TINY_RANDOM,
        *,
        dtype: str | None = None,
        config: EngineConfig | None = None,
        tokenizer: Tokenizer | None = None,
        weights: ModelWeights | None = None,
    ) -> None:
        config = config if config is not None else EngineConfig()
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, got {type(config).__name__}")
        if dtype is not None:
            config = EngineConfig(**{**config.model_dump(), "dtype": dtype})
        self.config = config
        self.comm = tensor_parallel_communicator(config.tensor_parallel_size, config.device)
        if self.comm is not None:
            device = torch.device(self.comm.device)
        else:
            device = torch.device(config.device or ("cuda" if torch.cuda.is_available()
                                                    else "cpu"))
        self.tokenizer: Tokenizer | None = None
        if isinstance(model, ModelArgs):
            if weights is None:
                raise ValueError("a model given as ModelArgs needs its weights=")
            args = model
        elif str(model) == TINY_RANDOM:
            args = tiny_random_args()
            self.tokenizer = ByteTokenizer()
        else:
            args = load_config(model)
            self.tokenizer = load_tokenizer(model)
        if tokenizer is not None:
            self.tokenizer = tokenizer
        self.dtype = _torch_dtype(config.dtype, args.torch_dtype, device)
        # Under tensor parallelism each rank reads the whole checkpoint on the CPU and
        # keeps its shard.
        load_on = device if self.comm is None else torch.device("cpu")
        if weights is None:
            if str(model) == TINY_RANDOM:
                weights = tiny_random_weights(args, seed=config.seed, dtype=self.dtype,
                                              device=load_on)
            else:
                weights = load_weights(model, args, dtype=self.dtype, device=load_on)
        self.args: ModelArgs = args
        if self.comm is None:
            self.model = LlamaModel(args, weights)
        else:
            ws, rank = self.comm.world_size, self.comm.rank
            self.model = ParallelLlamaModel(
                shard_args(args, ws), shard_weights(args, weights, ws, rank, device),
                self.comm, args.vocab_size)
        self.device = self.model.device
        self.max_model_len = self._max_model_len(config, args)
        budget = config.max_num_batched_tokens
        if not config.enable_chunked_prefill:
            budget = max(budget, self.max_model_len)
        self.cache = self._kv_cache(config.num_blocks)
        if self.comm is not None and config.num_blocks is None:
            agreed = agree_num_blocks(self.comm, self.cache.num_blocks)
            if agreed != self.cache.num_blocks:
                self.cache = self._kv_cache(agreed)
        self.scheduler = Scheduler(
            SchedulerConfig(max_num_seqs=config.max_num_seqs, max_num_batched_tokens=budget,
                            max_model_len=self.max_model_len),
            self.cache,
        )
        graphs = config.graph_batch_sizes() if config.cuda_graph else None
        self.runner = ModelRunner(
            self.model, self.cache, max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=budget, max_model_len=self.max_model_len,
            graph_batch_sizes=graphs,
        )
        self.speculator = self._speculator(config, args) if config.speculative else None
        eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        self.eos_token_ids = set(args.eos_token_ids) | ({eos} if eos is not None else set())
        self._live: dict[str, _Live] = {}
        self._ids = itertools.count()

    def _kv_cache(self, num_blocks: int | None) -> KVCacheManager:
        """The paged KV cache of the model's (the rank's) KV heads."""
        config, a = self.config, self.model.args
        return KVCacheManager(
            KVCacheConfig(
                block_size=config.block_size,
                num_blocks=num_blocks,
                max_memory_bytes=config.cpu_kv_cache_bytes if self.device.type == "cpu" else None,
                gpu_memory_utilization=config.gpu_memory_utilization,
                enable_prefix_caching=config.enable_prefix_caching,
            ),
            KVCacheLayout(a.num_layers, a.num_kv_heads, a.head_dim, self.dtype),
            device=self.device,
        )

    def _speculator(self, config: EngineConfig, args: ModelArgs) -> Speculator:
        spec = config.speculative
        assert spec is not None
        draft = None
        if spec.method == "draft_model":
            name = spec.draft_model
            draft_args = tiny_random_args() if name == TINY_RANDOM else load_config(name)
            if name == TINY_RANDOM:
                weights = tiny_random_weights(draft_args, seed=config.seed, dtype=self.dtype,
                                              device=self.device)
            else:
                weights = load_weights(name, draft_args, dtype=self.dtype, device=self.device)
            draft = LlamaModel(draft_args, weights)
        return Speculator(spec, args.vocab_size, draft=draft, block_size=config.block_size,
                          num_blocks=spec.draft_num_blocks or self.cache.num_blocks)

    @property
    def stats(self) -> AcceptanceStats | None:
        """Acceptance statistics of speculative decoding (``None`` when it is off):
        ``stats.total.acceptance_rate``, ``stats.summary()``, ``stats[request_id]`` for
        running requests."""
        return self.speculator.stats if self.speculator is not None else None

    @staticmethod
    def _max_model_len(config: EngineConfig, args: ModelArgs) -> int:
        limit = args.max_position_embeddings
        if config.max_model_len is None:
            return limit
        if config.max_model_len > limit:
            raise ValueError(
                f"EngineConfig.max_model_len={config.max_model_len} exceeds the model's "
                f"max_position_embeddings={limit}"
            )
        return config.max_model_len

    # -- requests -------------------------------------------------------------------------

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("the model directory has no tokenizer: pass token-id lists")
            return self.tokenizer.encode(prompt)
        ids = list(prompt)
        vocab = self.args.vocab_size
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
                raise ValueError(f"token id {t!r} is not an int in [0, {vocab})")
        return ids

    def add_request(self, prompt: Prompt, params: SamplingParams | None = None, *,
                    index: int = 0) -> list[RequestOutput]:
        """Queue ``params.n`` requests continuing ``prompt``; return their outputs, filled
        as the engine steps. A request that cannot run is returned finished with
        ``finish_reason`` ``"length_exceeded"`` or ``"error"`` and a message."""
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        if not isinstance(prompt, str | Sequence):
            raise TypeError(f"a prompt is a str or a sequence of token ids, got "
                            f"{type(prompt).__name__}")
        outputs = []
        for sample in range(params.n):
            rid = f"req-{next(self._ids)}"
            out = RequestOutput(rid, index, prompt if isinstance(prompt, str) else None, [])
            outputs.append(out)
            try:
                ids = self._encode(prompt)
                out.prompt_token_ids = ids
                stop = set(params.stop_token_ids)
                if not params.ignore_eos:
                    stop |= self.eos_token_ids
                req = Request(rid, ids, max_tokens=params.max_tokens, stop_token_ids=stop)
                self.scheduler.add(req)
            except ValueError as err:
                length = "longer than" in str(err) or "does not fit" in str(err)
                out.finish_reason = "length_exceeded" if length else "error"
                out.error = str(err)
                continue
            base = params.seed if params.seed is not None else step_seed(self.config.seed,
                                                                         int(rid[4:]))
            self._live[rid] = _Live(out, params, base + sample, req)
        return outputs

    def _submit(self, prompts: Prompt | Sequence[Prompt],
                params: SamplingParams | Sequence[SamplingParams] | None
                ) -> list[RequestOutput]:
        if isinstance(prompts, str) or (
            isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        prompts = list(prompts)
        if params is None or isinstance(params, SamplingParams):
            per_prompt = [params] * len(prompts)
        else:
            per_prompt = list(params)
            if len(per_prompt) != len(prompts):
                raise ValueError(f"sampling_params has {len(per_prompt)} entries for "
                                 f"{len(prompts)} prompts")
        outputs: list[RequestOutput] = []
        for i, (prompt, p) in enumerate(zip(prompts, per_prompt, strict=True)):
            outputs.extend(self.add_request(prompt, p, index=i))
        return outputs

    # -- stepping -------------------------------------------------------------------------

    @property
    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests

    def step(self) -> list[_Live]:
        """Run one scheduler step; return the requests that got new tokens."""
        live = self._live
        drafts = None
        if self.speculator is not None:
            decoding = self.scheduler.decoding
            drafts = self.speculator.propose(
                decoding, [live[r.request_id].params for r in decoding])
        out = self.scheduler.schedule(drafts)
        if out.num_requests == 0:
            raise RuntimeError(f"the scheduler found no work for its unfinished requests "
                               f"({self.scheduler!r})")
        tracked = [live[r.request_id] for r in out.requests]
        params = [t.params for t in tracked]
        seeds = None
        if any(p.temperature > 0 for p in params):
            seeds = [step_seed(t.seed, t.request.num_tokens) for t in tracked]
        if out.num_spec_tokens:
            assert self.speculator is not None
            logits = self.runner.verify_logits(out)
            tokens = self.speculator.verify(logits, out, params, seeds)
        else:
            tokens = self.runner.sample(self.runner.logits(out), params, seeds)
        if self.comm is not None:
            tokens = broadcast_tokens(self.comm, tokens, 1 + max(out.num_draft_tokens, default=0))
        self.scheduler.update(out, tokens)
        changed = []
        for t in tracked:
            req = t.request
            if req.num_tokens > req.num_prompt_tokens + t.num_emitted_tokens or req.is_finished:
                changed.append(t)
            if req.is_finished:
                self._finish(t)
        return changed

    def _finish(self, t: _Live) -> None:
        req = t.request
        t.output.token_ids = req.output_token_ids
        t.output.finish_reason = req.finish_reason.value if req.finish_reason else "abort"
        if self.tokenizer is not None:
            t.output.text = self.tokenizer.decode(t.output.token_ids)
        del self._live[req.request_id]
        if self.speculator is not None:
            self.speculator.stats.remove(req.request_id)

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        on_finish: Callable[[RequestOutput], object] | None = None,
    ) -> list[RequestOutput]:
        """Continue every prompt; return the outputs in prompt order.

        Parameters
        ----------
        prompts : str, token-id list, or a list of them
        sampling_params : SamplingParams, or one per prompt; default ``SamplingParams()``
        on_finish : callable, optional
            Called with each :class:`RequestOutput` as it finishes (progress bars).

        Returns
        -------
        list of RequestOutput
            ``n`` per prompt, consecutive, in prompt order.
        """
        outputs = self._submit(prompts, sampling_params)
        if on_finish is not None:
            for o in outputs:
                if o.finished:
                    on_finish(o)
        while self.has_unfinished_requests:
            for t in self.step():
                if on_finish is not None and t.output.finished:
                    on_finish(t.output)
        return outputs

    def stream(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> Iterator[StreamChunk]:
        """Continue every prompt, yielding each request's new tokens after every step.

        Chunks carry the output's index (as in :meth:`generate`'s result); a request's
        last chunk has its ``finish_reason``. Failed requests yield one chunk at once.
        """
        outputs = self._submit(prompts, sampling_params)
        index = {id(o): i for i, o in enumerate(outputs)}
        for o in outputs:
            if o.finished:
                yield StreamChunk(index[id(o)], [], "", o.finish_reason, o)
        while self.has_unfinished_requests:
            for t in self.step():
                yield self._chunk(t, index[id(t.output)])

    def _chunk(self, t: _Live, index: int) -> StreamChunk:
        tokens = t.request.output_token_ids
        new = tokens[t.num_emitted_tokens :]
        t.num_emitted_tokens = len(tokens)
        text = ""
        if self.tokenizer is not None:
            full = t.output.text if t.output.finished else self.tokenizer.decode(tokens)
            stable = full if t.output.finished else full.rstrip("\ufffd")
            text = stable[t.num_emitted_chars :]
            t.num_emitted_chars = max(t.num_emitted_chars, len(stable))
        return StreamChunk(index, new, text, t.output.finish_reason, t.output)
