"""CUDA-graph timing: replays keep what the captured work reads alive, rotations capture
every copy, uncapturable work falls back to eager timing, graph-timed suites measure."""

import gc

import pytest
import torch

from infercore import bench
from infercore.bench.graphs import CALLS, COPIES, Rotation, graphed, time_impl
from infercore.bench.suites import attention_mixed

pytestmark = pytest.mark.cuda


def test_replay_keeps_captured_buffers_alive():
    out = torch.zeros(1024, device="cuda")

    def make():
        src = torch.arange(1024, dtype=torch.float32, device="cuda")
        return graphed(lambda: out.copy_(src * 2))

    replay = make()
    gc.collect()
    # Memory freed by a dropped source would be handed out here and overwritten.
    scratch = [torch.full((1024,), -1.0, device="cuda") for _ in range(64)]
    out.zero_()
    replay()
    torch.cuda.synchronize()
    del scratch
    assert torch.equal(out, torch.arange(1024, dtype=torch.float32, device="cuda") * 2)


def test_mixed_suite_check_after_allocator_churn():
    """The mixed-batch case's planned graph outlives its wrapper's local scope."""
    case = attention_mixed._case(2, 16, torch.device("cuda"))
    gc.collect()
    churn = [torch.full((1 << 20,), 0x7FFF_FFFF, dtype=torch.int32, device="cuda")
             for _ in range(32)]
    case.check()
    torch.cuda.synchronize()
    del churn


def _churn() -> list[torch.Tensor]:
    """Allocations that reuse (and overwrite) memory freed by dropped tensors."""
    gc.collect()
    return [torch.full((1 << 16,), float("nan"), device="cuda") for _ in range(64)]


def test_rotation_is_captured_once_and_replays_every_copy_after_churn():
    counts = [0] * COPIES

    def make() -> tuple[Rotation, list[torch.Tensor]]:
        xs = [torch.randn(9, 33, device="cuda") for _ in range(COPIES)]
        ws = [torch.randn(65, 33, device="cuda") for _ in range(COPIES)]

        def copy(j: int):
            def run() -> torch.Tensor:
                counts[j] += 1
                return torch.nn.functional.linear(xs[j], ws[j])

            return run

        expected = [torch.nn.functional.linear(x, w).clone() for x, w in zip(xs, ws, strict=True)]
        return Rotation([copy(j) for j in range(COPIES)]), expected

    rot, expected = make()
    replays: list = []

    def timer(replay) -> float:
        replays.append(replay)
        replay()
        return 2.0

    ms, mode = time_impl(rot, torch.device("cuda"), timer)
    assert mode == "graph" and ms == pytest.approx(2.0 / CALLS)
    (replay,) = replays
    assert replay.calls == CALLS
    per_copy = [len(range(j, CALLS, COPIES)) for j in range(COPIES)]
    assert counts == [2 * c for c in per_copy]  # warm-up and capture, nothing per replay
    outputs = rot.outputs
    del rot  # only the replay holds the rotation and its inputs now
    replays.clear()
    for out in outputs:
        out.fill_(float("nan"))
    scratch = _churn()
    replay()
    torch.cuda.synchronize()
    del scratch
    assert counts == [2 * c for c in per_copy]
    for out, ref in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("name", ["quant_decode", "gemm"])
def test_graph_timed_suite_case_measures(name):
    device = torch.device("cuda")
    case = next(c for c in bench.get_suite(name).make_cases(device, True)
                if all(isinstance(fn, Rotation) for fn in c.impls.values()))
    results = list(bench.run_case(bench.get_suite(name), case, device,
                                  bench.measure_ceilings(device, quick=True), rep_ms=20))
    assert all(r.error is None and r.ms > 0 for r in results), results
    assert {r.impl: r.timing for r in results}[case.peer] == "graph"
    assert all(r.timing in ("graph", "eager") for r in results)
