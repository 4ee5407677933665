"""CPU cost of scheduling: one ``schedule()`` + ``update()`` step, and the block allocator.

Step cases hold N running decode requests (staggered lengths, so block boundaries fall on
different steps, and a shared system prompt, so the prefix cache is busy) and time one
step that advances every request by a token. The peer is the same step with prefix
caching off. "prefix cache full" first fills every free block with cached, unused
blocks, so each block a decode enters evicts one (a busy server's steady state). The
mixed case adds two 512-token prompts per step on top of ~256 decodes (chunked prefill,
prefix hits on a shared system prompt, requests finishing). The allocator case times
1024 ``allocate(1)`` then one ``free`` of them all; the peer is a bare Python free list
(pop/append, no reference counts).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

import torch

from infercore.bench import Case, suite
from infercore.cache import BlockAllocator, KVCacheConfig, KVCacheManager
from infercore.sched import Request, Scheduler, SchedulerConfig, SchedulerOutput

BLOCK_SIZE = 16
SYSTEM_PROMPT = list(range(1000, 1256))  # 256 shared tokens: 16 blocks


def _scheduler(max_num_seqs: int, num_blocks: int, prefix: bool, budget: int) -> Scheduler:
    cache = KVCacheManager(
        KVCacheConfig(
            num_blocks=num_blocks, block_size=BLOCK_SIZE, enable_prefix_caching=prefix
        )
    )
    config = SchedulerConfig(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=1 << 20
    )
    return Scheduler(config, cache)


def _fake_tokens(out: SchedulerOutput) -> list[int]:
    """A cheap stand-in for sampling: one token per scheduled request."""
    return out.input_ids[: out.num_requests]


def _step(sched: Scheduler) -> SchedulerOutput:
    out = sched.schedule()
    sched.update(out, _fake_tokens(out))
    if out.preempted_req_ids:
        raise RuntimeError("the benchmark's pool ran out of blocks: timings would mix in recompute")
    return out


#: Decode steps a decoding benchmark has blocks for (timing loops stop at 10,000 calls).
MAX_DECODE_STEPS = 12_000
#: The same with every free block cached first (each new block evicts a cached one); a
#: longer timing loop runs out of blocks and raises.
MAX_FULL_CACHE_STEPS = 3_000


def decoding_scheduler(
    num_requests: int, prefix: bool, *, full_cache: bool = False, seed: int = 0
) -> Scheduler:
    """A scheduler whose ``num_requests`` requests have finished prefill and decode, with
    blocks for ``MAX_DECODE_STEPS`` more tokens each; with ``full_cache``, blocks for
    ``MAX_FULL_CACHE_STEPS`` more, all of them first filled with cached unused blocks."""
    rng = random.Random(seed)
    steps = MAX_FULL_CACHE_STEPS if full_cache else MAX_DECODE_STEPS
    blocks_per_request = (len(SYSTEM_PROMPT) + 160 + steps) // BLOCK_SIZE + 2
    sched = _scheduler(num_requests, num_requests * blocks_per_request, prefix, budget=8192)
    for i in range(num_requests):
        unique = [rng.randrange(32000) for _ in range(rng.randrange(16, 160))]
        sched.add(Request(f"d{i}", SYSTEM_PROMPT + unique, max_tokens=1 << 20))
    while _step(sched).num_decodes < num_requests:
        pass
    if full_cache:
        _fill_prefix_cache(sched.cache)
    return sched


def _fill_prefix_cache(cache: KVCacheManager) -> None:
    """Turn every free block into a cached, unused one: chains of 64 blocks, each chain
    starting with a token no request uses (the rest repeat, distinct by their parent)."""
    bs = cache.block_size
    for first in itertools.count(1 << 24):
        n = min(64, cache.allocator.num_free_blocks) * bs
        if not n:
            return
        tokens = [first] + [0] * (n - 1)
        seq = cache.new_sequence()
        cache.allocate(seq, 0, n)
        cache.register(seq, tokens, n)
        cache.free(seq)


def mixed_scheduler(prefix: bool) -> tuple[Scheduler, Callable[[], SchedulerOutput]]:
    """A scheduler in a steady mix, and its step: two new 512-token prompts per step
    (prefilled in chunks), ~256 decoding requests of 128 tokens each."""
    sched = _scheduler(320, 32768, prefix, budget=2048)
    ids = itertools.count()
    unique = 512 - len(SYSTEM_PROMPT)

    def step() -> SchedulerOutput:
        for _ in range(2):
            i = next(ids)
            start = 100_000 + i * unique  # every prompt differs after the system prompt
            prompt = SYSTEM_PROMPT + list(range(start, start + unique))
            sched.add(Request(f"m{i}", prompt, max_tokens=128))
        return _step(sched)

    for _ in range(300):  # reach the steady state
        step()
    return sched, step


def check_step(sched: Scheduler) -> None:
    """One step: every running decode is scheduled, with slots inside its own blocks."""
    running = sched.num_running
    out = sched.schedule()
    bs = sched.cache.block_size
    if out.num_decodes != running or out.num_batched_tokens != running:
        raise AssertionError(f"{out.num_decodes} decodes scheduled, {running} running")
    for pos, slot, table in zip(out.positions, out.slot_mapping, out.block_tables, strict=True):
        if slot != table[pos // bs] * bs + pos % bs:
            raise AssertionError(f"slot {slot} is not position {pos} of its block table")
    sched.update(out, _fake_tokens(out))


def allocator_cycle(allocator: BlockAllocator, n: int) -> None:
    blocks = [allocator.allocate(1)[0] for _ in range(n)]
    allocator.free(blocks)


def free_list_cycle(free: list[int], n: int) -> None:
    blocks = [free.pop() for _ in range(n)]
    free.extend(blocks)


@suite(
    "scheduler",
    "CPU time of one schedule()+update() step (prefix caching on; peer: off) and of "
    "1024 block allocations + frees (peer: bare free list)",
    devices=("cpu",),
)
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    sizes = (256,) if quick else (256, 1024)
    for n in sizes:
        off = decoding_scheduler(n, prefix=False)
        for full in (False, True):
            on = decoding_scheduler(n, prefix=True, full_cache=full)
            yield Case(
                f"decode, {n} running" + (", prefix cache full" if full else ""),
                {"infercore": lambda s=on: _step(s), "prefix caching off": lambda s=off: _step(s)},
                peer="prefix caching off",
                check=lambda s=on: check_step(s),
            )
    mixed, mixed_on = mixed_scheduler(prefix=True)
    _, mixed_off = mixed_scheduler(prefix=False)

    def check_mixed() -> None:
        out = mixed_on()
        if not (out.num_decodes >= 200 and out.num_prefills >= 1):
            raise AssertionError(f"not a mixed step: {out.num_decodes} decodes")
        if out.num_batched_tokens > mixed.config.max_num_batched_tokens:
            raise AssertionError("token budget exceeded")

    yield Case(
        "mixed, ~256 decodes + two 512-token prompts",
        {"infercore": mixed_on, "prefix caching off": mixed_off},
        peer="prefix caching off",
        check=check_mixed,
    )
    n = 1024
    allocator = BlockAllocator(n)
    free = list(range(n))

    def check_allocator() -> None:
        allocator_cycle(allocator, n)
        if allocator.num_free_blocks != n:
            raise AssertionError("allocate/free cycle leaked blocks")

    yield Case(
        f"allocator, {n} allocate(1) then one free of all",
        {
            "infercore": lambda: allocator_cycle(allocator, n),
            "python free list": lambda: free_list_cycle(free, n),
        },
        peer="python free list",
        check=check_allocator,
    )
