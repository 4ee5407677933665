"""Run greedy generation with vLLM in this process and print one JSON line of results.

Usage: ``python run_vllm.py MODEL_DIR MAX_TOKENS`` with the environment chosen by the
caller (plugins, ``INFERCORE_VLLM_*`` switches). The JSON line starts with ``RESULT ``:
the generated token ids per prompt, the attention backend of the first layer, and the
plugin's call counts (empty when the plugin did not load).
"""

from __future__ import annotations

import json
import sys

from tiny_model import PROMPTS


def main() -> None:
    model_dir, max_tokens = sys.argv[1], int(sys.argv[2])
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model_dir,
        dtype="float32",
        distributed_executor_backend="uni",
        enforce_eager=True,
        max_model_len=256,
        seed=0,
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    try:
        import vllm_infercore

        counts = vllm_infercore.call_counts()
    except ImportError:
        counts = {}
    print("RESULT " + json.dumps({"tokens": tokens, "counts": counts}), flush=True)


if __name__ == "__main__":
    main()
