"""Run dist_worker.py under the launcher and collect each rank's results."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("dist_worker.py")
ROOT = WORKER.parents[2]


def launch_worker(nprocs: int, *args: str, timeout_s: float = 240) -> tuple[int, Path, float]:
    """Run ``launch -n nprocs dist_worker.py *args OUTDIR``; return (exit code, OUTDIR, seconds).

    A launcher still running after ``timeout_s`` gets SIGTERM (it stops its ranks), then
    SIGKILL.
    """
    outdir = Path(tempfile.mkdtemp(prefix="infercore-comm-"))
    env = dict(os.environ)
    env["INFERCORE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # built-in backends only
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    cmd = [sys.executable, "-m", "infercore.comm.launch", "-n", str(nprocs), "--grace", "2",
           str(WORKER), args[0], str(outdir), *args[1:]]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pytest.fail(f"launcher {' '.join(cmd)} still ran after {timeout_s} s")
    return code, outdir, time.monotonic() - start


@functools.cache
def rank_results(nprocs: int, *args: str) -> tuple[int, tuple[dict, ...]]:
    """Exit code and every rank's result dict of one launch (cached per arguments)."""
    code, outdir, _ = launch_worker(nprocs, *args)
    results = []
    for rank in range(nprocs):
        path = outdir / f"rank{rank}.json"
        results.append(json.loads(path.read_text()) if path.exists() else {})
    return code, tuple(results)


def assert_check_passed(nprocs: int, check: str, *args: str) -> None:
    """Fail with the rank's traceback, skip on a skip report, else pass."""
    code, results = rank_results(nprocs, *args)
    for rank, res in enumerate(results):
        assert res, f"rank {rank} wrote no results (launcher exit code {code})"
        status = res.get(check)
        assert status is not None, f"rank {rank} did not run {check}"
        if status.startswith("skip: "):
            pytest.skip(status.removeprefix("skip: "))
        assert status == "ok", f"rank {rank} of {nprocs}, {check}:\n{status}"
    assert code == 0, f"launcher exit code {code}"
