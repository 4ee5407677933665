"""Search and selection with a deterministic timer and clock on a small registry."""

from dataclasses import dataclass

import pytest
import torch

from infercore import tune
from infercore.ops.gemm.reference import ReferenceGemm
from infercore.ops.gemm.torch_gemm import TorchGemm
from infercore.registry import Backend, Family, Registry
from infercore.tune import Candidate, Tuner
from infercore.tune.config import TuneConfig
from infercore.tune.run import plan_workloads, run_tuning
from infercore.tune.workloads import GemmWorkload


@dataclass(frozen=True)
class ToyConfig:
    tile: int = 0
    wrong: bool = False


class ToyGemm(Backend):
    """Correct unless ``wrong``; a negative tile fails like a kernel that does not compile."""

    family, name, priority = "gemm", "toy", 50
    tune_config_class = ToyConfig

    def tune_space(self, inputs):
        return [{"tile": 1}, {"tile": 2}, {"tile": 3, "wrong": True}, {"tile": -1}]

    def run(self, a, b, bias, out, config=None):
        if config is not None and config.tile < 0:
            raise RuntimeError("out of resources")
        scale = 1.5 if config is not None and config.wrong else 1.0
        out.copy_((a.float() @ b.float() * scale).to(out.dtype))


@pytest.fixture
def registry():
    reg = Registry(autoload=False)
    reg.add_family(Family("gemm"))
    for b in (ReferenceGemm, TorchGemm, ToyGemm):
        reg.register(b)
    return reg


class FakeTimer:
    """Fixed times per candidate; each timing advances a fake clock by one second."""

    def __init__(self, times):
        self.times, self.now, self.calls = times, 0.0, []

    def clock(self):
        return self.now

    def __call__(self, fn, candidate):
        fn()  # the callable really runs the candidate
        self.calls.append(candidate)
        self.now += 1.0
        return self.times[candidate.describe()]


TIMES = {"torch (default)": 4.0, "toy (default)": 3.0, 'toy {"tile":1}': 2.5,
         'toy {"tile":2}': 1.5, 'toy {"tile":3,"wrong":true}': 0.1}


def test_picks_fastest_correct_candidate(registry):
    timer = FakeTimer(TIMES)
    tuner = Tuner(timer, budget_s=100, clock=timer.clock, registry=registry)
    [r] = tuner.tune([GemmWorkload(5, 33, 17)], torch.device("cpu"), torch.float32)
    assert r.default == Candidate("torch")  # highest priority that accepts the inputs
    assert timer.calls[0] == Candidate("torch")
    assert r.best == Candidate("toy", {"tile": 2})
    assert r.speedup == pytest.approx(4.0 / 1.5)
    rejected = {c.config["tile"]: why for c, why in r.rejected.items()}
    assert set(rejected) == {3, -1}  # wrong output never timed, failure recorded
    assert "relative error" in rejected[3] and "out of resources" in rejected[-1]
    entry = r.entry()
    assert (entry.backend, entry.config, entry.ms) == ("toy", {"tile": 2}, 1.5)
    assert (entry.default_backend, entry.default_ms) == ("torch", 4.0)
    assert r.key.startswith("cpu|gemm|float32->float32 M<=8 N=33 K=17")


def test_budget_stops_search_but_times_the_default(registry):
    timer = FakeTimer(TIMES)
    tuner = Tuner(timer, budget_s=2, clock=timer.clock, registry=registry)
    r1, r2 = tuner.tune([GemmWorkload(5, 33, 17), GemmWorkload(40, 33, 17)],
                        torch.device("cpu"), torch.float32)
    assert len(r1.times) == 1 and r1.skipped == 5  # 1 s share: default only
    assert len(r2.times) == 1 and r2.best == Candidate("torch")
    timer.now = 0.0
    tuner.budget_s = 0.001
    [r3] = tuner.tune([GemmWorkload(3, 5, 7)], torch.device("cpu"), torch.float32)
    assert r3.default_ms == 4.0 and r3.speedup == 1.0


def test_plan_workloads_shapes_models_and_cpu_limits():
    cfg = TuneConfig(families=["gemm", "attention.decode"], model="llama-8b")
    ws = plan_workloads(cfg)
    gemms = {(w.m, w.n, w.k) for w in ws if w.family == "gemm"}
    assert (16, 6144, 4096) in gemms and (2048, 4096, 14336) in gemms and len(gemms) == 16
    decodes = [w for w in ws if w.family == "attention.decode"]
    assert {(w.heads, w.kv_heads, w.head_dim) for w in decodes} == {(32, 8, 128)}
    mixed = TuneConfig(families=["gemm", "attention.decode"], shapes=["3,5,7", "2,40",
                                                                      "gemm:1,2,3"])
    assert [w.family for w in plan_workloads(mixed)] == ["gemm", "attention.decode", "gemm"]
    with pytest.raises(ValueError, match="fits none"):
        plan_workloads(TuneConfig(families=["gemm"], shapes=["1,2"]))
    with pytest.raises(ValueError, match="too large for the CPU"):
        plan_workloads(TuneConfig(families=["gemm"], model="llama-8b", device="cpu"))
    with pytest.raises(ValueError, match="tiny shapes"):
        plan_workloads(TuneConfig(families=["gemm"], shapes=["512,512,512"], device="cpu"))
    with pytest.raises(ValueError, match="no tuning workload"):
        plan_workloads(TuneConfig(families=["norm.rms"], shapes=["1,2,3"]))
    with pytest.raises(ValueError, match="dtype"):
        TuneConfig(families=["gemm"], dtype="int3")


def test_run_tuning_writes_cache_and_dispatch_follows(cache_path, monkeypatch):
    """End to end on the real registry: a fake timer that favours the reference backend
    (never a candidate) leaves the default; one favouring triton makes auto pick it."""
    from infercore.registry import resolve
    from infercore.tune.workloads import GemmWorkload as GW

    def timer(fn, cand):
        return 1.0 if cand.backend == "triton" and cand.config is None else 2.0

    cfg = TuneConfig(families=["gemm"], shapes=["5,33,17"], dtype="fp32", device="cpu")
    report = run_tuning(cfg, timer=timer)
    [r] = report.results
    assert r.best == Candidate("triton") and report.path == cache_path
    assert tune.TuningCache().read()[r.key].backend == "triton"
    problem = GW(5, 33, 17).build(torch.device("cpu"), torch.float32)
    assert resolve("gemm", problem.inputs).name == "triton"
