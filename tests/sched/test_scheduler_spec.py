"""Scheduler with draft tokens: verification steps, emitted-token updates, KV rollback."""

from __future__ import annotations

import random

import pytest

from infercore.cache import KVCacheConfig, KVCacheManager
from infercore.sched import Request, Scheduler, SchedulerConfig
from tests.sched.fake_model import FakeRunner, reference_generation

VOCAB = 7


def make(num_blocks=32, block_size=4, prefix=True, **cfg):
    cache = KVCacheManager(KVCacheConfig(num_blocks=num_blocks, block_size=block_size,
                                         enable_prefix_caching=prefix))
    cfg.setdefault("max_num_seqs", 8)
    return Scheduler(SchedulerConfig(**cfg), cache), FakeRunner(num_blocks, block_size, VOCAB)


def oracle_drafts(sched, expected, k, rng, wrong=0.3):
    """Up to ``k`` drafts per decoding request: the true continuation, with each draft
    replaced by a wrong token with probability ``wrong`` (and the rest kept)."""
    drafts = {}
    for req in sched.decoding:
        truth = expected[req.request_id][req.num_tokens : req.num_tokens + k]
        drafts[req.request_id] = [
            (t + 1) % VOCAB if rng.random() < wrong else t for t in truth
        ]
    return drafts


def run(sched, runner, requests, expected, k, seed=0, max_steps=500):
    rng = random.Random(seed)
    steps = 0
    for r in requests:
        sched.add(r)
    while sched.has_unfinished_requests:
        out = sched.schedule(oracle_drafts(sched, expected, k, rng))
        sched.update(out, runner.step(out))
        steps += 1
        assert steps < max_steps
    return steps


@pytest.mark.parametrize(("num_blocks", "prefix"), [(64, True), (64, False), (12, True)],
                         ids=["roomy-prefix", "roomy", "tight-preempts"])
def test_emitted_tokens_equal_plain_decoding(num_blocks, prefix):
    """Verified drafts (some wrong) give each request the tokens it gets alone; the fake
    model checks every cache entry it reads, so a slot of a rejected draft left in a
    block table, or a stale block after a rollback, fails the step."""
    rng = random.Random(1)
    reqs = [Request(f"r{i}", [rng.randrange(VOCAB) for _ in range(rng.randrange(1, 11))],
                    max_tokens=rng.randrange(1, 25), stop_token_ids=[6] if i % 3 else [])
            for i in range(7)]
    sched, runner = make(num_blocks=num_blocks, prefix=prefix, max_num_batched_tokens=16,
                         max_model_len=40)
    expected = {r.request_id: reference_generation(r, VOCAB, r._max_len) for r in reqs}
    plain_sched, plain_runner = make(num_blocks=num_blocks, prefix=prefix,
                                     max_num_batched_tokens=16, max_model_len=40)
    plain_reqs = [Request(r.request_id, r.prompt_token_ids, max_tokens=r.max_tokens,
                          stop_token_ids=r.stop_token_ids) for r in reqs]
    plain_steps = run(plain_sched, plain_runner, plain_reqs, expected, k=0)
    steps = run(sched, runner, reqs, expected, k=4)
    for r in reqs:
        assert r.token_ids == expected[r.request_id], r.request_id
    assert steps < plain_steps, "accepted drafts save steps"
    assert sched.cache.num_free_blocks == num_blocks


@pytest.mark.parametrize("num_blocks", [6, 3])
def test_drafts_cut_to_budget_length_and_blocks(num_blocks):
    sched, runner = make(num_blocks=num_blocks, block_size=4, max_num_batched_tokens=8,
                         max_num_seqs=4)
    a = Request("a", [1, 2, 3], max_tokens=4)
    b = Request("b", [4, 5], max_tokens=20)
    for r in (a, b):
        sched.add(r)
    out = sched.schedule()
    sched.update(out, runner.step(out))
    assert [r.request_id for r in sched.decoding] == ["a", "b"]
    out = sched.schedule({"a": [0] * 9, "b": [0] * 9})
    # a (4 tokens, length limit 7): 2 drafts, as 3 emitted tokens reach the limit.
    # b: the budget left, 8 - 2 decodes - 2 drafts of a = 4; with 3 blocks, a took the
    # last free one and b's own block holds its token and 1 draft.
    k = 4 if num_blocks == 6 else 1
    assert out.num_draft_tokens == [2, k]
    assert out.query_lens == [3, 1 + k]
    assert out.query_start_loc == [0, 3, 4 + k]
    assert out.seq_lens == [6, 3 + k]
    assert out.positions == [3, 4, 5, *range(2, 3 + k)]
    assert out.to_arrays().query_start_loc.tolist() == [0, 3, 4 + k]
    assert out.num_spec_tokens == 2 + k
    sched.update(out, [[0], [0] * (1 + k)])
    assert a.num_computed_tokens == 4 and b.num_computed_tokens == 3 + k
    assert len(a.blocks.block_ids) == 1, "a's rejected drafts gave back their block"


def test_rejected_drafts_free_their_blocks():
    sched, runner = make(num_blocks=8, block_size=2, max_num_batched_tokens=16)
    r = Request("r", [1, 2], max_tokens=20)
    sched.add(r)
    out = sched.schedule()
    sched.update(out, runner.step(out))
    free = sched.cache.num_free_blocks
    out = sched.schedule({"r": [0, 1, 2, 3, 4, 5]})
    assert out.num_draft_tokens == [6]
    assert sched.cache.num_free_blocks == free - 4  # positions 2..8: blocks 1 to 4
    sched.update(out, [[5]])  # every draft rejected
    assert r.num_computed_tokens == 3 and r.num_tokens == 4
    assert sched.cache.num_free_blocks == free - 1
    assert len(r.blocks.block_ids) == 2


def test_stop_token_inside_emitted_tokens_ends_the_request():
    sched, _ = make()
    r = Request("r", [1, 2], max_tokens=10, stop_token_ids=[6])
    sched.add(r)
    out = sched.schedule()
    sched.update(out, [3])
    out = sched.schedule({"r": [4, 6, 5]})
    finished = sched.update(out, [[4, 6, 5, 2]])
    assert finished == [r] and r.output_token_ids == [3, 4, 6]
    assert r.finish_reason.value == "stop"
    assert sched.cache.num_free_blocks == sched.cache.num_blocks


def test_update_checks_emitted_counts():
    sched, _ = make()
    sched.add(Request("r", [1, 2], max_tokens=10))
    out = sched.schedule()
    sched.update(out, [3])
    out = sched.schedule({"r": [4, 5]})
    with pytest.raises(ValueError, match=r"'r' emitted 4 tokens.*2 draft tokens.*1 to 3"):
        sched.update(out, [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="emitted 0 tokens"):
        sched.update(out, [[]])
    sched.update(out, [[4, 5, 1]])
    assert sched.requests["r"].output_token_ids == [3, 4, 5, 1]


def test_without_drafts_the_step_is_unchanged():
    sched, runner = make()
    sched.add(Request("r", [1, 2, 3], max_tokens=3))
    out = sched.schedule()
    sched.update(out, runner.step(out))
    out = sched.schedule({})
    assert out.num_draft_tokens == [] and out.query_lens == [1]
    sched.update(out, [[2]])  # the list form works for plain steps too
    assert sched.requests["r"].output_token_ids[-1] == 2
