"""Iteration-level continuous batching with chunked prefill and preemption by recompute.

Each ``schedule()`` builds one step under the token budget ``max_num_batched_tokens``:

1. room: a running prefill with no room for its next token preempts the running
   requests ranked below it; under the priority policy, so does a waiting request
   that outranks the lowest running one and does not fit;
2. running decodes, one token each, in policy order;
3. running prefills, a chunk each, in policy order;
4. waiting requests (new and preempted) in policy order while requests, budget and
   blocks last, unless a running request ran out of blocks in this step. Cached
   prefix blocks are taken from the prefix cache, the rest of the prompt (at least
   its last token) is computed.

Requests are ranked by the policy (arrival under FCFS). A request that needs a block
when none is available preempts running requests from the lowest rank up; a preempted
request loses its blocks (its full ones stay in the prefix cache) and later recomputes
prompt and generated tokens as one prompt, then continues where it stopped.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence

from infercore.cache.allocator import NoFreeBlocksError
from infercore.cache.manager import KVCacheManager
from infercore.cache.prefix import PrefixMatch
from infercore.sched.config import SchedulerConfig
from infercore.sched.output import SchedulerOutput
from infercore.sched.policy import SchedulingPolicy, policy_for
from infercore.sched.queue import WaitingQueue
from infercore.sched.request import FinishReason, Request, RequestStatus
from infercore.sched.speculative import SpeculativeSteps

__all__ = ["Scheduler"]

_RUNNING = RequestStatus.RUNNING


def _sort_key(request: Request) -> tuple[int, ...]:
    return request.sort_key


class Scheduler(SpeculativeSteps):
    """Continuous-batching scheduler over a :class:`KVCacheManager`.

    Parameters
    ----------
    config : SchedulerConfig
    cache : KVCacheManager
    policy : SchedulingPolicy, optional
        Overrides ``config.policy``.

    Examples
    --------
    A host loop, with ``run_model`` returning one sampled token per scheduled request::

        sched = Scheduler(SchedulerConfig(), KVCacheManager(KVCacheConfig(num_blocks=64)))
        sched.add(Request("a", [1, 2, 3], max_tokens=4))
        while sched.has_unfinished_requests:
            out = sched.schedule()
            sched.cache.copy_blocks(out.block_copies)
            sched.update(out, run_model(out.to_arrays()))
    """

    def __init__(
        self,
        config: SchedulerConfig,
        cache: KVCacheManager,
        *,
        policy: SchedulingPolicy | None = None,
    ) -> None:
        if not isinstance(config, SchedulerConfig):
            raise TypeError(f"config must be a SchedulerConfig, got {type(config).__name__}")
        if config.cache is not None and config.cache != cache.config:
            raise ValueError(
                "config.cache differs from cache.config: pass the manager built from it, or "
                "leave config.cache unset"
            )
        if config.max_num_batched_tokens < cache.block_size:
            raise ValueError(
                f"SchedulerConfig.max_num_batched_tokens={config.max_num_batched_tokens} must "
                f"be >= the cache's block_size={cache.block_size}"
            )
        self.config = config
        self.cache = cache
        self.policy = policy if policy is not None else policy_for(config.policy)
        self.requests: dict[str, Request] = {}
        self._waiting = WaitingQueue()
        self._decoding: list[Request] = []
        self._prefilling: list[Request] = []
        self._arrivals = 0
        self._finished_since_step: list[str] = []
        self._pending: SchedulerOutput | None = None
        bs = cache.block_size
        self._capacity = None if cache.streaming else cache.num_blocks * bs

    # -- queries ----------------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        """Requests waiting to run, preempted ones included."""
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._decoding) + len(self._prefilling)

    @property
    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    @property
    def decoding(self) -> list[Request]:
        """Running requests past their prompt, in policy order (they may get drafts)."""
        return list(self._decoding)

    @property
    def running(self) -> list[Request]:
        """Running requests, decoding ones then prefilling ones, each in policy order."""
        return self._decoding + self._prefilling

    # -- requests ---------------------------------------------------------------------------------

    def add(self, request: Request) -> None:
        """Queue a new request.

        Raises
        ------
        ValueError
            A live request has the same id, the prompt is longer than ``max_model_len``
            or than the whole cache holds, or the request was already scheduled.
        """
        rid = request.request_id
        if rid in self.requests:
            raise ValueError(f"request id {rid!r} is already in use by a live request")
        if request.status is not RequestStatus.WAITING or request.blocks is not None:
            raise ValueError(f"request {rid!r} is {request.status.value}; add a new Request")
        n = request.num_prompt_tokens
        max_len = self.config.max_model_len
        if n > max_len:
            raise ValueError(
                f"request {rid!r}: prompt of {n} tokens is longer than max_model_len={max_len}"
            )
        capacity = self._capacity
        if capacity is not None and n > capacity:
            raise ValueError(
                f"request {rid!r}: prompt of {n} tokens does not fit in the whole KV cache "
                f"({self.cache.num_blocks} blocks of {self.cache.block_size} tokens)"
            )
        if capacity is not None:
            # Generation stops where the next token would need a position past the model's
            # length or past what the cache holds, so every request can finish alone.
            request._max_len = min(request._max_len, max_len + 1, capacity + 1)
        request.arrival = self._arrivals
        self._arrivals += 1
        request.sort_key = self.policy.key(request)
        request.blocks = self.cache.new_sequence()
        self.requests[rid] = request
        self._waiting.push(request)

    def abort(self, request_id: str) -> bool:
        """Abort a live request and free its blocks; ``False`` when the id is unknown."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        was_running = req.status is _RUNNING
        if was_running:
            self.cache.free(req.blocks)
            self._running_list(req).remove(req)
        req.transition(RequestStatus.ABORTED)
        if not was_running:
            self._waiting.discard(req)
        self._finished_since_step.append(request_id)
        return True

    def fork(self, request_id: str, child_id: str) -> Request:
        """Start ``child_id`` as a copy of the running request ``request_id``, sharing its
        blocks copy-on-write (parallel sampling, beam search). The copy continues from the
        same tokens; a copy of the shared last block appears in ``block_copies``."""
        if self._pending is not None:
            raise RuntimeError("fork() between schedule() and update(): call update() first")
        parent = self.requests.get(request_id)
        if parent is None or parent.status is not _RUNNING:
            raise ValueError(f"request {request_id!r} is not running; only running ones fork")
        if child_id in self.requests:
            raise ValueError(f"request id {child_id!r} is already in use by a live request")
        if self.num_running >= self.config.max_num_seqs:
            raise ValueError(f"max_num_seqs={self.config.max_num_seqs} requests already run")
        child = Request(
            child_id,
            parent.token_ids[: parent.num_prompt_tokens],
            max_tokens=parent.max_tokens,
            stop_token_ids=parent.stop_token_ids,
            eos_token_id=parent.eos_token_id,
            ignore_eos=parent.ignore_eos,
            priority=parent.priority,
        )
        child.token_ids = list(parent.token_ids)
        child._max_len = parent._max_len
        child.num_computed_tokens = parent.num_computed_tokens
        child.arrival = self._arrivals
        self._arrivals += 1
        child.sort_key = self.policy.key(child)
        child.blocks = self.cache.fork(parent.blocks)
        child.transition(_RUNNING)
        self.requests[child_id] = child
        bisect.insort(self._running_list(parent), child, key=_sort_key)
        return child

    # -- internals --------------------------------------------------------------------------------

    def _running_list(self, req: Request) -> list[Request]:
        """The list holding the running request ``req`` (prefilling ones are few)."""
        return self._prefilling if req in self._prefilling else self._decoding

    def _lowest_running(self) -> Request | None:
        d, p = self._decoding, self._prefilling
        if not p:
            return d[-1] if d else None
        if not d:
            return p[-1]
        return d[-1] if d[-1].sort_key > p[-1].sort_key else p[-1]

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        running = self._running_list(req)
        if running[-1] is req:
            running.pop()  # victims are the lowest: usually the tail
        else:
            running.remove(req)
        self._release(req)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        req.transition(RequestStatus.PREEMPTED)
        self._waiting.push(req)
        out.preempted_req_ids.append(req.request_id)

    def _release(self, req: Request) -> None:
        """Free a request's blocks after adding its computed full blocks to the prefix
        cache (blocks filled by decoding are added here, not at every step)."""
        self.cache.register(req.blocks, req.token_ids, req.num_computed_tokens)
        self.cache.free(req.blocks)

    def _grow(self, req: Request, start: int, end: int, out: SchedulerOutput) -> bool:
        """Blocks for positions ``[start, end)`` of a running request, preempting the lowest
        running requests while needed; ``False`` when ``req`` itself was preempted."""
        while True:
            try:
                copy = self.cache.allocate(req.blocks, start, end)
            except NoFreeBlocksError:
                victim = self._lowest_running()
                self._preempt(victim, out)
                if victim is req:
                    return False
                continue
            if copy is not None:
                out.block_copies.append(copy)
            return True

    def _add_chunk(self, req: Request, start: int, n: int, out: SchedulerOutput) -> None:
        end = start + n
        kv = req.blocks
        dropped = kv.num_dropped_tokens
        out.requests.append(req)
        out.input_ids.extend(req.token_ids[start:end])
        out.positions.extend(range(start - dropped, end - dropped))
        out.slot_mapping.extend(self.cache.slot_mapping(kv, start, end))
        out.block_tables.append(kv.block_ids)
        out.prefill_num_tokens.append(n)
        req.num_computed_tokens = end

    def _admission_fit(self, req: Request) -> tuple[int, int, PrefixMatch | None]:
        """``(start, tokens that fit now, prefix hit)`` for admitting ``req``."""
        hit = self.cache.match_prefix(req.token_ids)
        start = len(hit.block_ids) * self.cache.block_size if hit is not None else 0
        fit = self.cache.max_new_tokens(
            req.blocks, start, hit=hit, watermark=bool(self._decoding or self._prefilling)
        )
        return start, fit, hit

    def _unstall_prefills(self, out: SchedulerOutput) -> None:
        """A running prefill with no room for its next token preempts the requests ranked
        below it (decodes included, before any is scheduled)."""
        for req in list(self._prefilling):
            if req.status is not _RUNNING:
                continue  # preempted for an earlier one
            while self.cache.max_new_tokens(req.blocks, req.num_computed_tokens) <= 0:
                lowest = self._lowest_running()
                if lowest is req:
                    break
                self._preempt(lowest, out)

    def _preempt_for_arrivals(self, out: SchedulerOutput) -> None:
        """(Policies that preempt on arrival) the first waiting request preempts running
        ones ranked below it until it fits."""
        cfg = self.config
        while True:
            head = self._waiting.peek()
            lowest = self._lowest_running()
            if head is None or lowest is None or not head.sort_key < lowest.sort_key:
                return
            start, fit, _ = self._admission_fit(head)
            need = min(head.num_tokens - start, cfg.max_num_batched_tokens)
            if self.num_running < cfg.max_num_seqs and fit >= need:
                return
            self._preempt(lowest, out)

    # -- the step ---------------------------------------------------------------------------------

    def schedule(
        self, draft_token_ids: Mapping[str, Sequence[int]] | None = None
    ) -> SchedulerOutput:
        """Choose the work of the next step (see the module docstring).

        Parameters
        ----------
        draft_token_ids : mapping of request id to token ids, optional
            Speculative decoding: draft tokens continuing a decoding request. The request
            then computes its last token and the drafts in one step (``1 + k`` query
            tokens, counted against the budget), with KV slots for all of them. Drafts
            are cut to what fits: the request's remaining length (so that every emitted
            token is allowed), the budget left after one token per decode, and the free
            blocks (drafts never preempt). Requests not decoding ignore theirs.

        Returns
        -------
        SchedulerOutput
            Valid until the next ``schedule()``; pass it to :meth:`update` after the step.
        """
        if self._pending is not None:
            raise RuntimeError("schedule() called again before update() of the previous step")
        out = SchedulerOutput(finished_req_ids=self._finished_since_step)
        self._finished_since_step = []
        cfg = self.config
        cache = self.cache
        bs = cache.block_size
        budget = cfg.max_num_batched_tokens
        if self._prefilling:
            self._unstall_prefills(out)
        unstalled = len(out.preempted_req_ids)
        if self.policy.preempts_on_arrival and self._waiting:
            self._preempt_for_arrivals(out)
        before_step = len(out.preempted_req_ids)

        # Decodes: the hot path, one token each. Preemption only takes requests from the
        # tails of the running lists, so the scheduled decodes are a prefix of the list.
        decoding = self._decoding
        if draft_token_ids:
            count = self._schedule_spec_decodes(draft_token_ids, out)
        else:
            ids_append = out.input_ids.append
            positions_append = out.positions.append
            slots_append = out.slot_mapping.append
            tables_append = out.block_tables.append
            for req in itertools.islice(decoding, budget):
                p = req.num_computed_tokens
                kv = req.blocks
                if p >= kv.writable_end and not self._grow(req, p, p + 1, out):
                    break
                c = p - kv.num_dropped_tokens
                blocks = kv.block_ids
                ids_append(req.token_ids[p])
                positions_append(c)
                slots_append(blocks[c // bs] * bs + c % bs)
                tables_append(blocks)
                req.num_computed_tokens = p + 1
            count = len(out.input_ids)
        out.requests = decoding[:count]
        out.num_decodes = count
        budget -= len(out.input_ids)

        # Running prefills: one chunk each; lower ones make room for higher ones.
        prefilling = self._prefilling
        i = 0
        while budget and i < len(prefilling):
            req = prefilling[i]
            start = req.num_computed_tokens
            fit = cache.max_new_tokens(req.blocks, start)
            while fit <= 0 and prefilling[-1] is not req:
                self._preempt(prefilling[-1], out)
                fit = cache.max_new_tokens(req.blocks, start)
            if fit <= 0:
                break
            n = min(req.num_tokens - start, budget, fit)
            copy = cache.allocate(req.blocks, start, start + n)
            if copy is not None:
                out.block_copies.append(copy)
            self._add_chunk(req, start, n, out)
            budget -= n
            i += 1

        # Admission of waiting requests, unless running ones ran out of blocks (and were
        # not preempted to admit a waiting one) and something else runs; a request
        # preempted in this step waits for the next one.
        short = len(out.preempted_req_ids) > before_step or 0 < unstalled == before_step
        admit = not (short and out.requests)
        while admit and budget and self.num_running < cfg.max_num_seqs:
            req = self._waiting.peek()
            if req is None or req.request_id in out.preempted_req_ids:
                break
            start, fit, hit = self._admission_fit(req)
            if fit <= 0:
                break
            self._waiting.pop()
            n = min(req.num_tokens - start, budget, fit)
            copy = cache.allocate(req.blocks, start, start + n, hit=hit)
            assert copy is None, "a new sequence shares no partial block"
            req.transition(_RUNNING)
            bisect.insort(prefilling, req, key=_sort_key)
            self._add_chunk(req, start, n, out)
            budget -= n

        self._pending = out
        return out

    def update(
        self, output: SchedulerOutput, sampled_token_ids: Sequence[int] | Sequence[Sequence[int]]
    ) -> list[Request]:
        """Record the step's results: append sampled tokens, finish requests, add blocks
        filled by prompts to the prefix cache.

        Parameters
        ----------
        output : SchedulerOutput
            The output of the latest :meth:`schedule`.
        sampled_token_ids : sequence of int, or sequence of sequences of int
            One entry per request of ``output``, in its order (a list, or an array with
            ``tolist()``): the sampled token, or a list of the tokens the request emitted.
            A decode with ``k`` draft tokens emits 1 to ``k + 1`` tokens (the accepted
            drafts then one from the target); the KV of its rejected drafts is given
            back. Entries of prefill chunks that do not reach the end of their prompt are
            ignored; a prefill that ends its prompt emits one token. Tokens after a stop
            token or past the request's length are dropped.

        Returns
        -------
        list of Request
            Requests that finished in this step.
        """
        if output is not self._pending:
            raise ValueError("update() takes the output of the latest schedule(), once")
        if hasattr(sampled_token_ids, "tolist"):
            sampled_token_ids = sampled_token_ids.tolist()
        reqs = output.requests
        if len(sampled_token_ids) != len(reqs):
            raise ValueError(
                f"sampled_token_ids has {len(sampled_token_ids)} entries; the step scheduled "
                f"{len(reqs)} requests"
            )
        nd = output.num_decodes
        lists = bool(sampled_token_ids) and hasattr(sampled_token_ids[0], "__len__")
        if lists:
            self._check_emitted(output, sampled_token_ids)
        self._pending = None
        register = self.cache.register
        finished: list[Request] = []
        running = _RUNNING
        if lists:
            self._record_emitted(output, sampled_token_ids[:nd], finished)
            sampled_token_ids = [t[0] if t else -1 for t in sampled_token_ids]
        else:
            for req, tok in zip(reqs[:nd], sampled_token_ids[:nd], strict=True):
                if req.status is not running:
                    continue  # aborted after schedule()
                tokens = req.token_ids
                tokens.append(tok)
                if tok in req._stop or len(tokens) >= req._max_len:
                    finished.append(req)
        any_decode_finished = bool(finished)
        for req, tok in zip(reqs[nd:], sampled_token_ids[nd:], strict=True):
            if req.status is not _RUNNING:
                continue
            tokens = req.token_ids
            register(req.blocks, tokens, req.num_computed_tokens)
            if req.num_computed_tokens < len(tokens):
                continue  # a chunk inside the prompt: nothing sampled
            tokens.append(tok)
            self._prefilling.remove(req)
            if tok in req._stop or len(tokens) >= req._max_len:
                finished.append(req)
            else:
                bisect.insort(self._decoding, req, key=_sort_key)
        for req in finished:
            reason = FinishReason.STOP if req.token_ids[-1] in req._stop else FinishReason.LENGTH
            req.transition(RequestStatus.FINISHED, reason)
            self._release(req)
            del self.requests[req.request_id]
            self._finished_since_step.append(req.request_id)
        if any_decode_finished:
            self._decoding = [r for r in self._decoding if r.status is _RUNNING]
        return finished

    def __repr__(self) -> str:
        return (
            f"Scheduler(policy={self.policy.name}, running={self.num_running}, "
            f"waiting={self.num_waiting}, free_blocks={self.cache.num_free_blocks})"
        )
