"""Multi-process tests on CPU (gloo): collectives, timeouts, tensor parallelism, launcher.

Each world size is one launch of dist_worker.py running every check; the tests below
report its checks one by one.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.comm import checks_collectives, checks_tp
from tests.comm.dist_worker import TIMEOUT_S
from tests.comm.launching import assert_check_passed, launch_worker, rank_results

GPU_ONLY = ("cuda_graph", "side_stream")
COLLECTIVE_CHECKS = [c for c in checks_collectives.CHECKS if c not in GPU_ONLY]
LAYER_CHECKS = list(checks_tp.LAYER_CHECKS)
MODEL_CHECKS = list(checks_tp.MODEL_CHECKS)


@pytest.mark.parametrize("check", COLLECTIVE_CHECKS + LAYER_CHECKS + MODEL_CHECKS)
def test_gloo_two_ranks(check):
    assert_check_passed(2, check, "checks")


@pytest.mark.parametrize("check", COLLECTIVE_CHECKS + LAYER_CHECKS)
def test_gloo_four_ranks(check):
    """The tiny-model checks run at two ranks only (each rank imports transformers)."""
    assert_check_passed(4, check, "checks", "--groups", "collectives,tp_layers")


@pytest.mark.parametrize("check", COLLECTIVE_CHECKS)
def test_gloo_one_rank(check):
    assert_check_passed(1, check, "checks", "--groups", "collectives")


def test_timeout_raises_instead_of_hanging():
    code, results = rank_results(2, "timeout")
    assert results[0].get("timeout_raised") == "ok", results[0]
    assert float(results[0]["elapsed_s"]) < TIMEOUT_S + 10
    assert results[1].get("skipped_collective") == "ok", results[1]
    assert code == 0


def test_launcher_propagates_failure_and_stops_other_ranks():
    code, outdir, seconds = launch_worker(3, "fail")
    assert code == 3
    assert seconds < 40, f"the launcher took {seconds:.0f} s to stop the other ranks"
    for rank in range(3):
        info = json.loads((outdir / f"rank{rank}.json").read_text())
        env = info["env"]
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == "3" and env["MASTER_PORT"].isdigit()
        assert env["NCCL_NVLS_ENABLE"] == "0" and env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
        assert not (outdir / f"rank{rank}.finished").exists()
        if rank != 1:
            with pytest.raises(ProcessLookupError):
                os.kill(info["pid"], 0)
