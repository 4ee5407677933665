"""Two-GPU tests: NCCL through torch and through pynccl, CUDA graphs, TP forward.

Run on a machine with 2+ GPUs: ``pytest -m multigpu tests/comm``. Each backend is one
launch of dist_worker.py on 2 GPUs; the tests report its checks one by one.
"""

from __future__ import annotations

import pytest

from tests.comm import checks_collectives, checks_tp
from tests.comm.launching import assert_check_passed, rank_results

pytestmark = pytest.mark.multigpu


@pytest.mark.parametrize("check", list(checks_collectives.CHECKS))
@pytest.mark.parametrize("backend", ["torch", "pynccl"])
def test_nccl_collectives(backend, check):
    assert_check_passed(2, check, "checks", "--groups", "collectives", "--backend", backend,
                        "--device", "cuda")


@pytest.mark.parametrize("check", [*checks_tp.LAYER_CHECKS, *checks_tp.MODEL_CHECKS])
def test_tensor_parallel_on_two_gpus(check):
    """TP=2 equals TP=1. With --large the Llama checks use a Llama-shaped model (16 heads,
    4 or 1 kv heads, hidden 1024, 4 layers, vocab 32003), float32 and bfloat16."""
    assert_check_passed(2, check, "checks", "--groups", "tp_layers,tp_models", "--device",
                        "cuda", "--large")


def test_pynccl_barrier_times_out_instead_of_hanging():
    code, results = rank_results(2, "timeout", "--backend", "pynccl", "--device", "cuda")
    assert results[0].get("timeout_raised") == "ok", results[0]
    assert results[1].get("skipped_collective") == "ok", results[1]
    assert code == 0
