"""Two-GPU tests: NCCL through torch and through pynccl, CUDA graphs, TP forward.

Run on a machine with 2+ GPUs: ``pytest -m multigpu tests/comm``. Each backend is one
launch of dist_worker.py on 2 GPUs; the tests report its checks one by one.
"""

from __future__ import annotations

import pytest

from tests.comm import checks_collectives, checks_tp
from tests.comm.launching import assert_check_passed

pytestmark = pytest.mark.multigpu


@pytest.mark.parametrize("check", list(checks_collectives.CHECKS))
@pytest.mark.parametrize("backend", ["torch", "pynccl"])
def test_nccl_collectives(backend, check):
    assert_check_passed(2, check, "collectives", "--backend", backend, "--device", "cuda")


@pytest.mark.parametrize("check", list(checks_tp.CHECKS))
def test_tensor_parallel_on_two_gpus(check):
    """TP=2 equals TP=1; tp_llama_forward uses a Llama-shaped model (16 heads, 4 kv heads,
    hidden 1024, 4 layers, vocab 32003) in float32 and bfloat16."""
    assert_check_passed(2, check, "tp", "--device", "cuda", "--large")
