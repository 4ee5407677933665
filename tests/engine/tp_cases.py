"""Prompts and settings shared by the tensor-parallel test and its worker processes."""

from infercore.engine import SamplingParams

PROMPTS = [[3, 17, 29, 4, 3, 17, 29], [101, 7, 7, 55, 90, 12, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
           [60]]
GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
