"""Dispatch honours the tuning cache: backend order and launch configurations."""

import dataclasses

import pytest
import torch

from infercore import ops, tune
from infercore.ops.attention.reference import paged_attention_reference
from infercore.ops.gemm import GemmInputs
from infercore.ops.gemm.triton_configs import GemmConfig
from infercore.registry import resolve
from infercore.tune import TunedEntry, TuningCache, tune_key
from tests.helpers import assert_close


def _gemm_inputs(m, n=33, k=17):
    a, b = torch.randn(m, k), torch.randn(n, k).t()
    return a, b, GemmInputs(a, b, None, torch.empty(m, n))


def _store(key, entry):
    TuningCache().update({key: entry})
    tune.reset()


def test_tuned_entry_reorders_auto():
    _, _, inputs = _gemm_inputs(5)
    assert resolve("gemm", inputs).name == "torch"  # untuned: highest priority
    _store(tune_key("gemm", inputs), TunedEntry("reference", None, 1.0))
    assert resolve("gemm", inputs).name == "reference"
    assert resolve("gemm", inputs, "torch").name == "torch"  # an explicit backend wins
    _, _, other = _gemm_inputs(40)  # another M bucket: untouched
    assert resolve("gemm", other).name == "torch"
    _, _, same_bucket = _gemm_inputs(7)
    assert resolve("gemm", same_bucket).name == "reference"


def test_unknown_or_declining_tuned_backend_falls_back():
    _, _, inputs = _gemm_inputs(5)
    _store(tune_key("gemm", inputs), TunedEntry("no-such", None, 1.0))
    assert resolve("gemm", inputs).name == "torch"


def test_tuned_gemm_config_reaches_the_kernel(monkeypatch):
    from infercore.ops.gemm import triton_gemm

    seen = []
    launch = triton_gemm.launch_matmul
    monkeypatch.setattr(triton_gemm, "launch_matmul",
                        lambda *a, config=None, **kw: seen.append(config) or launch(
                            *a, config=config, **kw))
    a, b, inputs = _gemm_inputs(5)
    config = GemmConfig(16, 32, 16, group_m=1, num_warps=2, num_stages=1)
    _store(tune_key("gemm", inputs), TunedEntry("triton", dataclasses.asdict(config), 1.0))
    chosen = resolve("gemm", inputs)
    assert chosen.name == "triton" and chosen.config == config
    out = ops.gemm(a, b)
    assert seen == [config]
    assert_close(out, a @ b)


def test_tuned_decode_config_is_used_and_correct(monkeypatch):
    from infercore.ops.attention import partition, triton_decode

    heads, kv_heads, d, page = 4, 2, 32, 16
    lens = torch.tensor([37, 5], dtype=torch.int32)
    k_cache = torch.randn(6, page, kv_heads, d)
    v_cache = torch.randn_like(k_cache)
    tables = torch.tensor([[3, 0, 5], [1, 2, 4]], dtype=torch.int32)
    q = torch.randn(2, heads, d)
    inputs = ops.attention.inputs.PagedInputs(q, k_cache, v_cache, True, None, None, tables)
    config = triton_decode.DecodeConfig(num_splits=3, block_n=16, num_warps=2, num_stages=1)
    _store(tune_key("attention.decode", inputs),
           TunedEntry("triton", dataclasses.asdict(config), 1.0))
    plans = []
    direct = partition.direct_plan
    monkeypatch.setattr(triton_decode, "direct_plan",
                        lambda *a, **kw: plans.append(direct(*a, **kw)) or plans[-1])
    out = ops.attention.decode(q, k_cache, v_cache, tables, lens)
    [plan] = plans
    assert plan.num_splits == 3 and plan.small_shape.block_n == 16
    assert plan.small_shape.num_warps == 2
    cu = torch.arange(3, dtype=torch.int32)
    ref = paged_attention_reference(q, k_cache, v_cache, tables, lens, cu, causal=True,
                                    scale=d**-0.5)
    assert_close(out, ref[0].to(out.dtype))


@pytest.mark.cuda
def test_tuned_configs_on_gpu():
    """Every candidate of the tuner's space at a Llama-8B-like shape matches the reference."""
    from infercore.tune import Tuner
    from infercore.tune.workloads import DecodeWorkload, GemmWorkload

    def timer(fn, cand):
        fn()
        return 1.0

    tuner = Tuner(timer, budget_s=1e9)
    dev = torch.device("cuda")
    for w in (GemmWorkload(16, 6144, 4096), GemmWorkload(256, 1024, 4096),
              DecodeWorkload(4, 3000)):
        [r] = tuner.tune([w], dev, torch.bfloat16)
        assert not r.rejected, r.rejected


def test_entries_that_keep_the_default_stay_out_of_dispatch():
    _, _, inputs = _gemm_inputs(5)
    key = tune_key("gemm", inputs)
    _store(key, TunedEntry("torch", None, 1.0, default_backend="torch", default_ms=1.0))
    assert key in TuningCache().read()  # kept in the file (`tune --show` lists it)
    assert key not in tune.table().entries and "gemm" not in tune.table().families
    assert resolve("gemm", inputs).name == "torch"
