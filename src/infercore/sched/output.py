"""SchedulerOutput: what a model runner needs for one step."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from infercore.sched.request import Request

__all__ = ["BatchArrays", "ScheduledRequest", "SchedulerOutput"]


@dataclass(frozen=True, slots=True)
class ScheduledRequest:
    """One request's part of a step (a view built on demand).

    ``positions`` are cache positions (token positions unless the StreamingLLM policy
    dropped tokens); ``seq_len`` counts the tokens in the cache including the new ones.
    """

    request_id: str
    token_ids: list[int]
    positions: list[int]
    slot_mapping: list[int]
    block_table: list[int]
    seq_len: int
    is_prefill: bool


@dataclass(frozen=True, slots=True)
class BatchArrays:
    """The step as arrays, the layout of the paged-attention ops (DESIGN.md).

    Attributes
    ----------
    input_ids, positions, slot_mapping : np.ndarray, int64 [num_tokens]
    query_start_loc : np.ndarray, int32 [batch + 1]
        Offsets of each request's tokens (``cu_seqlens_q``).
    seq_lens : np.ndarray, int32 [batch]
        Tokens in the cache per request, the new ones included.
    block_tables : np.ndarray, int32 [batch, max_blocks]
        Padded with 0 (entries past ``seq_lens`` are never read).
    num_decodes : int
        The first ``num_decodes`` requests decode: one token each, plus their draft
        tokens in a speculative step (then ``query_start_loc`` tells their lengths).
    """

    input_ids: np.ndarray
    positions: np.ndarray
    slot_mapping: np.ndarray
    query_start_loc: np.ndarray
    seq_lens: np.ndarray
    block_tables: np.ndarray
    num_decodes: int


@dataclass(slots=True)
class SchedulerOutput:
    """The work of one step, decodes first, as flat lists.

    Request ``i`` computes tokens ``input_ids[s:e]`` at ``positions[s:e]`` writing KV to
    ``slot_mapping[s:e]``, where ``s, e = query_start_loc[i], query_start_loc[i + 1]``;
    the first ``num_decodes`` requests decode: one token each (``s = i``) or, in a
    speculative step, their last token then ``num_draft_tokens[i]`` drafts.
    ``block_tables[i]`` is the request's live block table: read it before the next
    ``schedule()``. Pass the output and one sampled token (or the emitted tokens) per
    request to ``Scheduler.update`` (tokens of prefill chunks that do not end their
    prompt are ignored).

    Attributes
    ----------
    requests : list of Request
    num_decodes : int
    input_ids, positions, slot_mapping : list of int
        One entry per token of the step.
    block_tables : list of list of int
    prefill_num_tokens : list of int
        Tokens of each prefill chunk (requests ``num_decodes`` onward).
    num_draft_tokens : list of int
        Draft tokens of each decode (empty when the step was scheduled without drafts).
    block_copies : list of (int, int)
        Copy-on-write copies ``(src, dst)`` to make in every layer before the step.
    preempted_req_ids : list of str
        Requests preempted in this step (their blocks are gone; they are recomputed).
    finished_req_ids : list of str
        Requests that finished or were aborted since the previous step.
    """

    requests: list[Request] = field(default_factory=list)
    num_decodes: int = 0
    input_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slot_mapping: list[int] = field(default_factory=list)
    block_tables: list[list[int]] = field(default_factory=list)
    prefill_num_tokens: list[int] = field(default_factory=list)
    num_draft_tokens: list[int] = field(default_factory=list)
    block_copies: list[tuple[int, int]] = field(default_factory=list)
    preempted_req_ids: list[str] = field(default_factory=list)
    finished_req_ids: list[str] = field(default_factory=list)

    @property
    def num_requests(self) -> int:
        return len(self.requests)

    @property
    def num_batched_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_prefills(self) -> int:
        return len(self.requests) - self.num_decodes

    @property
    def req_ids(self) -> list[str]:
        return [r.request_id for r in self.requests]

    @property
    def num_spec_tokens(self) -> int:
        """Draft tokens in the step (0 without speculation)."""
        return sum(self.num_draft_tokens)

    @property
    def query_lens(self) -> list[int]:
        """Tokens computed per request."""
        if self.num_draft_tokens:
            return [1 + k for k in self.num_draft_tokens] + self.prefill_num_tokens
        return [1] * self.num_decodes + self.prefill_num_tokens

    @property
    def query_start_loc(self) -> list[int]:
        """Offsets of each request's tokens, ``[batch + 1]``."""
        if self.num_draft_tokens:
            return list(itertools.accumulate(self.query_lens, initial=0))
        loc = list(range(self.num_decodes + 1))
        total = self.num_decodes
        for n in self.prefill_num_tokens:
            total += n
            loc.append(total)
        return loc

    @property
    def seq_lens(self) -> list[int]:
        """Tokens in the cache per request after the step."""
        positions = self.positions
        return [positions[end - 1] + 1 for end in self.query_start_loc[1:]]

    def is_prefill(self, i: int) -> bool:
        return i >= self.num_decodes

    @property
    def scheduled(self) -> list[ScheduledRequest]:
        """One view per request (built on each access)."""
        loc = self.query_start_loc
        out = []
        for i, (req, table, seq_len) in enumerate(
            zip(self.requests, self.block_tables, self.seq_lens, strict=True)
        ):
            s, e = loc[i], loc[i + 1]
            out.append(
                ScheduledRequest(
                    req.request_id,
                    self.input_ids[s:e],
                    self.positions[s:e],
                    self.slot_mapping[s:e],
                    table,
                    seq_len,
                    i >= self.num_decodes,
                )
            )
        return out

    def to_arrays(self) -> BatchArrays:
        """The step as NumPy arrays (``np.asarray(...)`` then ``torch.from_numpy``)."""
        import numpy as np

        tables = self.block_tables
        width = max((len(t) for t in tables), default=0)
        block_tables = np.zeros((len(tables), width), dtype=np.int32)
        for i, t in enumerate(tables):
            block_tables[i, : len(t)] = t
        return BatchArrays(
            np.array(self.input_ids, dtype=np.int64),
            np.array(self.positions, dtype=np.int64),
            np.array(self.slot_mapping, dtype=np.int64),
            np.array(self.query_start_loc, dtype=np.int32),
            np.array(self.seq_lens, dtype=np.int32),
            block_tables,
            self.num_decodes,
        )
