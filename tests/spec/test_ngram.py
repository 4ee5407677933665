"""The n-gram (prompt lookup) proposer."""

from __future__ import annotations

import random

import pytest

import infercore
from infercore.config import ConfigError
from infercore.spec import NgramConfig, NgramProposer, Proposer, RequestView


def _propose(rows, k, **cfg):
    proposer = NgramProposer(NgramConfig(**cfg))
    prop = proposer.propose([RequestView(i, r) for i, r in enumerate(rows)], k)
    return prop.rows(), prop


def _oracle(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """The specification, written as plain loops."""
    size = len(tokens)
    for n in range(max_n, min_n - 1, -1):
        if size < n + 1:
            continue
        suffix = tokens[size - n :]
        for start in range(size - n - 1, -1, -1):
            if tokens[start : start + n] == suffix:
                return tokens[start + n : start + n + k]
    return []


def test_finds_the_continuation_of_an_earlier_occurrence():
    rows, prop = _propose([[5, 6, 7, 8, 5, 6]], 3, min_n=1, max_n=3)
    assert rows == [[7, 8, 5]]
    assert prop.probs is None and prop.tokens.shape == (1, 3)


def test_prefers_the_latest_occurrence():
    rows, _ = _propose([[1, 2, 9, 1, 2, 8, 3, 1, 2]], 3, min_n=2, max_n=2)
    assert rows == [[8, 3, 1]]


def test_prefers_the_longest_suffix():
    # [4, 1, 2] occurs at the start; only [1, 2] occurs later (followed by 6).
    rows, _ = _propose([[4, 1, 2, 7, 9, 1, 2, 6, 4, 1, 2]], 3, min_n=1, max_n=3)
    assert rows == [[7, 9, 1]]
    rows, _ = _propose([[4, 1, 2, 7, 9, 1, 2, 6, 4, 1, 2]], 3, min_n=1, max_n=2)
    assert rows == [[6, 4, 1]]


def test_min_n_and_missing_matches_give_no_draft():
    rows, prop = _propose([[1, 2, 3, 9, 3], [1, 2, 3]], 4, min_n=2, max_n=3)
    assert rows == [[], []]
    assert prop.num_tokens.tolist() == [0, 0] and bool((prop.tokens == -1).all())


def test_continuation_stops_at_the_end_and_per_row_k():
    rows, prop = _propose([[3, 3], [7, 8, 7, 8, 7], [7, 8, 7, 8, 7]], [4, 2, 0], min_n=1, max_n=2)
    assert rows == [[3], [8, 7], []]
    assert prop.tokens.tolist() == [[3, -1, -1, -1], [8, 7, -1, -1], [-1, -1, -1, -1]]


@pytest.mark.parametrize(("min_n", "max_n"), [(1, 1), (1, 3), (2, 4)])
def test_batched_search_matches_the_specification(min_n, max_n):
    rng = random.Random(min_n * 10 + max_n)
    rows = [[rng.randrange(4) for _ in range(rng.randrange(1, 60))] for _ in range(40)]
    ks = [rng.randrange(0, 6) for _ in rows]
    got, _ = _propose(rows, ks, min_n=min_n, max_n=max_n)
    assert got == [_oracle(r, k, min_n, max_n) for r, k in zip(rows, ks, strict=True)]


def test_growing_requests_match_a_fresh_proposer():
    rng = random.Random(3)
    proposer = NgramProposer(NgramConfig(min_n=1, max_n=3))
    tokens = {i: [rng.randrange(5) for _ in range(20)] for i in range(3)}
    for step in range(6):
        for t in tokens.values():
            t.extend(rng.randrange(5) for _ in range(step % 3))
        if step == 4:
            tokens[1] = [rng.randrange(5) for _ in range(30)]  # replaced: buffer rebuilt
        reqs = [RequestView(i, t) for i, t in tokens.items()]
        assert proposer.propose(reqs, 3).rows() == [_oracle(t, 3, 1, 3) for t in tokens.values()]


def test_rejects_bad_k_and_config():
    proposer = NgramProposer()
    reqs = [RequestView(0, [1, 2, 1])]
    with pytest.raises(ValueError, match="k must be >= 1"):
        proposer.propose(reqs, 0)
    with pytest.raises(ValueError, match="k has 2 entries"):
        proposer.propose(reqs, [1, 2])
    with pytest.raises(ValueError, match=r"k\[0\] must be an int >= 0"):
        proposer.propose(reqs, [-1])
    with pytest.raises(ConfigError, match="max_n"):
        NgramConfig(min_n=3, max_n=2)
    with pytest.raises(ConfigError, match="min_n"):
        NgramConfig(min_n=0)


def test_built_from_the_registry():
    proposer = infercore.create("spec.proposer", "ngram", {"min_n": 1, "max_n": 2})
    assert isinstance(proposer, Proposer)
    assert proposer.propose([RequestView("r", [4, 5, 4])], 2).rows() == [[5, 4]]
