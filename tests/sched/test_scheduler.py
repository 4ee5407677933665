"""Scheduler: admission checks, batching limits, chunked prefill, prefix hits, preemption,
policies, stop conditions, forks, the registry and the output's array form."""

from __future__ import annotations

import numpy as np
import pytest

import infercore
from infercore import ConfigError
from infercore.cache import KVCacheConfig, KVCacheManager, StreamingConfig
from infercore.sched import (
    FinishReason,
    Request,
    RequestStatus,
    Scheduler,
    SchedulerConfig,
    SchedulerProtocol,
)
from tests.sched.fake_model import FakeRunner, reference_generation

VOCAB = 7


def make(num_blocks=16, block_size=4, prefix=True, watermark=0.0, **cfg):
    cache = KVCacheManager(
        KVCacheConfig(
            num_blocks=num_blocks,
            block_size=block_size,
            enable_prefix_caching=prefix,
            watermark=watermark,
        )
    )
    cfg.setdefault("max_num_seqs", 8)
    sched = Scheduler(SchedulerConfig(**cfg), cache)
    return sched, FakeRunner(num_blocks, block_size, VOCAB)


def step(sched, runner):
    out = sched.schedule()
    return out, sched.update(out, runner.step(out))


def drain(sched, runner, limit=1000):
    outs = []
    for _ in range(limit):
        if not sched.has_unfinished_requests:
            return outs
        outs.append(step(sched, runner)[0])
    raise AssertionError("requests did not finish")


def test_add_rejects_impossible_requests_with_reasons():
    sched, _ = make(num_blocks=4, block_size=4, max_model_len=20)
    sched.add(Request("a", [1] * 10))
    with pytest.raises(ValueError, match="'a' is already in use"):
        sched.add(Request("a", [1]))
    with pytest.raises(ValueError, match="21 tokens is longer than max_model_len=20"):
        sched.add(Request("b", [1] * 21))
    with pytest.raises(ValueError, match="17 tokens does not fit in the whole KV cache"):
        sched.add(Request("c", [1] * 17))
    assert sched.num_waiting == 1


def test_config_validation():
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        SchedulerConfig(
            max_num_seqs=4, max_num_batched_tokens=8, cache=KVCacheConfig(block_size=16)
        )
    with pytest.raises(ConfigError, match="max_num_seqs"):
        SchedulerConfig(max_num_seqs=0)
    with pytest.raises(ConfigError, match="max_num_batched_tokens=100 must be >= max_num_seqs"):
        SchedulerConfig(max_num_seqs=128, max_num_batched_tokens=100)
    with pytest.raises(ConfigError, match="policy"):
        SchedulerConfig(policy="lifo")
    cache = KVCacheManager(KVCacheConfig(num_blocks=4, block_size=16))
    with pytest.raises(ValueError, match="block_size=16"):
        Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=8), cache)


def test_abort_unknown_is_false_and_abort_frees_blocks():
    sched, runner = make()
    assert sched.abort("nope") is False
    sched.add(Request("a", list(range(9)), max_tokens=50))
    sched.add(Request("b", [1, 2], max_tokens=50))
    step(sched, runner)
    free = sched.cache.num_free_blocks
    assert sched.abort("a") is True and sched.abort("a") is False
    assert sched.cache.num_free_blocks > free
    assert sched.abort("b") is True
    out = sched.schedule()
    assert out.num_requests == 0 and sorted(out.finished_req_ids) == ["a", "b"]


def test_aborting_many_waiting_requests_keeps_the_queue_small():
    sched, runner = make(num_blocks=64)
    for i in range(300):
        sched.add(Request(f"w{i}", [i % 7 + 1], max_tokens=2, priority=i % 3))
    for i in range(300):
        if i % 3:
            assert sched.abort(f"w{i}")
    assert sched.num_waiting == 100 and sched._waiting.num_entries <= 2 * 100 + 64
    outs = drain(sched, runner)
    scheduled = {r.request_id for out in outs for r in out.requests}
    assert scheduled == {f"w{i}" for i in range(0, 300, 3)}


def test_abort_between_schedule_and_update():
    sched, runner = make()
    sched.add(Request("a", [1, 2, 3], max_tokens=5))
    out = sched.schedule()
    sched.abort("a")
    assert sched.update(out, runner.step(out)) == []
    assert sched.cache.allocator.num_used_blocks == (
        sched.cache.prefix.num_cached_blocks if sched.cache.prefix else 0
    )


def test_decodes_first_then_prefill_chunks_within_the_budget():
    sched, runner = make(num_blocks=64, max_num_batched_tokens=8, max_num_seqs=8)
    for i in range(3):
        sched.add(Request(f"d{i}", [i + 1] * 3, max_tokens=30))
    step(sched, runner)  # 9 prompt tokens, budget 8: two steps
    step(sched, runner)
    sched.add(Request("long", list(range(20)), max_tokens=2))
    out, _ = step(sched, runner)
    assert out.num_decodes == 3 and [r.request_id for r in out.requests[3:]] == ["long"]
    assert out.query_lens == [1, 1, 1, 5] and out.num_batched_tokens == 8
    chunks = [5]
    while sched.requests["long"].num_computed_tokens < 20:
        out, _ = step(sched, runner)
        chunks.append(out.query_lens[-1])
        assert out.num_batched_tokens <= 8
    assert sum(chunks) == 20 and chunks == [5, 5, 5, 5]


def test_max_num_seqs_caps_running_requests():
    sched, runner = make(num_blocks=64, max_num_seqs=2)
    for i in range(5):
        sched.add(Request(f"r{i}", [i], max_tokens=3))
    out, _ = step(sched, runner)
    assert out.num_requests == 2 and sched.num_running == 2 and sched.num_waiting == 3
    drain(sched, runner)


def test_prefix_hit_skips_cached_tokens_but_computes_the_last():
    sched, runner = make(num_blocks=32, block_size=4)
    prompt = list(range(12))
    sched.add(Request("a", prompt, max_tokens=1))
    drain(sched, runner)
    sched.add(Request("b", [*prompt, 5, 6], max_tokens=1))
    out, _ = step(sched, runner)
    assert out.positions == [12, 13] and out.input_ids == [5, 6]
    sched.add(Request("c", prompt, max_tokens=1))  # the whole prompt is cached
    out, _ = step(sched, runner)
    assert out.positions == [8, 9, 10, 11]
    assert sched.cache.prefix.stats.hit_blocks == 3 + 2


def test_fcfs_preempts_the_newest_and_resumes_it_exactly():
    sched, runner = make(num_blocks=6, block_size=2, prefix=False, max_num_batched_tokens=16)
    reqs = [Request(f"r{i}", [i + 1] * 3, max_tokens=6) for i in range(3)]
    for r in reqs:
        sched.add(r)
    preempted = []
    for out in drain(sched, runner):
        preempted += out.preempted_req_ids
    assert preempted and preempted[0] == "r2"
    assert reqs[2].num_preemptions >= 1
    for r in reqs:
        assert r.token_ids == reference_generation(r, VOCAB, r._max_len)
        assert r.finish_reason is FinishReason.LENGTH and len(r.output_token_ids) == 6


def test_priority_arrival_preempts_lower_priority():
    sched, runner = make(num_blocks=4, block_size=4, prefix=False, policy="priority")
    low = Request("low", [1] * 10, max_tokens=20, priority=5)
    sched.add(low)
    step(sched, runner)
    high = Request("high", [2] * 9, max_tokens=2, priority=0)
    sched.add(high)
    out, _ = step(sched, runner)
    assert out.preempted_req_ids == ["low"] and [r.request_id for r in out.requests] == ["high"]
    assert low.status is RequestStatus.PREEMPTED
    drain(sched, runner)
    assert high.token_ids == reference_generation(high, VOCAB, high._max_len)
    assert low.token_ids == reference_generation(low, VOCAB, low._max_len)


def test_fcfs_arrival_never_preempts():
    sched, runner = make(num_blocks=4, block_size=4, prefix=False)
    sched.add(Request("first", [1] * 10, max_tokens=3, priority=5))
    step(sched, runner)
    sched.add(Request("second", [2] * 9, max_tokens=2, priority=0))
    out, _ = step(sched, runner)
    assert not out.preempted_req_ids and out.requests[0].request_id == "first"
    assert out.num_decodes == 1


def test_stop_conditions():
    sched, runner = make(num_blocks=64, max_model_len=12)
    plain = Request("len", [1, 2], max_tokens=4)
    probe = Request("probe", [1, 2, 3], max_tokens=3)
    sched.add(plain)
    sched.add(probe)
    drain(sched, runner)
    first = probe.output_token_ids[0]
    stop = Request("stop", [1, 2, 3], max_tokens=9, stop_token_ids=[first])
    eos = Request("eos", [1, 2, 3], max_tokens=9, eos_token_id=first)
    ignore = Request("ignore", [1, 2, 3], max_tokens=9, eos_token_id=first, ignore_eos=True)
    model_len = Request("model_len", [1] * 10, max_tokens=9)
    for r in (stop, eos, ignore, model_len):
        sched.add(r)
    drain(sched, runner)
    assert len(plain.output_token_ids) == 4 and plain.finish_reason is FinishReason.LENGTH
    assert stop.output_token_ids == [first] and stop.finish_reason is FinishReason.STOP
    assert eos.output_token_ids == [first] and eos.finish_reason is FinishReason.STOP
    assert len(ignore.output_token_ids) == 9 and ignore.finish_reason is FinishReason.LENGTH
    assert model_len.num_tokens == 13 and model_len.finish_reason is FinishReason.LENGTH


def test_fork_shares_blocks_and_copies_on_write():
    sched, runner = make(num_blocks=16, block_size=4)
    parent = Request("p", [1, 2, 3, 4, 5, 6], max_tokens=4)
    sched.add(parent)
    step(sched, runner)
    child = sched.fork("p", "c")
    assert child.blocks.block_ids == parent.blocks.block_ids
    out, _ = step(sched, runner)
    assert len(out.block_copies) == 1
    src, dst = out.block_copies[0]
    assert src == child.blocks.block_ids[1] and dst == parent.blocks.block_ids[1]
    drain(sched, runner)
    assert child.token_ids == parent.token_ids == reference_generation(parent, VOCAB, 10)
    with pytest.raises(ValueError, match="not running"):
        sched.fork("p", "d")
    sched.add(Request("q", [1, 2], max_tokens=4))
    sched.schedule()
    with pytest.raises(RuntimeError, match="call update"):
        sched.fork("q", "q2")


def test_output_views_and_arrays():
    sched, runner = make(num_blocks=32, block_size=4, max_num_batched_tokens=64)
    sched.add(Request("a", list(range(6)), max_tokens=3))
    step(sched, runner)
    sched.add(Request("b", list(range(10, 19)), max_tokens=3))
    out = sched.schedule()
    views = out.scheduled
    assert [v.request_id for v in views] == ["a", "b"]
    assert [v.is_prefill for v in views] == [False, True]
    assert views[0].positions == [6] and views[0].seq_len == 7
    assert views[1].positions == list(range(9)) and views[1].seq_len == 9
    arrays = out.to_arrays()
    assert arrays.query_start_loc.tolist() == [0, 1, 10]
    assert arrays.seq_lens.tolist() == [7, 9] and arrays.num_decodes == 1
    assert arrays.input_ids.dtype == np.int64 and arrays.slot_mapping.dtype == np.int64
    assert arrays.block_tables.dtype == np.int32 and arrays.block_tables.shape == (2, 3)
    assert arrays.block_tables[0, :2].tolist() == views[0].block_table
    assert arrays.slot_mapping.tolist() == out.slot_mapping
    sched.update(out, runner.step(out))
    with pytest.raises(ValueError, match="latest schedule"):
        sched.update(out, [0, 0])


def test_update_checks_the_number_of_tokens():
    sched, _ = make()
    sched.add(Request("a", [1], max_tokens=2))
    out = sched.schedule()
    with pytest.raises(ValueError, match="has 2 entries; the step scheduled 1"):
        sched.update(out, [1, 2])
    with pytest.raises(RuntimeError, match="before update"):
        sched.schedule()


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_registry_builds_schedulers(policy):
    config = {"max_num_seqs": 4, "cache": {"num_blocks": 8, "block_size": 4}}
    sched = infercore.create("scheduler", policy, config)
    assert isinstance(sched, SchedulerProtocol) and sched.policy.name == policy
    assert sched.cache.num_blocks == 8
    with pytest.raises(ValueError, match=r"SchedulerConfig\.cache"):
        infercore.create("scheduler", policy, {})
    other = "priority" if policy == "fcfs" else "fcfs"
    with pytest.raises(ValueError, match="contradicts"):
        infercore.create("scheduler", policy, {**config, "policy": other})


def test_streaming_generates_past_the_cache_with_sinks_and_a_window():
    window = StreamingConfig(sink_tokens=4, window_tokens=8)
    # 4 blocks: the sink, two for the window, one being written (dropped ones reused).
    cache = KVCacheManager(KVCacheConfig(num_blocks=4, block_size=4, streaming=window))
    config = SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=8, max_model_len=16)
    sched = Scheduler(config, cache)
    runner = FakeRunner(4, 4, VOCAB, sink_blocks=cache.sink_blocks)
    req = Request("s", [3, 1, 4, 1, 5, 9], max_tokens=200)
    sched.add(req)
    for out in drain(sched, runner):  # the runner checks sinks and window hold the right KV
        assert max(out.positions) < 4 + 8 + 8
    assert len(req.output_token_ids) == 200 and req.finish_reason is FinishReason.LENGTH
    assert req.token_ids == reference_generation(req, VOCAB, req._max_len)


def test_stalled_prefill_preempts_lower_ranked_decodes():
    sched, runner = make(
        num_blocks=10, block_size=4, prefix=False, max_num_batched_tokens=8, policy="priority"
    )
    low = [Request(f"low{i}", [i + 1] * 9, max_tokens=30, priority=5) for i in range(2)]
    for r in low:
        sched.add(r)
    for _ in range(6):
        step(sched, runner)
    assert all(r.status is RequestStatus.RUNNING for r in low)
    high = Request("high", [6] * 24, max_tokens=3, priority=0)
    sched.add(high)
    preempted = []
    while high.num_computed_tokens < high.num_prompt_tokens:
        out, _ = step(sched, runner)
        preempted += out.preempted_req_ids
        assert high in out.requests, "the high-priority prefill stalled behind decodes"
    # The prompt needed 6 of the 10 blocks while the decodes held 7: both gave way.
    assert sorted(preempted) == ["low0", "low1"]
    drain(sched, runner)
    for r in [*low, high]:
        assert r.token_ids == reference_generation(r, VOCAB, r._max_len)
