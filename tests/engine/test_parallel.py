"""Tensor parallelism: two ranks over gloo give the tokens of one process, and of HF."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from infercore.engine import LLM, EngineConfig
from infercore.engine.parallel import shard_args
from tests.engine.conftest import hf_greedy
from tests.engine.tp_cases import GREEDY, PROMPTS
from tests.engine.tp_worker import ROOT

WORKER = ROOT / "tests" / "engine" / "tp_worker.py"


def _launch(nprocs: int, model_dir: str, outdir, device: str) -> list[dict]:
    env = dict(os.environ)
    env["INFERCORE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                         *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "infercore.comm.launch", "-n", str(nprocs), "--grace", "2",
           str(WORKER), model_dir, str(outdir), device]
    code = subprocess.run(cmd, env=env, cwd=ROOT, timeout=240).returncode
    results = []
    for rank in range(nprocs):
        path = outdir / f"rank{rank}.json"
        assert path.exists(), f"rank {rank} wrote nothing (launcher exit code {code})"
        res = json.loads(path.read_text())
        assert "error" not in res, f"rank {rank}:\n{res['error']}"
        results.append(res)
    assert code == 0
    return results


def _check(results: list[dict], model_dir: str) -> None:
    expected = hf_greedy(model_dir, PROMPTS, GREEDY.max_tokens)
    for rank, res in enumerate(results):
        assert res["plain"] == expected, f"rank {rank}"
        assert res["ngram"] == expected, f"rank {rank} with speculation"


def test_two_ranks_gloo_match_one(tmp_path, reference_backends):
    """Greedy tokens of 2 ranks (plain and with n-gram speculation) equal one process's
    and HF's; each rank holds half the heads, one KV head and half the MLP. (The shared
    fixtures have 3 query heads, which 2 ranks cannot split: a 4-head model is saved.)"""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.engine.conftest import _SHAPE

    torch.manual_seed(2)
    shape = {**_SHAPE, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}
    LlamaForCausalLM(LlamaConfig(**shape)).eval().save_pretrained(tmp_path / "m")
    model_dir = str(tmp_path / "m")
    results = _launch(2, model_dir, tmp_path, "cpu")
    _check(results, model_dir)
    one = LLM(model_dir, config=EngineConfig(block_size=8, num_blocks=64, max_num_seqs=4,
                                             max_num_batched_tokens=24))
    assert [o.token_ids for o in one.generate(PROMPTS, GREEDY)] == results[0]["plain"]
    kv_shape = list(one.cache.kv_caches[0][0].shape)
    for res in results:
        assert res["shard"] == [2, 1, 80, [*kv_shape[:2], 1, kv_shape[3]]]


def test_shard_args_errors(llama_dir):
    args = LLM(llama_dir, config=EngineConfig(num_blocks=4)).args
    with pytest.raises(ValueError, match="num_attention_heads = 3 must be divisible by the "
                                         "tensor-parallel size 2"):
        shard_args(args, 2)
    with pytest.raises(ValueError, match="intermediate_size = 160 must be divisible"):
        shard_args(args, 3)
    one = shard_args(args, 1)
    assert (one.num_heads, one.num_kv_heads, one.intermediate_size) == (3, 1, 160)


@pytest.mark.multigpu
def test_two_ranks_nccl_match_hf(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.engine.conftest import _SHAPE

    torch.manual_seed(2)
    shape = {**_SHAPE, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}
    LlamaForCausalLM(LlamaConfig(**shape)).eval().save_pretrained(tmp_path / "m")
    model_dir = str(tmp_path / "m")
    _check(_launch(2, model_dir, tmp_path, "cuda"), model_dir)
