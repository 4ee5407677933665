"""Each replacement against vLLM's in-tree op, in this process, on random inputs."""

from __future__ import annotations

import pytest
import torch
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding
from vllm.model_executor.layers.rotary_embedding.llama3_rope import Llama3RotaryEmbedding

from infercore.integrations import vllm_ops

ROTARY = vllm_ops.replacements()["RotaryEmbedding"]


@pytest.fixture(autouse=True)
def vllm_config():
    with set_current_vllm_config(VllmConfig()):
        yield


def _close(got, ref):
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["forward_native", "forward_cpu"])
def test_rms_norm_with_and_without_residual(method):
    g = torch.Generator().manual_seed(0)
    ours, theirs = vllm_ops.InfercoreRMSNorm(96, eps=1e-5), RMSNorm(96, eps=1e-5)
    weight = torch.rand(96, generator=g) + 0.5
    ours.weight.data.copy_(weight)
    theirs.weight.data.copy_(weight)
    x = torch.randn(7, 96, generator=g)
    _close(getattr(ours, method)(x.clone()), theirs.forward_native(x.clone()))
    residual = torch.randn(7, 96, generator=g)
    got_out, got_res = getattr(ours, method)(x.clone(), residual.clone())
    ref_out, ref_res = theirs.forward_native(x.clone(), residual.clone())
    _close(got_out, ref_out)
    _close(got_res, ref_res)


@pytest.mark.parametrize("method", ["forward_native", "forward_cpu"])
def test_silu_and_mul(method):
    x = torch.randn(5, 2 * 40, generator=torch.Generator().manual_seed(1))
    _close(getattr(vllm_ops.InfercoreSiluAndMul(), method)(x), SiluAndMul.forward_native(x))


@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize("base", [RotaryEmbedding, Llama3RotaryEmbedding])
def test_rotary_on_fused_qkv_views(base, neox):
    kwargs = dict(head_size=32, rotary_dim=32, max_position_embeddings=64, base=10000.0,
                  is_neox_style=neox, dtype=torch.float32)
    if base is Llama3RotaryEmbedding:
        kwargs.update(scaling_factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      orig_max_position=32)
    ours, theirs = ROTARY[base.__name__](**kwargs), base(**kwargs)
    g = torch.Generator().manual_seed(2)
    positions = torch.randint(0, 64, (9,), generator=g)
    qkv = torch.randn(9, (4 + 2 * 2) * 32, generator=g)
    q, k = qkv[:, : 4 * 32], qkv[:, 4 * 32 : 6 * 32]
    ref_q, ref_k = theirs.forward_native(positions, q.clone(), k.clone())
    got_q, got_k = ours.forward_cpu(positions, q, k)
    assert got_q.data_ptr() == q.data_ptr(), "rotated in place, like vLLM's kernels"
    _close(got_q, ref_q)
    _close(got_k, ref_k)
