"""transformers with infercore inside (``attn_implementation="infercore"`` +
:func:`~infercore.integrations.hf.apply_infercore`) against plain transformers ``"sdpa"``.

A Llama-3.2-1B-shaped ``LlamaForCausalLM`` (16 layers, hidden 2048, GQA 32/8, MLP 8192,
vocabulary 32000) with random bf16 weights, built once; the patched model is a deep copy
of it, so both run the same weights in the same process:

- ``prefill``: one forward of ``B4 x 1024`` tokens, no cache, last-position logits only.
  ``flops`` = 2 x decoder-layer parameters x tokens + causal attention
  (``2 x 2 x B x heads x head_dim x S^2 / 2`` per layer); compute-bound.
- ``generate bs1`` / ``bs32``: ``model.generate`` greedy, 128-token prompts, exactly 128
  new tokens (DynamicCache, no padding). ``bytes`` = new tokens x weight bytes without the
  input embedding, what decoding must read at least.

Checks: prefill logits of the patched model against the plain one (relative norm), and
every token either model emits is the plain model's uncached argmax up to a bf16
tolerance (near-ties may flip in bf16, so the two token streams need not be equal).

``python -m infercore.bench.suites.hf [--quick]`` prints tokens/s and the speed-up.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator

import torch

from infercore.bench import Case, suite
from infercore.bench.suites.spec import Shape, check_near_argmax, random_llama

#: Bound on the relative-norm difference of bf16 prefill logits (patched vs plain):
#: initial choice, to be tuned (bf16 rounding over 16 layers, different kernels).
LOGITS_TOLERANCE = 5e-2
#: Tokens produced per call of each case's callables, by case name (for tokens/s).
TOKENS: dict[str, int] = {}


def _models(device: torch.device, shape: Shape):
    from infercore.integrations import hf

    plain = random_llama(shape, shape.layers, device, seed=0)
    plain.set_attn_implementation("sdpa")
    patched = copy.deepcopy(plain)
    hf.apply_infercore(patched)
    return plain, patched


def _prefill_case(plain, patched, shape: Shape, batch: int, seq: int,
                  device: torch.device) -> Case:
    ids = torch.randint(0, shape.vocab, (batch, seq), device=device)

    def forward(model):
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits

    layer_params = sum(p.numel() for p in plain.model.layers.parameters())
    head_dim = shape.hidden // shape.heads
    attn_flops = 2 * batch * shape.heads * head_dim * seq * seq * shape.layers
    flops = 2 * layer_params * batch * seq + attn_flops

    def check() -> None:
        out, ref = forward(patched).float(), forward(plain).float()
        err = float((out - ref).norm() / ref.norm())
        if not err <= LOGITS_TOLERANCE:
            raise AssertionError(f"prefill logits: relative error {err:.3e}")

    name = f"prefill B{batch} x {seq}"
    TOKENS[name] = batch * seq
    return Case(name, {"infercore": lambda: forward(patched), "sdpa": lambda: forward(plain)},
                peer="sdpa", flops=flops, check=check)


def _generate_case(plain, patched, shape: Shape, batch: int, prompt_len: int,
                   new_tokens: int, device: torch.device) -> Case:
    g = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, shape.vocab, (batch, prompt_len), generator=g)
    ids = prompts.to(device)
    mask = torch.ones_like(ids)

    def generate(model) -> torch.Tensor:
        return model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=0)

    weight_bytes = sum(p.numel() * p.element_size() for name, p in plain.named_parameters()
                       if "embed_tokens" not in name)

    def check() -> None:
        for label, model in (("infercore", patched), ("sdpa", plain)):
            out = generate(model)[:, prompt_len:].tolist()
            check_near_argmax(plain, prompts.tolist(), out, f"generate bs{batch} {label}")

    name = f"generate bs{batch}, {prompt_len} in + {new_tokens} out"
    TOKENS[name] = batch * new_tokens
    return Case(name, {"infercore": lambda: generate(patched), "sdpa": lambda: generate(plain)},
                peer="sdpa", bytes=new_tokens * weight_bytes, check=check)


def make_cases(device: torch.device, quick: bool, shape: Shape | None = None
               ) -> Iterator[Case]:
    """The suite's cases for any model shape (a small shape makes a smoke run)."""
    shape = shape or Shape()
    plain, patched = _models(device, shape)
    yield _prefill_case(plain, patched, shape, 4, 1024, device)
    new_tokens = 32 if quick else 128
    for batch in (1, 32):
        yield _generate_case(plain, patched, shape, batch, 128, new_tokens, device)


@suite("hf", "transformers Llama-1B shape, bf16: attn_implementation='infercore' + "
       "apply_infercore vs 'sdpa'; prefill flops, generate bytes = new tokens x weights",
       bound="compute")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    yield from make_cases(device, quick)


def main(argv: list[str]) -> None:
    from infercore.bench import run_suite

    _, results = run_suite("hf", torch.device("cuda"), quick="--quick" in argv,
                           progress=lambda c: print("...", c))
    for r in results:
        tps = TOKENS.get(r.case, float("nan")) / r.ms * 1e3
        speed = f"{r.vs_peer:.2f}x" if r.vs_peer is not None else "-"
        print(f"{r.case:40} {r.impl:10} {r.ms:10.2f} ms {tps:10.1f} tok/s {speed:>7} vs sdpa"
              + (f"  ERROR {r.error}" if r.error else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
