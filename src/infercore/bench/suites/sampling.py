"""sample: top-k/top-p sampling over a Llama-3 vocabulary against a torch sort-based sampler.

The peer is the usual PyTorch implementation (as in vLLM's fallback path): scale, sort
the vocabulary, mask below the k-th value, softmax + cumsum mask for top-p, scatter back
and ``torch.multinomial``. Logits are N(0, 3^2) at temperature 0.8, which puts about a
thousand tokens in the top-p 0.9 set. Bytes = the logits read once.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from infercore.bench import Case, suite
from infercore.ops.sampling import sample, sampling_probs
from infercore.ops.sampling.reference import sample_reference

VOCAB = 128256


def torch_sort_sample(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """Sort-based top-k + top-p sampling in plain PyTorch (the peer)."""
    scaled = logits.float() / temperature[:, None]
    sorted_logits, order = scaled.sort(dim=-1, descending=False)
    vocab = scaled.shape[-1]
    kth = sorted_logits.gather(1, (vocab - top_k).clamp(0, vocab - 1)[:, None])
    sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= 1 - top_p[:, None]
    drop[:, -1] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    probs = torch.empty_like(scaled).scatter_(1, order, sorted_logits.softmax(dim=-1))
    return torch.multinomial(probs, 1)[:, 0]


def _check(x, params, seeds) -> None:
    """Seeded draws of the dispatched backend equal the reference's and stay allowed."""
    t, k, p = params["temperature"], params["top_k"], params["top_p"]
    ids = sample(x, seeds=seeds, **params).token_ids
    ref, _ = sample_reference(x, t, k if k is not None else 0, p if p is not None else 1.0,
                              0.0, seeds)
    allowed = sampling_probs(x, t, k, p).gather(1, ids[:, None]) > 0
    same = (ids == ref).float().mean().item()
    if not bool(allowed.all()) or same < 0.98:
        raise AssertionError(f"sample: {same:.3f} of seeded draws equal the reference; "
                             f"all allowed: {bool(allowed.all())}")


@suite("sample", "sample() top-k 50 + top-p 0.9, vocab 128256, vs torch sort + multinomial: "
       "bytes = logits read once")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    shapes = [(256, torch.float32, True)]
    if not quick:
        shapes = [(1, torch.float32, True), (64, torch.float32, True),
                  (256, torch.float32, True), (256, torch.bfloat16, True),
                  (256, torch.float32, False)]
    for batch, dtype, with_top_k in shapes:
        gen = torch.Generator(device=device).manual_seed(batch)
        x = (torch.randn(batch, VOCAB, device=device, generator=gen) * 3).to(dtype)
        t = torch.full((batch,), 0.8, device=device)
        k = torch.full((batch,), 50 if with_top_k else VOCAB, device=device, dtype=torch.int64)
        p = torch.full((batch,), 0.9, device=device)
        params = {"temperature": t, "top_k": k if with_top_k else None, "top_p": p}
        seeds = torch.arange(batch, device=device) * 7919 + 1
        impls = {
            "infercore": lambda x=x, params=params: sample(x, **params),
            "torch.sort": lambda x=x, t=t, k=k, p=p: torch_sort_sample(x, t, k, p),
        }
        name = f"{batch}x{VOCAB} {str(dtype).removeprefix('torch.')} " + (
            "top-k 50 top-p 0.9" if with_top_k else "top-p 0.9"
        )
        yield Case(
            name, impls, peer="torch.sort", bytes=x.numel() * x.element_size(),
            check=lambda x=x, params=params, seeds=seeds: _check(x, params, seeds),
        )
