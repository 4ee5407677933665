"""The reference engine: a Llama-family model served from infercore's components.

>>> from infercore.engine import LLM, SamplingParams
>>> llm = LLM("tiny-random")
>>> outs = llm.generate(["Hello", [256, 72, 105]], SamplingParams(temperature=0, max_tokens=4))
>>> [len(o.token_ids) for o in outs]
[4, 4]

Speculative decoding: ``EngineConfig(speculative=SpeculativeConfig(method="ngram"))``
(or ``"draft_model"``), acceptance counts in ``LLM.stats``; see
:mod:`infercore.engine.spec`. Tensor parallelism: ``EngineConfig(tensor_parallel_size=N)``
under ``python -m infercore.comm.launch -n N``; see :mod:`infercore.engine.parallel`.
"""

from infercore.engine.arch import SUPPORTED_ARCHITECTURES, ModelArgs
from infercore.engine.config import EngineConfig, SamplingParams, SpeculativeConfig
from infercore.engine.llm import LLM
from infercore.engine.model import LlamaModel
from infercore.engine.outputs import RequestOutput, StreamChunk
from infercore.engine.runner import ModelRunner
from infercore.engine.tiny import TINY_RANDOM

__all__ = [
    "LLM",
    "SUPPORTED_ARCHITECTURES",
    "TINY_RANDOM",
    "EngineConfig",
    "LlamaModel",
    "ModelArgs",
    "ModelRunner",
    "RequestOutput",
    "SamplingParams",
    "SpeculativeConfig",
    "StreamChunk",
]
