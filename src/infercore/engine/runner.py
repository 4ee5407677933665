"""ModelRunner: one scheduler step on the model.

It turns a :class:`~infercore.sched.SchedulerOutput` into device tensors (NumPy arrays
copied once), plans paged attention once for the step, runs the model and samples one
token per request with :func:`infercore.ops.sample`. On CUDA, decode-only steps replay a
CUDA graph captured for the smallest batch size that holds them (inputs padded with
skipped slots), unless a backend the decode step dispatches to cannot be captured
(:attr:`~infercore.registry.Backend.graph_safe`; a warning names it); prefill and mixed
steps, speculative verification steps (several query tokens per decode,
:meth:`ModelRunner.verify_logits`) and every step on CPU run eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from infercore import ops
from infercore.cache import KVCacheManager
from infercore.engine.config import SamplingParams
from infercore.engine.model import LlamaModel
from infercore.ops.attention import PagedAttentionWrapper
from infercore.registry import record_resolutions
from infercore.sched import BatchArrays, SchedulerOutput

__all__ = ["ModelRunner", "step_seed"]

log = logging.getLogger(__name__)

_SEED_MASK = (1 << 63) - 1


def step_seed(request_seed: int, num_tokens: int) -> int:
    """The sampling seed of a request's step: a function of the request's seed and its
    token count only, so a seeded request draws the same tokens in any batch."""
    x = (request_seed * 0x9E3779B97F4A7C15 + num_tokens * 0xBF58476D1CE4E5B9) & _SEED_MASK
    return (x ^ (x >> 29)) & _SEED_MASK


@dataclass
class _DecodeGraph:
    """A captured decode step of ``batch`` requests and its static buffers."""

    batch: int
    wrapper: PagedAttentionWrapper
    graph: torch.cuda.CUDAGraph
    host: torch.Tensor  # pinned int64 [3, batch]: input_ids, positions, slot_mapping
    inputs: torch.Tensor  # the same on the device
    logits: torch.Tensor  # [batch, vocab]


class ModelRunner:
    """Runs scheduler steps on a :class:`LlamaModel` over ``cache``'s KV tensors.

    Parameters
    ----------
    model : LlamaModel
    cache : KVCacheManager
        Built with the model's :class:`~infercore.cache.KVCacheLayout` on its device.
    max_num_seqs, max_num_batched_tokens, max_model_len : int
        The scheduler's limits (they size the attention buffers).
    graph_batch_sizes : sequence of int, optional
        Decode batch sizes to capture in CUDA graphs (CUDA only); ``None`` runs eagerly,
        as do backends that are not graph-safe (with a warning).
    """

    def __init__(
        self,
        model: LlamaModel,
        cache: KVCacheManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        graph_batch_sizes: Sequence[int] | None = None,
    ) -> None:
        self.model = model
        self.cache = cache
        self.device = model.device
        model.kv_caches = cache.kv_caches
        self.block_size = cache.block_size
        self.max_blocks_per_seq = -(-(max_model_len + 1) // self.block_size)
        self.eager = self._wrapper(max_num_seqs, max_num_batched_tokens, cuda_graph=False)
        self.graphs: dict[int, _DecodeGraph] = {}
        self._graph_for: list[int] = []  # batch size -> captured size (index = batch)
        if graph_batch_sizes and self.device.type == "cuda":
            self._capture(sorted(set(graph_batch_sizes)))

    def _wrapper(self, max_batch: int, max_tokens: int, *, cuda_graph: bool
                 ) -> PagedAttentionWrapper:
        a = self.model.args
        k_cache = self.model.kv_caches[0][0]
        return PagedAttentionWrapper(
            a.num_heads, a.num_kv_heads, a.head_dim, self.block_size, max_batch=max_batch,
            max_tokens=max_tokens, max_blocks_per_seq=self.max_blocks_per_seq,
            dtype=self.model.dtype, kv_dtype=k_cache.dtype, device=self.device,
            cuda_graph=cuda_graph, num_blocks=self.cache.num_blocks,
        )

    # -- CUDA graphs ----------------------------------------------------------------------

    def _capture(self, sizes: list[int]) -> None:
        """Capture one decode graph per size, largest first (smaller ones reuse its pool).

        Each graph's attention layout (key splits) is planned for the longest context, so
        long sequences keep enough parallelism at small batch sizes.
        """
        pool = None
        bs = self.block_size
        for batch in sorted(sizes, reverse=True):
            with record_resolutions() as used:
                wrapper = self._wrapper(batch, batch, cuda_graph=True)
                wrapper.plan(
                    torch.arange(batch + 1, dtype=torch.int32),
                    torch.full((batch,), self.max_blocks_per_seq * bs, dtype=torch.int32),
                    torch.zeros(batch, self.max_blocks_per_seq, dtype=torch.int32),
                )
                host = torch.zeros(3, batch, dtype=torch.int64).pin_memory()
                host[2] = -1
                inputs = host.to(self.device)
                ids, positions, slots = inputs
                self.model.forward(ids, positions, slots, wrapper)  # compile and tune first
            torch.cuda.synchronize(self.device)
            unsafe = sorted({f"{b.family}:{b.name}" for b in used if not b.graph_safe})
            if unsafe:
                log.warning("decode steps run eagerly, without CUDA graphs: %s cannot be "
                            "captured in a graph (choose other backends, or pass "
                            "EngineConfig(cuda_graph=False) to run eagerly without "
                            "this warning)", ", ".join(unsafe))
                self.graphs.clear()
                return
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self.model.forward(ids, positions, slots, wrapper)
            pool = graph.pool()
            self.graphs[batch] = _DecodeGraph(batch, wrapper, graph, host, inputs, logits)
        top = max(sizes)
        self._graph_for = [0] * (top + 1)
        for b in range(1, top + 1):
            self._graph_for[b] = min(s for s in sizes if s >= b)
        torch.cuda.synchronize(self.device)

    def _replay(self, arrays: BatchArrays) -> torch.Tensor:
        n = arrays.seq_lens.shape[0]
        g = self.graphs[self._graph_for[n]]
        host = g.host.numpy()
        host[0, :n] = arrays.input_ids
        host[1, :n] = arrays.positions
        host[2, :n] = arrays.slot_mapping
        host[:, n:] = 0
        host[2, n:] = -1
        g.inputs.copy_(g.host, non_blocking=True)
        g.wrapper.plan(torch.from_numpy(arrays.query_start_loc),
                       torch.from_numpy(arrays.seq_lens),
                       torch.from_numpy(arrays.block_tables), skip_checks=True)
        g.graph.replay()
        return g.logits[:n]

    # -- eager ----------------------------------------------------------------------------

    def _eager(self, arrays: BatchArrays, logits_indices: np.ndarray | None = None
               ) -> torch.Tensor:
        """Logits of ``logits_indices`` (default each request's last token)."""
        dev = self.device
        cu = torch.from_numpy(arrays.query_start_loc)
        self.eager.plan(cu, torch.from_numpy(arrays.seq_lens),
                        torch.from_numpy(arrays.block_tables))
        host = np.stack([arrays.input_ids, arrays.positions, arrays.slot_mapping])
        ids, positions, slots = torch.from_numpy(host).to(dev, non_blocking=True)
        if logits_indices is None:
            logits_indices = arrays.query_start_loc[1:].astype(np.int64) - 1
        index = torch.from_numpy(logits_indices).to(dev)
        return self.model.forward(ids, positions, slots, self.eager, index)

    # -- a step ---------------------------------------------------------------------------

    def logits(self, out: SchedulerOutput) -> torch.Tensor:
        """Run the model on a step; the logits ``[num_requests, vocab]`` of each request's
        last token (after the step's copy-on-write block copies)."""
        self.cache.copy_blocks(out.block_copies)
        arrays = out.to_arrays()
        n = out.num_requests
        if out.num_prefills == 0 and n < len(self._graph_for) and not out.num_spec_tokens:
            return self._replay(arrays)
        return self._eager(arrays)

    def verify_logits(self, out: SchedulerOutput) -> torch.Tensor:
        """Run a speculative step eagerly: the logits ``[num_requests, K + 1, vocab]`` of
        each request's last ``1 + k`` tokens (``k`` its drafts: 0 for prefills, ``K`` the
        most), which score the token after its last token and after each draft. Rows with
        fewer than ``K`` drafts repeat their last logits in the padding."""
        self.cache.copy_blocks(out.block_copies)
        arrays = out.to_arrays()
        k = np.zeros(out.num_requests, dtype=np.int64)
        k[: out.num_decodes] = out.num_draft_tokens
        ends = arrays.query_start_loc[1:].astype(np.int64)
        counts = k + 1
        first = np.cumsum(counts) - counts  # where each row's logits start in the output
        rows = np.repeat(np.arange(out.num_requests), counts)
        offset = np.arange(counts.sum()) - first[rows]
        logits = self._eager(arrays, ends[rows] - counts[rows] + offset)
        width = int(k.max()) + 1
        gather = first[:, None] + np.minimum(np.arange(width)[None, :], k[:, None])
        return logits[torch.from_numpy(gather).to(logits.device)]

    def sample(self, logits: torch.Tensor, params: Sequence[SamplingParams],
               seeds: Sequence[int] | None) -> list[int]:
        """One token per row with :func:`infercore.ops.sample` (the step's only host
        synchronization): row ``i`` with ``params[i]`` and the seed ``seeds[i]``;
        ``seeds=None`` when every row is greedy."""
        if seeds is None:
            return ops.sample(logits, temperature=0.0).token_ids.tolist()
        first = params[0]
        uniform = all(p is first for p in params)
        dev = logits.device

        def column(name: str, dtype: torch.dtype) -> float | torch.Tensor:
            if uniform:
                return getattr(first, name)
            return torch.tensor([getattr(p, name) for p in params], dtype=dtype).to(dev)

        out = ops.sample(
            logits,
            temperature=column("temperature", torch.float32),
            top_k=column("top_k", torch.int64),
            top_p=column("top_p", torch.float32),
            min_p=column("min_p", torch.float32),
            seeds=torch.tensor(seeds, dtype=torch.int64).to(dev),
        )
        return out.token_ids.tolist()
