"""Fixtures: a tiny model built offline, HF's greedy tokens, and vLLM runs in subprocesses.

vLLM registers ops and plugins once per process, so each configuration (plugin off, plugin
ops, plugin attention, a missing infercore op) is its own ``run_vllm.py`` subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_model

HERE = Path(__file__).parent
MAX_TOKENS = 12


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def hf_tokens(model_dir) -> list[list[int]]:
    return tiny_model.hf_greedy(model_dir, tiny_model.PROMPTS, MAX_TOKENS)


class VLLMRuns:
    """Runs ``run_vllm.py`` once per distinct environment and keeps the results."""

    def __init__(self, model_dir: Path, scratch: Path):
        self.model_dir = model_dir
        self.scratch = scratch
        self._results: dict[tuple, tuple[dict, str]] = {}

    def __call__(self, **env: str) -> tuple[dict, str]:
        """``(result, log)`` of a run with these extra environment variables."""
        key = tuple(sorted(env.items()))
        if key not in self._results:
            self._results[key] = self._run(env)
        return self._results[key]

    def _run(self, extra: dict[str, str]) -> tuple[dict, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("INFERCORE_", "VLLM_"))}
        env.update(
            VLLM_ENABLE_V1_MULTIPROCESSING="0",
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_CACHE_ROOT=str(self.scratch / "vllm-cache"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            **extra,
        )
        proc = subprocess.run(
            [sys.executable, str(HERE / "run_vllm.py"), str(self.model_dir), str(MAX_TOKENS)],
            cwd=HERE, env=env, capture_output=True, text=True, timeout=480,
        )
        log = proc.stdout + proc.stderr
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            pytest.fail(f"vLLM run with {extra} failed (exit {proc.returncode}):\n{log[-6000:]}")
        return json.loads(lines[-1].removeprefix("RESULT ")), log


@pytest.fixture(scope="session")
def vllm_run(model_dir, tmp_path_factory) -> VLLMRuns:
    return VLLMRuns(model_dir, tmp_path_factory.mktemp("vllm-scratch"))
