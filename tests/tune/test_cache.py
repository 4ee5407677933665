"""The tuning cache file: round trip, corruption, old schema, concurrent writers."""

import json
import multiprocessing

import pytest

from infercore import tune
from infercore.tune import TunedEntry, TuningCache, TuningCacheWarning


def _entry(i: int) -> TunedEntry:
    return TunedEntry("triton", {"block_m": 16 * (i + 1)}, 0.1 * (i + 1), "torch", 0.5)


def test_update_merges_and_round_trips(cache_path):
    cache = TuningCache()
    assert cache.path == cache_path and cache.read() == {}
    cache.update({"a": _entry(0)})
    merged = cache.update({"b": _entry(1)})
    assert set(merged) == {"a", "b"}
    data = json.loads(cache_path.read_text())
    assert data["schema"] == tune.SCHEMA_VERSION
    assert TuningCache().read() == {"a": _entry(0), "b": _entry(1)}
    cache.update({"a": _entry(2)})  # a newer result for a key replaces the old one
    assert cache.read()["a"] == _entry(2)
    assert cache.clear() and not cache_path.exists() and not cache.clear()


@pytest.mark.parametrize("text", [
    "{not json",
    json.dumps({"schema": tune.SCHEMA_VERSION - 1, "entries": {}}),
    json.dumps({"schema": tune.SCHEMA_VERSION, "entries": {"k": {"ms": 1.0}}}),
    json.dumps([1, 2]),
])
def test_unreadable_file_warns_is_ignored_and_rewritten(cache_path, text):
    cache_path.write_text(text)
    with pytest.warns(TuningCacheWarning, match="ignored"):
        assert TuningCache().read() == {}
    with pytest.warns(TuningCacheWarning):
        TuningCache().update({"k": _entry(0)})
    assert TuningCache().read() == {"k": _entry(0)}  # valid again, no warning


def test_corrupt_cache_never_breaks_dispatch(cache_path):
    import torch

    from infercore.ops import gemm

    cache_path.write_text("\x00garbage")
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    with pytest.warns(TuningCacheWarning):
        out = gemm(a, b)
    torch.testing.assert_close(out, a @ b)
    assert tune.table().entries == {}


def _writer(path: str, worker: int, count: int) -> None:
    cache = TuningCache(path)
    for i in range(count):
        cache.update({f"w{worker}-{i}": _entry(i)})


def test_concurrent_writers_lose_nothing(cache_path):
    workers, count = 4, 15
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(cache_path), w, count))
             for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    entries = TuningCache().read()
    assert set(entries) == {f"w{w}-{i}" for w in range(workers) for i in range(count)}
    assert not list(cache_path.parent.glob("*.tmp"))


def test_shipped_defaults_parse(monkeypatch):
    assert tune.shipped_entries() == {}  # the test session turns them off
    monkeypatch.setenv("INFERCORE_TUNING_SHIPPED", "1")
    entries = tune.shipped_entries()
    assert any(key.startswith("NVIDIA H200 sm90|attention.decode|") for key in entries)
    for key, entry in entries.items():
        assert key.count("|") >= 2 and entry.ms > 0
        assert entry.default_ms >= entry.ms
