"""The reference engine: a Llama-family model served from infercore's components.

>>> from infercore.engine import LLM, SamplingParams
>>> llm = LLM("tiny-random")
>>> outs = llm.generate(["Hello", [256, 72, 105]], SamplingParams(temperature=0, max_tokens=4))
>>> [len(o.token_ids) for o in outs]
[4, 4]
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
