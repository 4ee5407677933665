"""Stateful property test: random add / abort / fork / step sequences on small pools.

After every rule: blocks are conserved and every reference count equals the number of
holders; waiting requests hold no blocks; each step respects the token budget and
max_num_seqs, writes only inside the writer's blocks and reads back the right KV (so no
block is shared between different tokens). At the end every request is drained to
completion and its tokens equal those of the same request run alone, preempted or not.
"""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from infercore.cache import KVCacheConfig, KVCacheManager, StreamingConfig
from infercore.sched import Request, RequestStatus, Scheduler, SchedulerConfig
from tests.sched.fake_model import FakeRunner, reference_generation

VOCAB = 5
DRAIN_STEPS = 3000


class SchedulerMachine(RuleBasedStateMachine):
    @initialize(
        num_blocks=st.integers(3, 20),
        block_size=st.sampled_from([1, 2, 4]),
        max_num_seqs=st.integers(1, 5),
        extra_budget=st.integers(0, 9),
        max_model_len=st.integers(3, 40),
        policy=st.sampled_from(["fcfs", "priority"]),
        prefix_caching=st.booleans(),
        watermark=st.sampled_from([0.0, 0.2]),
        streaming=st.booleans(),
    )
    def setup(
        self,
        num_blocks,
        block_size,
        max_num_seqs,
        extra_budget,
        max_model_len,
        policy,
        prefix_caching,
        watermark,
        streaming,
    ):
        # StreamingLLM: one sink block and a two-block window (needs 4 blocks).
        window = StreamingConfig(sink_tokens=block_size, window_tokens=2 * block_size)
        cache = KVCacheManager(
            KVCacheConfig(
                num_blocks=num_blocks,
                block_size=block_size,
                enable_prefix_caching=prefix_caching,
                watermark=watermark,
                streaming=window if streaming and num_blocks >= 4 else None,
            )
        )
        self.config = SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max(block_size, max_num_seqs) + extra_budget,
            max_model_len=max_model_len,
            policy=policy,
        )
        self.sched = Scheduler(self.config, cache)
        self.cache = cache
        self.runner = FakeRunner(num_blocks, block_size, VOCAB, cache.sink_blocks)
        self.admitted: dict[str, Request] = {}
        self.counter = 0

    # -- rules ------------------------------------------------------------------------------------

    @rule(
        prompt=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=45),
        max_tokens=st.integers(1, 10),
        stop=st.sets(st.integers(0, VOCAB - 1), max_size=1),
        priority=st.integers(0, 2),
        shared_prefix=st.booleans(),
    )
    def add(self, prompt, max_tokens, stop, priority, shared_prefix):
        if shared_prefix and self.admitted:
            # Reuse the start of an earlier prompt so the prefix cache sees hits.
            earlier = list(self.admitted.values())[-1].token_ids
            prompt = earlier[: len(earlier) // 2 + 1] + prompt[:3]
        rid = f"r{self.counter}"
        self.counter += 1
        req = Request(rid, prompt, max_tokens=max_tokens, stop_token_ids=stop, priority=priority)
        bs, nb = self.cache.block_size, self.cache.num_blocks
        too_long = len(prompt) > self.config.max_model_len
        too_long |= not self.cache.streaming and len(prompt) > nb * bs
        try:
            self.sched.add(req)
        except ValueError as err:
            assert too_long, f"rejected a prompt that fits: {err}"
            return
        assert not too_long, "accepted a prompt longer than the model or the cache"
        self.admitted[rid] = req

    @rule(data=st.data())
    def abort(self, data):
        live = sorted(self.sched.requests)
        if live and data.draw(st.booleans()):
            rid = data.draw(st.sampled_from(live))
            assert self.sched.abort(rid) is True
            req = self.admitted.pop(rid)
            assert req.status is RequestStatus.ABORTED
        else:
            assert self.sched.abort("no-such-request") is False

    @precondition(lambda self: self.sched.num_running < self.config.max_num_seqs)
    @rule(data=st.data())
    def fork(self, data):
        running = [r.request_id for r in self.sched.running]
        if not running:
            return
        parent = data.draw(st.sampled_from(running))
        rid = f"r{self.counter}"
        self.counter += 1
        child = self.sched.fork(parent, rid)
        assert child.token_ids == self.admitted[parent].token_ids
        self.admitted[rid] = child

    @rule()
    def step(self):
        had_work = self.sched.has_unfinished_requests
        out = self.sched.schedule()
        if had_work:
            assert out.num_requests > 0, "requests are live but the step is empty"
        assert out.num_batched_tokens <= self.config.max_num_batched_tokens
        assert out.num_requests <= self.config.max_num_seqs
        assert self.sched.num_running <= self.config.max_num_seqs
        assert all(n == 1 for n in out.query_lens[: out.num_decodes])
        ids = [r.request_id for r in out.requests]
        assert len(set(ids)) == len(ids)
        assert not set(ids) & set(out.preempted_req_ids)
        sampled = self.runner.step(out)
        for req in self.sched.update(out, sampled):
            self.check_finished(req)

    def check_finished(self, req: Request) -> None:
        ref = reference_generation(req, VOCAB, req._max_len)
        assert req.token_ids == ref, (
            f"{req.request_id} (preempted {req.num_preemptions} times) generated "
            f"{req.output_token_ids}, alone it generates {ref[req.num_prompt_tokens :]}"
        )
        del self.admitted[req.request_id]

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def blocks_conserved(self):
        if not hasattr(self, "sched"):
            return
        alloc, prefix = self.cache.allocator, self.cache.prefix
        holders: Counter[int] = Counter()
        users: Counter[int] = Counter()
        for req in self.sched.requests.values():
            blocks = req.blocks.block_ids
            if req.status is not RequestStatus.RUNNING:
                assert not blocks, f"{req.request_id} is {req.status.value} but holds blocks"
                continue
            cached_tokens = len(blocks) * self.cache.block_size + req.blocks.num_dropped_tokens
            assert cached_tokens >= req.num_computed_tokens
            holders.update(blocks)
            users.update(blocks)
        used = 0
        for b in range(alloc.num_blocks):
            cached = prefix is not None and prefix.is_cached(b)
            assert alloc.ref_count(b) == holders[b] + cached, f"block {b}: wrong ref count"
            if cached:
                assert prefix.num_users(b) == users[b]
            used += alloc.ref_count(b) > 0
        assert alloc.num_free_blocks + used == alloc.num_blocks
        if prefix is not None:
            cached = [b for b in range(alloc.num_blocks) if prefix.is_cached(b)]
            assert prefix.num_evictable_blocks == sum(1 for b in cached if not users[b])

    @invariant()
    def cached_blocks_hold_their_tokens(self):
        if not hasattr(self, "sched") or self.cache.prefix is None:
            return
        bs, prefix = self.cache.block_size, self.cache.prefix
        for req in self.sched.running:
            for i, b in enumerate(req.blocks.block_ids):
                start = i * bs
                if i >= self.cache.sink_blocks:
                    start += req.blocks.num_dropped_tokens
                if prefix.is_cached(b):
                    assert prefix.tokens_of(b) == tuple(req.token_ids[start : start + bs])

    def teardown(self):
        if not hasattr(self, "sched"):
            return
        for _ in range(DRAIN_STEPS):
            if not self.sched.has_unfinished_requests:
                break
            self.step()
            self.blocks_conserved()
        assert not self.sched.has_unfinished_requests, "requests never finished"
        assert not self.admitted, f"never reported finished: {sorted(self.admitted)}"
        prefix = self.cache.prefix
        cached = prefix.num_cached_blocks if prefix is not None else 0
        assert self.cache.allocator.num_free_blocks + cached == self.cache.num_blocks
        if prefix is not None:
            assert prefix.num_evictable_blocks == cached


SchedulerMachine.TestCase.settings = settings(max_examples=500, stateful_step_count=50)
TestScheduler = SchedulerMachine.TestCase
