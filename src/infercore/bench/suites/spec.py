"""Speculative decoding in a bare decoding loop over a transformers Llama (random weights).

Decode throughput at batch 1 and 8 with and without speculation, through
:func:`infercore.spec.speculative_generate` and :class:`infercore.spec.HFModel`
(transformers eager forward with its own KV cache; greedy). The target is Llama-3.2-1B
shaped (16 layers, hidden 2048, GQA 32/8, MLP 8192; vocabulary 32000), with random
weights, which sets what acceptance can be measured:

- ``plain``: one target pass per token (the peer).
- ``ngram k=4``: prompt lookup on code-like prompts (a block of tokens repeated with
  edits). A random target does not continue the prompt's pattern, so this measures the
  cost of speculation that finds (almost) nothing to propose.
- ``oracle eps k=4``: drafts read from the target's own greedy output (from the
  ``plain`` warm-up run), each replaced by a wrong token with probability ``eps``: free
  drafts with a set acceptance, standing in for n-gram hits on repetitive text with a
  trained model; this is what the speedup-versus-acceptance figure rests on.
- ``draft k=4`` (and ``draft adaptive``): a 2-layer draft that is a truncated copy of the
  target (its embeddings, first 2 layers, final norm and head, shared in memory). A
  truncated random model agrees with the full one about as often as chance, so at set-up
  the output projections of the target's later layers are scaled down by a factor found
  by bisection so that teacher-forced argmax agreement on a prompt is about
  ``DRAFT_AGREEMENT``: a real draft model's cost with a controlled acceptance.
- ``bad draft k=4`` / ``bad draft adaptive``: an independent random 2-layer model
  (acceptance near 0), with fixed k and with :class:`~infercore.spec.AdaptiveK` (its
  ``draft_cost`` is the draft/target decode time ratio measured at set-up): the guard
  that keeps poor speculation from running much slower than plain decoding.

Every timed call decodes the same ``N`` new tokens per row from the same prefilled
prompts (the caches roll back to the prompts), so timings are of decode only. Impl names
carry the measured mean accepted length (tokens per speculative step, counting the
target's own) and acceptance rate. ``bytes`` = ``N`` x target weight bytes, what plain
decoding must read; speculation can exceed the copy ceiling on that measure. The check
runs one uncached full-sequence target forward and requires every emitted token to be
the argmax up to a bf16 tolerance (cached chunked passes round differently).

``python -m infercore.bench.suites.spec [--quick]`` prints tokens/s, speedup and
acceptance per implementation.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from infercore.bench import Case, suite
from infercore.spec import (
    AcceptanceStats,
    AdaptiveK,
    AdaptiveKConfig,
    DraftModelProposer,
    HFModel,
    NgramProposer,
    Proposal,
    SpecRequest,
    speculative_generate,
)
from infercore.spec.interface import per_row_k

#: Largest bf16 logit gap allowed between an emitted token and the uncached argmax.
ARGMAX_TOLERANCE = 0.5
#: Teacher-forced argmax agreement aimed for between the target and the truncated draft.
DRAFT_AGREEMENT = 0.8
#: (case, impl) -> acceptance summary and tokens per call, filled while cases are built.
REPORT: dict[tuple[str, str], dict[str, float]] = {}


@dataclass(frozen=True)
class Shape:
    """Model dimensions (the default is Llama-3.2-1B's, with a 32000-token vocabulary)."""

    layers: int = 16
    hidden: int = 2048
    intermediate: int = 8192
    heads: int = 32
    kv_heads: int = 8
    vocab: int = 32000
    draft_layers: int = 2


def llama_config(shape: Shape, num_layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=num_layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, max_position_embeddings=4096,
        rope_theta=500000.0, tie_word_embeddings=False,
    )


def random_llama(shape: Shape, num_layers: int, device: torch.device, seed: int,
                 dtype: torch.dtype = torch.bfloat16):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(shape, num_layers))
    return model.to(dtype).eval()


def truncated_copy(model, shape: Shape, num_layers: int):
    """A ``num_layers`` model sharing ``model``'s embeddings, first layers, norm and head."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        draft = LlamaForCausalLM(llama_config(shape, num_layers))
    draft.model.embed_tokens = model.model.embed_tokens
    draft.model.layers = torch.nn.ModuleList(model.model.layers[:num_layers])
    draft.model.norm = model.model.norm
    draft.model.rotary_emb = model.model.rotary_emb
    draft.lm_head = model.lm_head
    return draft.eval()


def _scale_later_layers(model, first: int, ratio: float) -> None:
    with torch.no_grad():
        for layer in model.model.layers[first:]:
            layer.self_attn.o_proj.weight.mul_(ratio)
            layer.mlp.down_proj.weight.mul_(ratio)


def _argmax(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.argmax(-1)


def calibrate_agreement(target, draft, ids: torch.Tensor, first: int, goal: float,
                        steps: int = 10) -> tuple[float, float]:
    """Scale the output projections of ``target``'s layers from ``first`` on (in place) so
    its argmax agrees with ``draft``'s on about ``goal`` of the positions of ``ids``.
    Bisection on the log of the factor; returns (factor, agreement)."""
    want = _argmax(draft, ids)
    lo, hi, current = -4.0, 0.0, 0.0  # log10 of the factor; the weights start at 10**0
    found = (1.0, float((_argmax(target, ids) == want).float().mean()))
    for _ in range(steps):
        mid = (lo + hi) / 2
        _scale_later_layers(target, first, 10 ** (mid - current))
        current = mid
        agree = float((_argmax(target, ids) == want).float().mean())
        if agree >= goal:
            lo, found = mid, (10**mid, agree)
        else:
            hi = mid
    _scale_later_layers(target, first, found[0] / 10**current)
    return found


class OracleProposer:
    """Drafts read from known continuations (``full[request_id]``: prompt then the
    target's greedy output), each replaced by a wrong token with probability
    ``error_rate`` (fixed per position): drafts with a set acceptance at no cost."""

    def __init__(self, full: list[list[int]], vocab: int, error_rate: float, seed: int = 0):
        rng = random.Random(seed)
        self.full = full
        self.vocab = vocab
        self.wrong = [[rng.random() < error_rate for _ in row] for row in full]

    def propose(self, requests: Sequence[SpecRequest], k: int | Sequence[int]) -> Proposal:
        ks = per_row_k(k, len(requests))
        tokens = torch.full((len(requests), max(ks)), -1, dtype=torch.int64)
        counts = []
        for b, (r, kb) in enumerate(zip(requests, ks, strict=True)):
            row, wrong, pos = self.full[r.request_id], self.wrong[r.request_id], len(r.token_ids)
            drafts = [(t + 1) % self.vocab if w else t
                      for t, w in zip(row[pos : pos + kb], wrong[pos : pos + kb], strict=True)]
            tokens[b, : len(drafts)] = torch.tensor(drafts, dtype=torch.int64)
            counts.append(len(drafts))
        return Proposal(tokens, torch.tensor(counts, dtype=torch.int32))


def code_like_prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Per row: a 64-token "function" repeated with a few tokens changed in each copy
    (renamed identifiers), to ``length`` tokens."""
    rng = random.Random(seed)
    rows = []
    for _ in range(batch):
        body = [rng.randrange(vocab) for _ in range(64)]
        row: list[int] = []
        while len(row) < length:
            copy = list(body)
            for _ in range(4):
                copy[rng.randrange(64)] = rng.randrange(vocab)
            row.extend(copy)
        rows.append(row[:length])
    return rows


def summary_like_prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Per row: a random "document" then a "summary" made of spans copied from it."""
    rng = random.Random(seed)
    rows = []
    doc_len = 3 * length // 4
    for _ in range(batch):
        doc = [rng.randrange(vocab) for _ in range(doc_len)]
        row = list(doc)
        while len(row) < length:
            start = rng.randrange(doc_len - 16)
            row.extend(doc[start : start + rng.randrange(4, 16)])
        rows.append(row[:length])
    return rows


def check_near_argmax(model, prompts: list[list[int]], outputs: list[list[int]],
                      label: str) -> None:
    """Every emitted token is the uncached target argmax up to ``ARGMAX_TOLERANCE``."""
    seqs = torch.tensor([p + o for p, o in zip(prompts, outputs, strict=True)],
                        device=next(model.parameters()).device)
    plen, n = len(prompts[0]), len(outputs[0])
    with torch.inference_mode():
        logits = model(input_ids=seqs).logits[:, plen - 1 : plen - 1 + n].float()
    chosen = logits.gather(2, seqs[:, plen:, None])[..., 0]
    gap = float((logits.amax(-1) - chosen).max())
    if not gap <= ARGMAX_TOLERANCE:
        raise AssertionError(f"{label}: an emitted token is {gap:.3f} below the argmax logit")


Run = Callable[[AcceptanceStats | None], list[list[int]]]


def _runner(target: HFModel, prompts: list[list[int]], new_tokens: int, proposer=None,
            policy: AdaptiveKConfig | None = None) -> Run:
    def run(stats: AcceptanceStats | None) -> list[list[int]]:
        return speculative_generate(
            target, prompts, new_tokens, proposer=proposer, k=4, stats=stats,
            policy=AdaptiveK(policy) if policy is not None else None,
        )

    return run


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def make_cases(device: torch.device, quick: bool, shape: Shape = Shape(),
               dtype: torch.dtype = torch.bfloat16) -> Iterator[Case]:
    """The suite's cases for any model shape (small shapes make a CPU smoke run)."""
    new_tokens, prompt_len = (24, 512) if quick else (128, 1024)
    kinds = {"code": code_like_prompts}
    if not quick:
        kinds["summary"] = summary_like_prompts
    vocab = shape.vocab
    target_model = random_llama(shape, shape.layers, device, seed=0, dtype=dtype)
    draft_model = truncated_copy(target_model, shape, shape.draft_layers)
    bad_model = random_llama(shape, shape.draft_layers, device, seed=1, dtype=dtype)
    probe = code_like_prompts(1, prompt_len, vocab, seed=99)
    factor, agreement = calibrate_agreement(
        target_model, draft_model, torch.tensor(probe, device=device), shape.draft_layers,
        DRAFT_AGREEMENT,
    )
    weight_bytes = sum(p.numel() * p.element_size() for p in target_model.parameters())
    target, draft, bad = HFModel(target_model), HFModel(draft_model), HFModel(bad_model)

    # Draft decode step time over target decode step time, for AdaptiveK's cost model.
    step_time = {}
    for name, model in (("target", target), ("draft", bad)):
        speculative_generate(model, probe, 2)
        step_time[name] = _timed(lambda m=model: speculative_generate(m, probe, 16), device)
    draft_cost = step_time["draft"] / step_time["target"]
    adaptive = AdaptiveKConfig(max_k=4, draft_cost=draft_cost)
    suffix = (f"later layers x{factor:.3g} (agreement {agreement:.2f}), "
              f"draft/target step {draft_cost:.2f}")

    for kind, make_prompts in kinds.items():
        for batch in (1, 8):
            prompts = make_prompts(batch, prompt_len, vocab, seed=batch)
            name = f"{kind} bs{batch} +{new_tokens} tokens; {suffix}"
            plain = _runner(target, prompts, new_tokens)
            reference = plain(None)
            full = [p + o for p, o in zip(prompts, reference, strict=True)]
            draft_proposer = DraftModelProposer(draft, target_vocab_size=vocab)
            bad_proposer = DraftModelProposer(bad, target_vocab_size=vocab)
            runs = {
                "plain": plain,
                "ngram k=4": _runner(target, prompts, new_tokens, NgramProposer()),
                "oracle 0.1 k=4": _runner(target, prompts, new_tokens,
                                          OracleProposer(full, vocab, 0.1)),
                "draft k=4": _runner(target, prompts, new_tokens, draft_proposer),
                "bad draft k=4": _runner(target, prompts, new_tokens, bad_proposer),
                "bad draft adaptive": _runner(target, prompts, new_tokens, bad_proposer,
                                              adaptive),
            }
            if not quick:
                runs["oracle 0.3 k=4"] = _runner(target, prompts, new_tokens,
                                                 OracleProposer(full, vocab, 0.3))
                runs["draft adaptive"] = _runner(target, prompts, new_tokens, draft_proposer,
                                                 adaptive)
            impls, outputs = {}, {}
            for label, run in runs.items():
                stats = AcceptanceStats()
                outputs[label] = run(stats)  # warm-up: caches, acceptance
                summary = stats.summary()
                summary["tokens_per_call"] = batch * new_tokens
                if stats.total.num_spec_steps:
                    label = (f"{label} (acc len {summary['mean_accepted_length']:.2f}, "
                             f"rate {summary['acceptance_rate']:.2f})")
                REPORT[(name, label)] = summary
                impls[label] = lambda r=run: r(None)

            def check(prompts=prompts, outputs=outputs, name=name) -> None:
                for label, out in outputs.items():
                    check_near_argmax(target_model, prompts, out, f"{name} {label}")

            yield Case(name, impls, peer="plain", bytes=new_tokens * weight_bytes, check=check)


@suite(
    "spec",
    "speculative decoding, bare HF Llama-1B-shape loop (random weights), greedy: "
    "bytes = new tokens x target weight bytes",
    bound="memory",
)
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    yield from make_cases(device, quick)


def main(argv: list[str]) -> None:
    from infercore.bench import run_suite

    quick = "--quick" in argv
    device = torch.device("cuda")
    _, results = run_suite("spec", device, quick=quick, progress=lambda c: print("...", c))
    case = None
    for r in results:
        if r.case != case:
            case = r.case
            print(f"\n{case}\n  {'impl':46} {'tok/s':>8} {'vs plain':>9} {'frac':>6}")
        info = REPORT.get((r.case, r.impl), {})
        tps = info.get("tokens_per_call", float("nan")) / r.ms * 1e3
        frac = f"{r.fraction_of_ceiling:.2f}" if r.fraction_of_ceiling is not None else "-"
        speed = f"{r.vs_peer:.2f}x" if r.vs_peer is not None else "-"
        print(f"  {r.impl:46} {tps:8.1f} {speed:>9} {frac:>6}"
              + (f"  ERROR {r.error}" if r.error else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
