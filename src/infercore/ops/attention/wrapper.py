"""Plan/run wrapper for paged attention: plan once per step, run once per layer."""

from __future__ import annotations

import math

import torch

from infercore.ops.attention import checks as C
from infercore.ops.attention.inputs import PagedInputs
from infercore.ops.attention.partition import (
    SPLIT_PROGRAMS_PER_SM,
    KVSource,
    LaunchPlan,
    choose_num_splits,
    sm_count,
    small_tile,
    split_workspace,
    tile_partition,
    tiled_tile,
)
from infercore.ops.common import check_tensor
from infercore.registry import resolve

__all__ = ["PagedAttentionWrapper"]


class PagedAttentionWrapper:
    """Paged attention (family ``attention.paged``) planned once per step, run per layer.

    ``plan()`` reads the step's lengths on the host, checks them once, partitions the work
    (query tiles of the prefill chunks, key splits of the decodes) and copies the batch's
    metadata into buffers this object owns. ``run()`` then launches per layer without
    synchronizing, reading only those buffers: it can be captured in a CUDA graph and
    replayed after later ``plan()`` calls.

    Parameters
    ----------
    num_heads, num_kv_heads, head_dim, block_size : int
        Model and cache geometry (``num_heads % num_kv_heads == 0``).
    max_batch, max_tokens, max_blocks_per_seq : int
        Capacities: sequences per step, packed query tokens per step, block-table width.
    dtype : torch.dtype
        Dtype of ``q`` (float16 / bfloat16 / float32).
    kv_dtype : torch.dtype, optional
        Dtype of the caches: ``dtype`` (default) or float8_e4m3fn.
    device : torch.device or str
    cuda_graph : bool
        Fixed launch layout for CUDA graphs. The first ``plan()`` fixes which kernels run
        and the key splits; grids span the capacities; metadata of absent sequences is
        padded with empty ones. Later plans must fit that layout (a decode-only first
        plan cannot serve a step with prefill chunks: ``ValueError``). Rows of ``out``
        beyond the planned tokens are not written.
    num_blocks : int, optional
        Cache blocks; when given, ``plan()`` checks every used block id against it.
    backend : str
        Backend of ``attention.paged``. Backends with a ``run_plan`` method (Triton) run
        the plan; others get the buffered metadata through their ``run``.

    Attributes
    ----------
    cu_seqlens_q, seq_lens, block_tables, tile_map : Tensor (int32)
        The buffers ``plan()`` fills (``[max_batch + 1]``, ``[max_batch]``,
        ``[max_batch, max_blocks_per_seq]``, ``[max_tiles, 2]``).

    Examples
    --------
    >>> w = PagedAttentionWrapper(32, 8, 128, 16, max_batch=256, max_tokens=8192,
    ...                           max_blocks_per_seq=2048, dtype=torch.bfloat16, device="cuda")
    >>> w.plan(cu_seqlens_q, seq_lens, block_tables)   # once per step (host tensors: no sync)
    >>> for layer in layers:
    ...     out = w.run(q[layer], k_caches[layer], v_caches[layer])
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        block_size: int,
        *,
        max_batch: int,
        max_tokens: int,
        max_blocks_per_seq: int,
        dtype: torch.dtype,
        kv_dtype: torch.dtype | None = None,
        device: torch.device | str = "cuda",
        cuda_graph: bool = False,
        num_blocks: int | None = None,
        backend: str = "auto",
    ) -> None:
        for name, value in (("num_heads", num_heads), ("num_kv_heads", num_kv_heads),
                            ("block_size", block_size), ("max_batch", max_batch),
                            ("max_tokens", max_tokens), ("max_blocks_per_seq", max_blocks_per_seq)):
            C.check_positive(name, value, int, allow_none=False)
        C.check_positive("num_blocks", num_blocks, int)
        C.check_head_dim("head_dim", head_dim)
        C.num_kv_groups(num_heads, num_kv_heads, "the wrapper")
        kv_dtype = dtype if kv_dtype is None else kv_dtype
        device = torch.device(device)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.block_size, self.max_batch, self.max_tokens = block_size, max_batch, max_tokens
        self.dtype, self.kv_dtype, self.device = dtype, kv_dtype, device
        self.cuda_graph, self.num_blocks = cuda_graph, num_blocks
        inputs = PagedInputs(
            torch.empty(0, num_heads, head_dim, dtype=dtype, device=device),
            torch.empty(0, block_size, num_kv_heads, head_dim, dtype=kv_dtype, device=device),
            torch.empty(0, block_size, num_kv_heads, head_dim, dtype=kv_dtype, device=device),
            True, None, None,
        )
        self.backend = resolve("attention.paged", inputs, backend)
        group = num_heads // num_kv_heads
        self._small = small_tile(group, head_dim, dtype.itemsize)
        self._tiled = tiled_tile(group, head_dim, dtype.itemsize)
        self.max_tiles = max_tokens // self._tiled.block_q + max_batch
        # One int32 buffer for the per-step metadata, so plan() copies it in one transfer.
        sizes = (max_batch + 1, max_batch, 2 * self.max_tiles)
        self._meta = torch.zeros(sum(sizes), dtype=torch.int32, device=device)
        cu, lens, tiles = torch.split(self._meta, sizes)
        self.cu_seqlens_q, self.seq_lens, self.tile_map = cu, lens, tiles.view(-1, 2)
        self.block_tables = torch.zeros(max_batch, max_blocks_per_seq, dtype=torch.int32,
                                        device=device)
        # Split workspace: choose_num_splits gives n sequences s splits with
        # n * kv_heads * s < target + n * kv_heads, so n * s < target / kv_heads + n.
        target = SPLIT_PROGRAMS_PER_SM * sm_count(device)
        self._split_rows = self._small.block_q * (target // num_kv_heads + 1 + max_batch)
        rows = self._split_rows * num_heads
        self._workspace = (
            torch.empty(rows * head_dim, dtype=torch.float32, device=device),
            torch.empty(rows, dtype=torch.float32, device=device),
        )
        self._plan: LaunchPlan | None = None
        self._layout: tuple[bool, int] | None = None  # cuda_graph: (tiled launch, splits)
        self._batch = 0
        self._total_q = 0
        self._max_seqlen_q = 0

    # -- plan -----------------------------------------------------------------------------

    def _check_plan(self, cu_seqlens_q, seq_lens, block_tables, cu) -> None:
        check_tensor("block_tables", block_tables, ndim=2, dtypes=(torch.int32,))
        batch = block_tables.shape[0]
        C.check_index("cu_seqlens_q", cu_seqlens_q, (batch + 1,))
        C.check_index("seq_lens", seq_lens, (batch,))
        if batch > self.max_batch:
            raise ValueError(f"batch {batch} exceeds the wrapper's max_batch={self.max_batch}")
        if block_tables.shape[1] > self.block_tables.shape[1]:
            raise ValueError(
                f"block_tables has {block_tables.shape[1]} columns, more than the wrapper's "
                f"max_blocks_per_seq={self.block_tables.shape[1]}"
            )
        total = int(cu[-1])
        if total > self.max_tokens:
            raise ValueError(f"cu_seqlens_q[-1]={total} exceeds the wrapper's max_tokens="
                             f"{self.max_tokens}")
        C.check_values(cu.device, C.cu_seqlens_conditions(
            "cu_seqlens_q", cu, total, "max_tokens", self.max_tokens))
        C.check_values(block_tables.device, C.paged_conditions(
            block_tables, seq_lens.to(block_tables.device),
            (cu[1:] - cu[:-1]).to(block_tables.device), self.num_blocks, self.block_size))

    def _num_splits(self, num_splits: int | None, lens: torch.Tensor, q_lens: torch.Tensor,
                    num_small: int, num_tiles: int, grid_seqs: int) -> int:
        capacity = self._split_rows // (grid_seqs * self._small.block_q)
        if num_splits is not None:
            C.check_positive("num_splits", num_splits, int)
            if num_splits > max(1, capacity):
                raise ValueError(
                    f"num_splits={num_splits} needs more split workspace than the wrapper holds "
                    f"for {grid_seqs} sequences (at most {capacity} splits)"
                )
            return num_splits
        small = (q_lens > 0) & (q_lens <= self._small.block_q)
        max_keys = int(lens[small].max()) if num_small else 0
        splits = choose_num_splits(num_small * self.num_kv_heads, max_keys, self.device,
                                   other_programs=num_tiles * self.num_kv_heads)
        return max(1, min(splits, capacity))

    def plan(self, cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor,
             block_tables: torch.Tensor, *, num_splits: int | None = None,
             skip_checks: bool = False) -> None:
        """Partition one step's work and copy its metadata into the wrapper's buffers.

        Parameters
        ----------
        cu_seqlens_q : Tensor ``[batch + 1]``, int32
            Query offsets (as in :func:`paged`). Host tensors avoid a synchronization.
        seq_lens : Tensor ``[batch]``, int32
            Tokens in the cache per sequence, new ones included.
        block_tables : Tensor ``[batch, width]``, int32, ``width <= max_blocks_per_seq``
        num_splits : int, optional
            Key splits of the per-sequence (decode) launch; chosen from the lengths and
            the SM count when omitted (frozen by the first plan with ``cuda_graph``).
        skip_checks : bool
            Skip the checks of the metadata.
        """
        cu = cu_seqlens_q.to("cpu")
        lens = seq_lens.to("cpu")
        if not skip_checks:
            self._check_plan(cu_seqlens_q, seq_lens, block_tables, cu)
        batch = lens.shape[0]
        q_lens = cu[1:] - cu[:-1]
        tile_map, num_small = tile_partition(q_lens, self._small, self._tiled)
        num_tiles = tile_map.shape[0]
        grid_seqs = self.max_batch if self.cuda_graph else batch
        splits = self._num_splits(num_splits, lens, q_lens, num_small, num_tiles, max(1, grid_seqs))
        if self.cuda_graph:
            if self._layout is None:
                self._layout = (num_tiles > 0, splits)
            elif num_tiles > 0 and not self._layout[0]:
                raise ValueError(
                    "this cuda_graph wrapper's layout was fixed by a plan without prefill "
                    "chunks; a step with query runs longer than "
                    f"{self._small.block_q} tokens needs a wrapper planned with one first"
                )
            elif num_splits is not None and num_splits != self._layout[1]:
                raise ValueError(f"num_splits={num_splits} differs from the {self._layout[1]} "
                                 "fixed by this cuda_graph wrapper's first plan")
            tiled, splits = self._layout
        else:
            tiled = num_tiles > 0

        host = torch.empty(self._meta.shape[0], dtype=torch.int32)
        h_cu, h_lens, h_tiles = torch.split(host, (self.max_batch + 1, self.max_batch,
                                                   2 * self.max_tiles))
        h_cu[: batch + 1] = cu
        h_cu[batch + 1 :] = cu[-1]
        h_lens[:batch] = lens
        h_lens[batch:] = 0
        h_tiles.view(-1, 2)[:num_tiles] = tile_map
        h_tiles.view(-1, 2)[num_tiles:] = -1
        self._meta.copy_(host)
        self.block_tables[:batch, : block_tables.shape[1]].copy_(block_tables)

        grid_tiles = self.max_tiles if self.cuda_graph else num_tiles
        plan = LaunchPlan(
            num_seqs=grid_seqs, small_shape=self._small, tiled_shape=self._tiled,
            small=self.cuda_graph or num_small > 0, tiled=tiled, num_tiles=grid_tiles,
            num_splits=splits, tile_map=self.tile_map[:grid_tiles],
        )
        if splits > 1:
            plan.part_o, plan.part_lse = split_workspace(
                grid_seqs, self._small.block_q, self.num_heads, splits, self.head_dim,
                self.device, storage=self._workspace)
        self._plan = plan
        self._batch, self._total_q = batch, int(cu[-1])
        self._max_seqlen_q = int(q_lens.max()) if batch else 0

    # -- run ------------------------------------------------------------------------------

    def _check_run(self, q, k_cache, v_cache, out) -> None:
        C.check_query(q)
        expect = (self.num_heads, self.head_dim)
        if tuple(q.shape[1:]) != expect or q.dtype != self.dtype:
            raise ValueError(f"q must be {self.dtype} [tokens, {expect[0]}, {expect[1]}] as "
                             f"planned, got {q.dtype} {list(q.shape)}")
        if (q.shape[0] < self._total_q) if self.cuda_graph else (q.shape[0] != self._total_q):
            raise ValueError(f"q has {q.shape[0]} tokens; the plan has {self._total_q}")
        C.check_cache_pair(k_cache, v_cache, self.head_dim, value_dtype=self.dtype)
        geometry = (self.block_size, self.num_kv_heads)
        if tuple(k_cache.shape[1:3]) != geometry or k_cache.dtype != self.kv_dtype:
            raise ValueError(
                f"k_cache must be {self.kv_dtype} [num_blocks, {geometry[0]}, {geometry[1]}, "
                f"{self.head_dim}] as planned, got {k_cache.dtype} {list(k_cache.shape)}"
            )
        C.check_devices(q=q, k_cache=k_cache, v_cache=v_cache, buffers=self._meta)
        if out is not None:
            C.check_out(out, tuple(q.shape), q.dtype, q.device)

    def run(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        *,
        causal: bool = True,
        scale: float | None = None,
        sliding_window: int | None = None,
        softcap: float | None = None,
        k_scale: float | torch.Tensor | None = None,
        v_scale: float | torch.Tensor | None = None,
        return_lse: bool = False,
        out: torch.Tensor | None = None,
        skip_checks: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attention of one layer for the planned step (no synchronization).

        Parameters
        ----------
        q : Tensor ``[total_q, num_heads, head_dim]`` of the planned dtype
        k_cache, v_cache : Tensor ``[num_blocks, block_size, num_kv_heads, head_dim]``
        causal, scale, sliding_window, softcap, k_scale, v_scale, return_lse, out
            As in :func:`infercore.ops.attention.paged` (per layer: they may differ).
        skip_checks : bool
            Skip the shape checks.

        Returns
        -------
        out ``[total_q, num_heads, head_dim]``, or ``(out, lse)``.
        """
        if self._plan is None:
            raise RuntimeError("PagedAttentionWrapper.run() needs a plan(): call plan() first")
        if not skip_checks:
            self._check_run(q, k_cache, v_cache, out)
            C.check_scalar_options(scale, sliding_window, softcap)
        k_scale = C.kv_scale_tensor("k_scale", k_scale, q.device)
        v_scale = C.kv_scale_tensor("v_scale", v_scale, q.device)
        if out is None:
            out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if return_lse else None
        scale = 1.0 / math.sqrt(self.head_dim) if scale is None else float(scale)
        params = dict(causal=causal, scale=scale, sliding_window=sliding_window,
                      softcap=None if softcap is None else float(softcap),
                      k_scale=k_scale, v_scale=v_scale)
        if hasattr(self.backend, "run_plan"):
            kv = KVSource(k_cache, v_cache, block_tables=self.block_tables, seq_lens=self.seq_lens)
            self.backend.run_plan(self._plan, q, kv, self.cu_seqlens_q, out, lse, **params)
        else:
            b = self._batch
            self.backend.run(
                q[: self._total_q], k_cache, v_cache, self.block_tables[:b], self.seq_lens[:b],
                self.cu_seqlens_q[: b + 1], self._max_seqlen_q, out=out[: self._total_q],
                lse=None if lse is None else lse[: self._total_q], **params,
            )
        return out if lse is None else (out, lse)
