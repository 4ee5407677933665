"""One rank of the tensor-parallel engine test: run under ``python -m infercore.comm.launch``.

``python tp_worker.py MODEL_DIR OUTDIR [DEVICE]`` generates greedily with
``tensor_parallel_size`` = the world size (plain and with n-gram speculation), checks
the rank's shard shapes, and writes ``OUTDIR/rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    model_dir, outdir = sys.argv[1], Path(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    result: dict = {}
    try:
        from infercore.engine import LLM, EngineConfig, SpeculativeConfig
        from infercore.registry import use_backend
        from tests.engine.conftest import ENGINE_FAMILIES
        from tests.engine.tp_cases import GREEDY, PROMPTS

        families = dict.fromkeys(ENGINE_FAMILIES, "reference") if device == "cpu" else {}
        with use_backend(families):
            for name, spec in (("plain", None),
                               ("ngram", SpeculativeConfig(num_speculative_tokens=3))):
                llm = LLM(model_dir, config=EngineConfig(
                    device=None if device == "cuda" else device,  # None: cuda:LOCAL_RANK
                    block_size=8, num_blocks=64, max_num_seqs=4,
                    max_num_batched_tokens=24, tensor_parallel_size=world, speculative=spec,
                    cuda_graph=False))
                outs = llm.generate(PROMPTS, GREEDY)
                result[name] = [o.token_ids for o in outs]
            a = llm.model.args
            result["shard"] = [a.num_heads, a.num_kv_heads, a.intermediate_size,
                               list(llm.cache.kv_caches[0][0].shape)]
    except Exception:  # reported to the test, which fails with the traceback
        result["error"] = traceback.format_exc()
    (outdir / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
