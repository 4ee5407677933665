"""The infercore command through typer's runner and as an installed console script."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from infercore import bench
from infercore.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("info", "list", "bench", "tune"):
        assert command in result.output


def test_list_json_schema(fresh_plugins):
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"families", "plugins"}
    entries = data["families"]["norm.rms"]
    assert [e["name"] for e in entries] == ["triton", "reference"]
    for e in entries:
        assert set(e) == {"name", "available", "reasons", "plugin", "graph_safe"}
        assert e["available"] == (not e["reasons"])
        assert e["plugin"] == "infercore.ops.norm.plugin"
        assert e["graph_safe"] is True
    paged = {e["name"]: e["graph_safe"] for e in data["families"]["attention.paged"]}
    assert paged["reference"] is False and paged["triton"] is True
    ref = entries[1]
    assert ref["available"] is True
    for p in data["plugins"]:
        assert set(p) == {"name", "status", "error"}
        assert p["status"] in ("loaded", "failed", "blocked")


def test_list_shows_honest_triton_availability(fresh_plugins, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    data = json.loads(runner.invoke(app, ["list", "--json", "--family", "norm.rms"]).output)
    triton_entry = data["families"]["norm.rms"][0]
    assert triton_entry["available"] is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "cuda" in triton_entry["reasons"][0]


def test_list_table_and_unknown_family(fresh_plugins):
    result = runner.invoke(app, ["list", "--family", "kv.write"])
    assert result.exit_code == 0 and "no CUDA graphs" in result.output
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "norm.rms" in result.output and "reference" in result.output
    bad = runner.invoke(app, ["list", "--family", "no.such"])
    assert bad.exit_code == 2 and "unknown family" in bad.output


def test_info_json():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["packages"]["torch"] and data["cuda_available"] == torch.cuda.is_available()
    assert any(p["name"] == "infercore.ops.norm.plugin" for p in data["plugins"])


@pytest.fixture
def tiny_suite():
    @bench.suite("test_tiny", "two ways to add", devices=("cpu",))
    def cases(device, quick):
        x = torch.randn(1000)
        yield bench.Case("add 1000", {"mine": lambda: x + x, "peer": lambda: x * 2},
                         peer="peer", bytes=3 * x.numel() * 4)

    yield "test_tiny"
    bench._SUITES.pop("test_tiny")


def test_bench_runs_a_suite_and_writes_json(tiny_suite, tmp_path):
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["bench", tiny_suite, "--device", "cpu", "--rep-ms", "5",
                                 "--json", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "add 1000" in result.output
    data = json.loads(out.read_text())
    rows = {r["impl"]: r for r in data["results"]}
    assert set(rows) == {"mine", "peer"} and rows["mine"]["ms"] > 0
    assert rows["mine"]["vs_peer"] == pytest.approx(rows["peer"]["ms"] / rows["mine"]["ms"])
    assert data["ceilings"]["copy_gbps"] > 0


def test_bench_reports_a_failed_check_without_timing_it(tmp_path):
    def wrong():
        raise AssertionError("relative error 0.5")

    @bench.suite("test_wrong", "a case whose check fails", devices=("cpu",))
    def cases(device, quick):
        yield bench.Case("bad", {"mine": lambda: None}, check=wrong)
        yield bench.Case("good", {"mine": lambda: None})

    try:
        out = tmp_path / "r.json"
        result = runner.invoke(app, ["bench", "test_wrong", "--device", "cpu", "--rep-ms", "2",
                                     "--json", str(out)])
    finally:
        bench._SUITES.pop("test_wrong")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert rows[0]["case"] == "bad" and "relative error 0.5" in rows[0]["error"]
    assert rows[1]["case"] == "good" and rows[1]["error"] is None and rows[1]["ms"] > 0


def test_bench_keeps_other_suites_when_one_breaks(tiny_suite, tmp_path, monkeypatch):
    @bench.suite("test_broken", "a suite that fails while building its cases", devices=("cpu",))
    def cases(device, quick):
        raise RuntimeError("no such kernel")
        yield  # pragma: no cover

    try:
        out = tmp_path / "r.json"
        result = runner.invoke(app, ["bench", "test_broken", tiny_suite, "--device", "cpu",
                                     "--rep-ms", "2", "--json", str(out)])
        assert result.exit_code == 0, result.output
        rows = json.loads(out.read_text())["results"]
        assert rows[0]["suite"] == "test_broken" and "no such kernel" in rows[0]["error"]
        assert {r["impl"] for r in rows[1:]} == {"mine", "peer"}
        assert all(r["error"] is None for r in rows[1:])

        # A device left unusable by a suite: the remaining suites are reported, not run.
        monkeypatch.setattr(bench, "_device_failure", lambda device, name: f"{name} broke it")
        _, results = bench.run_suites(["test_broken", tiny_suite], torch.device("cpu"),
                                      rep_ms=2)
    finally:
        bench._SUITES.pop("test_broken")
    assert results[-1].suite == tiny_suite
    assert results[-1].error == "not run: test_broken broke it"


def test_bench_rejects_unknown_suite_and_wrong_device(tiny_suite):
    assert runner.invoke(app, ["bench", "nope"]).exit_code == 2
    wrong = runner.invoke(app, ["bench", "attention_decode", "--device", "cpu"])
    assert wrong.exit_code == 2 and "runs on cuda" in wrong.output
    listing = runner.invoke(app, ["bench", "--list"])
    assert listing.exit_code == 0 and "test_tiny" in listing.output


def test_console_script_installed():
    exe = shutil.which("infercore") or str(
        __import__("pathlib").Path(sys.executable).with_name("infercore"))
    result = subprocess.run([exe, "list", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "norm.rms" in json.loads(result.stdout)["families"]


def test_loglevel_debug_reports_dispatch(tmp_path):
    code = (
        "import torch, infercore;"
        "infercore.ops.rms_norm(torch.randn(2, 8), torch.ones(8))"
    )
    env = {**os.environ, "INFERCORE_LOGLEVEL": "debug", "TRITON_INTERPRET": "0"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**env, "INFERCORE_LOGLEVEL": ""}, check=True)
    assert quiet.stderr == ""
    if torch.cuda.is_available():
        pytest.skip("the triton backend is not passed over on a CUDA machine")
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    assert "norm.rms: using 'reference'; passed over" in loud.stderr


@pytest.mark.parametrize("command, options", [
    ("bench", ("--quick", "--json", "--plot", "--list", "--device")),
    ("tune", ("--shapes", "--model-config", "--dtype", "--budget", "--output", "--show",
              "--clear")),
])
def test_bench_and_tune_help(command, options):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output


def test_bench_quick_on_cpu_writes_valid_json(tmp_path):
    out = tmp_path / "all.json"
    result = runner.invoke(app, ["bench", "--quick", "--device", "cpu", "--rep-ms", "1",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    suites = {r["suite"] for r in data["results"]}
    assert {"norm", "gemm", "scheduler"} <= suites  # several suites, one run
    for r in data["results"]:
        assert r["error"] is None, r
        assert r["ms"] > 0 and (r["vs_peer"] is None or r["vs_peer"] > 0)
    assert data["ceilings"]["matmul_tflops"] > 0 and isinstance(data["notes"], list)


def test_bench_plot_needs_matplotlib_or_draws(tmp_path, monkeypatch):
    from infercore.bench.plot import roofline_points

    data = {"ceilings": {"device": "cpu", "copy_gbps": 10.0, "matmul_tflops": 1.0},
            "results": [
                {"suite": "g", "case": "c", "impl": "x", "ms": 1.0, "gbps": 2.0,
                 "tflops": 0.5, "fraction_of_ceiling": 0.5, "error": None},
                {"suite": "n", "case": "c", "impl": "y", "ms": 1.0, "gbps": 5.0,
                 "tflops": None, "fraction_of_ceiling": 0.5, "error": None},
                {"suite": "n", "case": "c", "impl": "z", "ms": float("nan"), "error": "boom"}]}
    roof, frac = roofline_points(data)
    assert roof == [("g: c [x]", 250.0, 0.5)] and frac == [("n: c [y]", 0.5)]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = runner.invoke(app, ["bench", "test_tiny_plot_none", "--device", "cpu"])
    assert result.exit_code == 2  # unknown suite
    result = runner.invoke(app, ["bench", "scheduler", "--quick", "--device", "cpu",
                                 "--rep-ms", "1", "--plot", str(tmp_path / "r.png")])
    assert result.exit_code == 1 and "matplotlib" in result.output


def test_tune_on_cpu_show_and_clear(tmp_path, monkeypatch):
    from infercore import tune

    cache = tmp_path / "tuning.json"
    monkeypatch.setenv(tune.CACHE_ENV, str(cache))
    tune.reset()
    try:
        result = runner.invoke(app, ["tune", "gemm", "--device", "cpu", "--shapes", "5,33,17",
                                     "--dtype", "fp32", "--budget", "60"], terminal_width=200)
        assert result.exit_code == 0, result.output
        assert "speedup" in result.output
        [key] = json.loads(cache.read_text())["entries"]
        assert key.startswith("cpu|gemm|float32")
        shown = runner.invoke(app, ["tune", "--show"], terminal_width=300)
        assert shown.exit_code == 0 and "cpu|gemm|float32" in shown.output
        assert runner.invoke(app, ["tune", "--clear"]).exit_code == 0 and not cache.exists()
        out = tmp_path / "shipped.json"
        result = runner.invoke(app, ["tune", "gemm", "--device", "cpu", "--shapes", "3,5,7",
                                     "--dtype", "fp32", "--output", str(out)])
        assert result.exit_code == 0 and not cache.exists()
        assert tune.TuningCache(out).read()
    finally:
        tune.reset()


def test_tune_refuses_without_cuda_or_with_large_cpu_shapes():
    if torch.cuda.is_available():
        pytest.skip("CUDA is visible")
    result = runner.invoke(app, ["tune", "gemm", "--shapes", "1,2,3"])
    assert result.exit_code == 2 and "needs a CUDA device" in result.output
    big = runner.invoke(app, ["tune", "gemm", "--device", "cpu", "--model-config", "llama-8b"])
    assert big.exit_code == 2 and "too large" in big.output
    assert runner.invoke(app, ["tune"]).exit_code == 2
