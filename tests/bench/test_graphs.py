"""Timing over rotating inputs: the CPU path (a loop over the same calls) and results."""

import json

import pytest
import torch
from rich.console import Console

from infercore import bench
from infercore.bench.graphs import COPIES, Rotation, rotate, time_impl
from infercore.bench.report import results_table

CPU = torch.device("cpu")


def _recorder(n: int) -> tuple[list[int], list]:
    seen: list[int] = []

    def make(j: int):
        def run() -> torch.Tensor:
            seen.append(j)
            return torch.full((3,), float(j + 1))

        return run

    return seen, [make(j) for j in range(n)]


def test_sequence_cycles_through_every_copy_and_keeps_outputs():
    seen, copies = _recorder(3)
    rot = Rotation(copies, calls=7)
    for call in rot.sequence():
        call()
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    assert [float(o[0]) for o in rot.outputs] == [1.0, 2.0, 3.0]


def test_cpu_fallback_times_a_loop_over_the_rotating_calls():
    seen, copies = _recorder(3)
    rot = Rotation(copies, calls=5)
    timed_calls: list[int] = []

    def timer(fn) -> float:
        before = len(seen)
        fn()
        timed_calls.append(len(seen) - before)
        return 10.0

    ms, mode = time_impl(rot, CPU, timer)
    assert mode == "eager"
    assert timed_calls == [5]  # one timed run is the whole sequence, in order
    assert seen == [0, 1, 2, 0, 1]
    assert ms == pytest.approx(10.0 / 5)


def test_plain_callable_is_timed_as_it_is():
    calls = []
    ms, mode = time_impl(lambda: calls.append(1), CPU, lambda fn: (fn(), 3.0)[1])
    assert (ms, mode, calls) == (3.0, "eager", [1])


def test_called_directly_a_rotation_runs_the_next_copy():
    seen, copies = _recorder(2)
    rot = Rotation(copies)
    outs = [rot() for _ in range(3)]
    assert seen == [0, 1, 0]
    assert [float(o[0]) for o in outs] == [1.0, 2.0, 1.0]


def test_rotate_pairs_argument_copies():
    xs = [torch.randn(2, 3) for _ in range(3)]
    ws = [torch.randn(4, 3) for _ in range(3)]
    rot = rotate(torch.nn.functional.linear, xs, ws)
    assert isinstance(rot, Rotation) and len(rot.copies) == 3
    for j in range(3):
        torch.testing.assert_close(rot(), xs[j] @ ws[j].t())
    single = rotate(torch.add, xs[:1], xs[:1], alpha=2)
    assert not isinstance(single, Rotation)
    torch.testing.assert_close(single(), xs[0] * 3)
    with pytest.raises(ValueError):
        rotate(torch.add, xs, ws[:2])


@pytest.mark.parametrize("kwargs", [{"copies": [], "calls": 4},
                                    {"copies": [print, print, print], "calls": 2}])
def test_rotation_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=r"copies|calls"):
        Rotation(kwargs["copies"], calls=kwargs["calls"])


@pytest.fixture
def rotating_suite():
    x = torch.randn(5, 7)
    seen, copies = _recorder(3)

    @bench.suite("test_rotating", "an eager and a rotating implementation", devices=("cpu",))
    def cases(device, quick):
        yield bench.Case("sum", {"eager": lambda: x.sum(), "rotating": Rotation(copies, calls=6),
                                 "broken": lambda: 1 / 0}, peer="eager", bytes=x.nbytes,
                         flops=x.numel(), moves_only=("rotating",))

    yield seen
    bench._SUITES.pop("test_rotating")


def test_results_record_the_timing_mode(rotating_suite):
    ceilings, results = bench.run_suite("test_rotating", CPU, quick=True, rep_ms=1)
    by_impl = {r.impl: r for r in results}
    assert by_impl["eager"].timing == "eager" and by_impl["rotating"].timing == "eager"
    assert by_impl["broken"].timing is None and "ZeroDivisionError" in by_impl["broken"].error
    assert by_impl["rotating"].ms > 0 and set(rotating_suite) == {0, 1, 2}
    # a row that only moves the bytes has GB/s but no TFLOP/s
    assert by_impl["eager"].tflops > 0 and by_impl["rotating"].tflops is None
    assert by_impl["rotating"].gbps > 0
    rows = json.loads(json.dumps(bench.as_dict(ceilings, results)))["results"]
    assert [r["timing"] for r in rows] == ["eager", "eager", None]
    by_impl["rotating"].timing = "graph"
    console = Console(width=250, record=True)
    console.print(results_table(ceilings, results, []))
    text = console.export_text()
    assert "timing" in text and "graph" in text


def test_gemm_suite_rotates_its_small_case_on_cpu():
    _, results = bench.run_suite("gemm", CPU, quick=True, rep_ms=1)
    case = next(iter(bench.get_suite("gemm").make_cases(CPU, True)))
    assert all(isinstance(fn, Rotation) and len(fn.copies) == COPIES
               for fn in case.impls.values())
    assert {r.impl for r in results} == set(case.impls)
    assert all(r.error is None and r.timing == "eager" and r.ms > 0 for r in results)
