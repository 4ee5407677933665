"""The speculative-decoding part of :class:`~infercore.sched.Scheduler`: decodes scheduled
with draft tokens (1 + k query tokens each), and updates with the tokens each request
emitted, giving back the KV of rejected drafts."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from infercore.sched.output import SchedulerOutput
from infercore.sched.request import Request, RequestStatus

__all__ = ["SpeculativeSteps"]

_RUNNING = RequestStatus.RUNNING


class SpeculativeSteps:
    """Mixed into :class:`~infercore.sched.Scheduler` (uses its cache, config, decoding
    list and ``_grow``)."""

    def _schedule_spec_decodes(
        self, drafts: Mapping[str, Sequence[int]], out: SchedulerOutput
    ) -> int:
        """Schedule the running decodes with their draft tokens; return how many run.

        Each request gets one token first (as without drafts, preempting when blocks run
        out); drafts take what is left of the budget after one token per decode and the
        blocks free at that point.
        """
        cache = self.cache
        decoding = self._decoding
        budget = self.config.max_num_batched_tokens
        spare = budget - min(len(decoding), budget)
        out.num_draft_tokens = num_draft = []
        count = 0
        for req in itertools.islice(decoding, budget):
            p = req.num_computed_tokens
            kv = req.blocks
            if p >= kv.writable_end and not self._grow(req, p, p + 1, out):
                break
            draft = list(drafts.get(req.request_id, ()))
            k = min(len(draft), spare, max(req._max_len - len(req.token_ids) - 1, 0))
            if k:
                k = min(k, cache.max_new_tokens(kv, p) - 1)
            if k > 0:
                copy = cache.allocate(kv, p, p + 1 + k)
                if copy is not None:
                    out.block_copies.append(copy)
            k = max(k, 0)
            spare -= k
            c = p - kv.num_dropped_tokens
            out.input_ids.append(req.token_ids[p])
            out.input_ids.extend(draft[:k])
            out.positions.extend(range(c, c + 1 + k))
            out.slot_mapping.extend(cache.slot_mapping(kv, p, p + 1 + k))
            out.block_tables.append(kv.block_ids)
            num_draft.append(k)
            req.num_computed_tokens = p + 1 + k
            count += 1
        return count

    @staticmethod
    def _check_emitted(output: SchedulerOutput, emitted: Sequence[Sequence[int]]) -> None:
        drafts = output.num_draft_tokens or [0] * output.num_decodes
        for i, (req, tokens) in enumerate(zip(output.requests, emitted, strict=True)):
            most = 1 + drafts[i] if i < output.num_decodes else 1
            if not (1 <= len(tokens) <= most or (i >= output.num_decodes and not tokens)):
                raise ValueError(
                    f"request {req.request_id!r} emitted {len(tokens)} tokens; it computed "
                    f"{most - 1} draft tokens in this step, so it emits 1 to {most}"
                )

    def _record_emitted(self, output: SchedulerOutput, emitted: Sequence[Sequence[int]],
                        finished: list[Request]) -> None:
        """Append each decode's emitted tokens and give back the KV of rejected drafts."""
        for req, new in zip(output.requests[: output.num_decodes], emitted, strict=True):
            if req.status is not _RUNNING:
                continue  # aborted after schedule()
            tokens = req.token_ids
            for tok in new:
                tokens.append(tok)
                if tok in req._stop or len(tokens) >= req._max_len:
                    finished.append(req)
                    break
            computed = len(tokens) - 1
            if computed < req.num_computed_tokens:
                req.num_computed_tokens = computed
                self.cache.truncate(req.blocks, computed)
