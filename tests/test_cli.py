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
    for command in ("info", "list", "bench"):
        assert command in result.output


def test_list_json_schema(fresh_plugins):
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"families", "plugins"}
    entries = data["families"]["norm.rms"]
    assert [e["name"] for e in entries] == ["triton", "reference"]
    for e in entries:
        assert set(e) == {"name", "available", "reasons", "plugin"}
        assert e["available"] == (not e["reasons"])
        assert e["plugin"] == "infercore.ops.norm.plugin"
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
                                 "--json", str(out)])
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


def test_bench_rejects_unknown_suite_and_wrong_device(tiny_suite):
    assert runner.invoke(app, ["bench", "nope"]).exit_code == 2
    wrong = runner.invoke(app, ["bench", "norm", "--device", "cpu"])
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
