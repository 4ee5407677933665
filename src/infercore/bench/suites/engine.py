"""The reference engine end to end against transformers ``generate`` (random bf16 weights).

Llama shapes built in memory (no download): the 1B shape (16 layers, hidden 2048, GQA
32/8, head dim 64, MLP 8192, vocabulary 32000) and the 8B shape (32 layers, hidden 4096,
GQA 32/8, MLP 14336, vocabulary 128256). One transformers ``LlamaForCausalLM`` (bf16,
``sdpa``) is built per shape with random weights; the engine shares its tensors (its
merged QKV and gate-up projections are copies). Every timed call generates the case's
output tokens from fresh requests, greedy, EOS ignored:

- ``1B offline 256x128->256``: 256 requests at once (the engine batches up to 256).
  transformers is too slow to time on the same requests within the time limits; its
  batch throughput is the ``1B 32x128->256`` case.
- ``1B 32x128->256``: one batch of 32 for both (``hf bs32`` is the peer).
- ``1B bs1 128->256``: one request (decode latency; ``hf bs1`` is the peer).
- ``8B 16x1k->1k``: 16 requests of 1024 tokens generating 1024 each (engine only).
- ``8B bs1 1k->128``: one request, the engine against ``hf bs1``.

``bytes`` is the weight bytes times the decode steps, the least a step-by-step decode
reads (the fraction is of the copy ceiling; KV reads come on top). Output tokens per
second are ``tokens / time``; :func:`throughput` prints them with the ratios, as does
``python -m infercore.bench.suites.engine [--quick]``.

The check generates greedily from 4 prompts and runs one transformers forward over
prompt and output: each emitted token's logit must be within ``ARGMAX_TOLERANCE`` of that
position's largest (bf16 rounding differs between the two, so exact argmax agreement is
not required of a random model whose top logits are close).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from infercore.bench import Case, Result, run_suite, suite

#: Largest bf16 logit gap allowed between an emitted token and the transformers argmax.
ARGMAX_TOLERANCE = 0.5
#: case name -> output tokens of one timed call (filled when the cases are built).
OUTPUT_TOKENS: dict[str, int] = {}


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    rope_theta: float = 500000.0

    def hf_config(self):
        from transformers import LlamaConfig

        return LlamaConfig(
            architectures=["LlamaForCausalLM"], vocab_size=self.vocab, hidden_size=self.hidden,
            intermediate_size=self.intermediate, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            head_dim=self.hidden // self.heads, max_position_embeddings=4096,
            rope_theta=self.rope_theta, bos_token_id=None, eos_token_id=None,
            pad_token_id=0, tie_word_embeddings=False, attn_implementation="sdpa",
        )


LLAMA_1B = Shape("1B", 16, 2048, 8192, 32, 8, 32000)
LLAMA_8B = Shape("8B", 32, 4096, 14336, 32, 8, 128256)


def _hf_model(shape: Shape, device: torch.device):
    from transformers import LlamaForCausalLM

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(shape.hf_config())
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def _decode_bytes(hf) -> int:
    """Weight bytes a decode step reads: every parameter but the embedding table."""
    return sum(p.numel() * p.element_size() for n, p in hf.named_parameters()
               if "embed_tokens" not in n)


def _engine(hf, max_num_seqs: int, max_len: int, device: torch.device):
    from infercore.engine import LLM, EngineConfig, ModelArgs
    from infercore.engine.loader import build_weights

    args = ModelArgs.from_hf_config(hf.config.to_dict())
    state = dict(hf.state_dict())

    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = state[name]
        assert tuple(t.shape) == shape, (name, t.shape, shape)
        return t

    blocks_per_seq = -(-(max_len + 1) // 16)
    config = EngineConfig(
        dtype="bfloat16", device=str(device), max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max(8192, max_num_seqs), max_model_len=max_len,
        num_blocks=max_num_seqs * blocks_per_seq + 64, enable_prefix_caching=False,
    )
    return LLM(args, config=config, weights=build_weights(args, get))


def _prompts(num: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (num, length), generator=gen).tolist()


def _run_engine(llm, prompts: list[list[int]], max_tokens: int) -> Callable[[], object]:
    from infercore.engine import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    return lambda: llm.generate(prompts, params)


def _run_hf(hf, prompts: list[list[int]], max_tokens: int) -> Callable[[], object]:
    ids = torch.tensor(prompts, device=hf.device)
    mask = torch.ones_like(ids)

    @torch.no_grad()
    def run():
        return hf.generate(ids, attention_mask=mask, max_new_tokens=max_tokens,
                           do_sample=False, pad_token_id=0)

    return run


def _check(llm, hf) -> Callable[[], None]:
    def check() -> None:
        from infercore.engine import SamplingParams

        prompts = _prompts(4, 37, hf.config.vocab_size, seed=11)
        params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
        for p, out in zip(prompts, llm.generate(prompts, params), strict=True):
            ids = torch.tensor([p + out.token_ids], device=hf.device)
            with torch.no_grad():
                logits = hf(ids).logits[0, len(p) - 1 : -1].float()
            chosen = logits.gather(1, torch.tensor(out.token_ids, device=hf.device)[:, None])
            gap = (logits.max(dim=1).values - chosen[:, 0]).max().item()
            if gap > ARGMAX_TOLERANCE:
                raise AssertionError(f"an emitted token is {gap:.3f} below the argmax logit")

    return check


def _case(name: str, impls: dict[str, Callable[[], object]], peer: str | None,
          tokens: int, steps: int, weight_bytes: int, check: Callable[[], None]) -> Case:
    OUTPUT_TOKENS[name] = tokens
    return Case(name, impls, peer=peer, bytes=float(steps * weight_bytes), check=check)


@suite("engine", "Reference engine generate vs transformers generate (Llama 1B/8B shapes)")
def make_cases(device: torch.device, quick: bool) -> Iterator[Case]:
    out_1b = 64 if quick else 256
    hf = _hf_model(LLAMA_1B, device)
    weight_bytes = _decode_bytes(hf)
    llm = _engine(hf, 256, 128 + out_1b, device)
    check = _check(llm, hf)
    batch = _prompts(256, 128, LLAMA_1B.vocab, seed=0)
    yield _case(f"1B offline 256x128->{out_1b}", {"infercore": _run_engine(llm, batch, out_1b)},
                None, 256 * out_1b, out_1b, weight_bytes, check)
    yield _case(f"1B 32x128->{out_1b}", {"infercore": _run_engine(llm, batch[:32], out_1b),
                                         "hf bs32": _run_hf(hf, batch[:32], out_1b)},
                "hf bs32", 32 * out_1b, out_1b, weight_bytes, check)
    yield _case(f"1B bs1 128->{out_1b}", {"infercore": _run_engine(llm, batch[:1], out_1b),
                                          "hf bs1": _run_hf(hf, batch[:1], out_1b)},
                "hf bs1", out_1b, out_1b, weight_bytes, check)
    del llm, hf, check
    torch.cuda.empty_cache()
    if quick:
        return
    hf = _hf_model(LLAMA_8B, device)
    weight_bytes = _decode_bytes(hf)
    llm = _engine(hf, 16, 2048 + 1, device)
    check = _check(llm, hf)
    long = _prompts(16, 1024, LLAMA_8B.vocab, seed=1)
    yield _case("8B 16x1k->1k", {"infercore": _run_engine(llm, long, 1024)}, None,
                16 * 1024, 1024, weight_bytes, check)
    yield _case("8B bs1 1k->128", {"infercore": _run_engine(llm, long[:1], 128),
                                   "hf bs1": _run_hf(hf, long[:1], 128)},
                "hf bs1", 128, 128, weight_bytes, check)


def throughput(results: list[Result]) -> list[str]:
    """One line per result: output tokens per second, and the ratio to the peer's."""
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.case:<24} {r.impl:<10} error: {r.error}")
            continue
        tps = OUTPUT_TOKENS[r.case] / (r.ms / 1e3)
        ratio = f"  {r.vs_peer:.2f}x {r.peer}" if r.vs_peer and r.impl != r.peer else ""
        lines.append(f"{r.case:<24} {r.impl:<10} {tps:>10.1f} tok/s{ratio}")
    return lines


def main(argv: list[str]) -> None:
    _, results = run_suite("engine", torch.device("cuda"), quick="--quick" in argv, rep_ms=1)
    print("\n".join(throughput(results)))


if __name__ == "__main__":
    main(sys.argv[1:])
