"""The attention suites' CUDA-graph helper keeps what the captured work reads alive."""

import gc

import pytest
import torch

from infercore.bench.suites import attention_mixed
from infercore.bench.suites.attention_common import graphed

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
