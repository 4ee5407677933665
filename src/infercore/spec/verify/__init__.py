"""Verification of draft tokens against the target: exact rejection sampling and greedy.

Families ``spec.rejection`` (:func:`rejection_sample`) and ``spec.greedy``
(:func:`greedy_verify`). Layout shared by both: a batch of ``B`` rows, each with up to
``K`` draft tokens (``draft_tokens [B, K]``, row ``b`` uses its first ``num_draft[b]``)
and the target's distributions (or argmax tokens) at the ``K + 1`` positions that follow
the context: position ``j`` scores the token after the context plus ``j`` drafts, so row
``b`` reads positions ``0 .. num_draft[b]``. Both return ``tokens [B, K + 1]`` (int64,
``-1`` after the emitted ones) and ``num_accepted [B]`` (int32): row ``b`` emits
``num_accepted[b] + 1`` tokens, the accepted drafts then one token from the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.registry import resolve

__all__ = ["GreedyInputs", "RejectionInputs", "greedy_verify", "rejection_sample"]

INDEX_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True, slots=True)
class RejectionInputs(TensorInputs):
    """What ``spec.rejection`` backends are asked to support."""

    target_probs: torch.Tensor
    draft_probs: torch.Tensor | None
    draft_tokens: torch.Tensor
    num_draft: torch.Tensor
    seeds: torch.Tensor


@dataclass(frozen=True, slots=True)
class GreedyInputs(TensorInputs):
    """What ``spec.greedy`` backends are asked to support."""

    target_ids: torch.Tensor
    draft_tokens: torch.Tensor
    num_draft: torch.Tensor


def _check_drafts(
    draft_tokens: object, num_draft: object, batch: int, target_name: str
) -> int:
    """Check ``draft_tokens [B, K]`` and ``num_draft [B]``; return ``K``."""
    check_tensor("draft_tokens", draft_tokens, ndim=2, dtypes=INDEX_DTYPES)
    assert isinstance(draft_tokens, torch.Tensor)
    if draft_tokens.shape[0] != batch:
        raise ValueError(
            f"draft_tokens must have shape [batch, k] with batch = {batch} (the first dim "
            f"of {target_name}), got {tuple(draft_tokens.shape)}"
        )
    if num_draft is not None:
        check_tensor("num_draft", num_draft, ndim=1, dtypes=INDEX_DTYPES)
        assert isinstance(num_draft, torch.Tensor)
        if num_draft.shape[0] != batch:
            raise ValueError(
                f"num_draft must have shape [batch] = [{batch}], got {tuple(num_draft.shape)}"
            )
    return draft_tokens.shape[1]


def _check_seeds(seeds: object, batch: int) -> None:
    if seeds is None:
        return
    check_tensor("seeds", seeds, ndim=1, dtypes=(torch.int64,))
    assert isinstance(seeds, torch.Tensor)
    if seeds.shape[0] != batch:
        raise ValueError(f"seeds must have shape [batch] = [{batch}], got {tuple(seeds.shape)}")


def _check_rejection_args(
    target_probs: object,
    draft_probs: object,
    draft_tokens: object,
    num_draft: object,
    seeds: object,
) -> None:
    check_tensor("target_probs", target_probs, ndim=3, dtypes=FLOAT_DTYPES)
    assert isinstance(target_probs, torch.Tensor)
    batch, positions, vocab = target_probs.shape
    k = _check_drafts(draft_tokens, num_draft, batch, "target_probs")
    if positions != k + 1:
        raise ValueError(
            f"target_probs must have shape [batch, k + 1, vocab] = [{batch}, {k + 1}, vocab] "
            f"for draft_tokens of shape {tuple(draft_tokens.shape)}, "
            f"got {tuple(target_probs.shape)}"
        )
    if vocab < 1:
        raise ValueError(f"target_probs must have a vocabulary dim >= 1, got {vocab}")
    if draft_probs is not None:
        check_tensor("draft_probs", draft_probs, ndim=3, dtypes=FLOAT_DTYPES)
        assert isinstance(draft_probs, torch.Tensor)
        if draft_probs.shape[2] != vocab:
            raise ValueError(
                f"draft_probs has vocabulary size {draft_probs.shape[2]} but target_probs has "
                f"{vocab}: the draft and target must share one vocabulary"
            )
        if tuple(draft_probs.shape) != (batch, k, vocab):
            raise ValueError(
                f"draft_probs must have shape [batch, k, vocab] = [{batch}, {k}, {vocab}], "
                f"got {tuple(draft_probs.shape)}"
            )
    _check_seeds(seeds, batch)
    check_same_device(
        target_probs=target_probs, draft_probs=draft_probs, draft_tokens=draft_tokens,
        num_draft=num_draft, seeds=seeds,
    )


def _full_num_draft(num_draft: torch.Tensor | None, draft_tokens: torch.Tensor) -> torch.Tensor:
    if num_draft is not None:
        return num_draft
    batch, k = draft_tokens.shape
    return torch.full((batch,), k, dtype=torch.int32, device=draft_tokens.device)


def _empty_outputs(batch: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.empty((batch, k + 1), dtype=torch.int64, device=device),
        torch.empty((batch,), dtype=torch.int32, device=device),
    )


# -- rejection sampling ------------------------------------------------------------------------


def _rejection_sample(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor | None,
    draft_tokens: torch.Tensor,
    num_draft: torch.Tensor,
    seeds: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = RejectionInputs(target_probs, draft_probs, draft_tokens, num_draft, seeds)
    return resolve("spec.rejection", inputs, backend).run(
        target_probs, draft_probs, draft_tokens, num_draft, seeds
    )


@torch.library.custom_op("infercore::rejection_sample", mutates_args=())
def _rejection_sample_op(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor | None,
    draft_tokens: torch.Tensor,
    num_draft: torch.Tensor,
    seeds: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _rejection_sample(target_probs, draft_probs, draft_tokens, num_draft, seeds, backend)


@_rejection_sample_op.register_fake
def _(target_probs, draft_probs, draft_tokens, num_draft, seeds, backend):
    return _empty_outputs(draft_tokens.shape[0], draft_tokens.shape[1], draft_tokens.device)


def rejection_sample(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor | None,
    draft_tokens: torch.Tensor,
    *,
    num_draft: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify draft tokens so that the emitted tokens follow the target distribution exactly.

    Speculative sampling (Leviathan et al. 2023; Chen et al. 2023). For each row, draft
    token ``x_j`` is accepted with probability ``min(1, p_j(x_j) / q_j(x_j))``, in order; at
    the first rejection one token is sampled from the normalized residual
    ``max(0, p_j - q_j)`` (from ``p_j`` itself if the residual is all zero) and the row
    stops; if all its drafts are accepted, a bonus token is sampled from
    ``p[num_draft[b]]``. Each emitted token then has the target's distribution given the
    tokens before it.

    Parameters
    ----------
    target_probs : Tensor ``[B, K + 1, V]``, float32 / float16 / bfloat16
        Target probabilities (after temperature, top-k, top-p: the distribution to sample
        from). Rows need not be exactly normalized; each row must have positive mass.
    draft_probs : Tensor ``[B, K, V]`` or None
        The distributions the draft tokens were sampled from. ``None`` for proposers
        without probabilities (n-gram, greedy drafts): ``q_j`` is then one-hot on the
        draft token, so a draft is accepted with probability ``p_j(x_j)`` and the residual
        is ``p_j`` with ``x_j`` zeroed, which is exact for deterministic drafts.
    draft_tokens : Tensor ``[B, K]``, int32 / int64
        Draft tokens; entries past ``num_draft[b]`` are ignored (pad with ``-1``). A
        token outside ``[0, V)`` has target probability 0 and is rejected.
    num_draft : Tensor ``[B]``, int32 / int64, optional
        Drafts per row, in ``[0, K]`` (values outside are clamped); default ``K`` for all.
    seeds : Tensor ``[B]``, int64, optional
        Per-row seeds: a row's result is a function of its seed and its own inputs, the
        same in any batch and on every backend (barring a float64 tie at an inverse-CDF
        boundary). Use a fresh seed per step (e.g. derived
        from a request seed and its token count). Default: drawn from the default torch
        generator of the device (``torch.manual_seed`` makes calls reproducible).
    backend : str
        ``"auto"`` or a backend of ``spec.rejection`` (``"triton"``, ``"reference"``).

    Returns
    -------
    tokens : Tensor ``[B, K + 1]``, int64
        Emitted tokens: ``num_accepted[b]`` accepted drafts then the sampled token; ``-1``
        after them.
    num_accepted : Tensor ``[B]``, int32
        Accepted drafts per row, in ``[0, num_draft[b]]``.

    Examples
    --------
    >>> p = torch.softmax(torch.randn(2, 4, 32000, device="cuda"), -1)
    >>> q = torch.softmax(torch.randn(2, 3, 32000, device="cuda"), -1)
    >>> x = torch.multinomial(q.view(-1, 32000), 1).view(2, 3)
    >>> tokens, n = infercore.spec.rejection_sample(p, q, x)

    Also available as ``torch.ops.infercore.rejection_sample(target_probs, draft_probs,
    draft_tokens, num_draft, seeds, backend)`` with ``num_draft`` and ``seeds`` given.
    """
    _check_rejection_args(target_probs, draft_probs, draft_tokens, num_draft, seeds)
    num_draft = _full_num_draft(num_draft, draft_tokens)
    if seeds is None:
        seeds = torch.empty(
            target_probs.shape[0], dtype=torch.int64, device=target_probs.device
        ).random_()
    if torch.compiler.is_compiling():
        return torch.ops.infercore.rejection_sample(
            target_probs, draft_probs, draft_tokens, num_draft, seeds, backend
        )
    return _rejection_sample(target_probs, draft_probs, draft_tokens, num_draft, seeds, backend)


# -- greedy ------------------------------------------------------------------------------------


def _greedy_verify(
    target_ids: torch.Tensor, draft_tokens: torch.Tensor, num_draft: torch.Tensor, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = GreedyInputs(target_ids, draft_tokens, num_draft)
    return resolve("spec.greedy", inputs, backend).run(target_ids, draft_tokens, num_draft)


@torch.library.custom_op("infercore::greedy_verify", mutates_args=())
def _greedy_verify_op(
    target_ids: torch.Tensor, draft_tokens: torch.Tensor, num_draft: torch.Tensor, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _greedy_verify(target_ids, draft_tokens, num_draft, backend)


@_greedy_verify_op.register_fake
def _(target_ids, draft_tokens, num_draft, backend):
    return _empty_outputs(draft_tokens.shape[0], draft_tokens.shape[1], draft_tokens.device)


def greedy_verify(
    target_ids: torch.Tensor,
    draft_tokens: torch.Tensor,
    *,
    num_draft: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy (temperature 0) verification: accept drafts while they equal the target argmax.

    Row ``b`` accepts its longest prefix of drafts with ``draft_tokens[b, j] ==
    target_ids[b, j]`` (at most ``num_draft[b]``), then emits ``target_ids`` at the first
    mismatch, or the bonus ``target_ids[b, num_draft[b]]``. The emitted tokens are the
    target's argmax tokens, so speculative greedy decoding equals plain greedy decoding
    token for token.

    Parameters
    ----------
    target_ids : Tensor ``[B, K + 1]``, int32 / int64
        Target argmax at each position (``logits.argmax(-1)``).
    draft_tokens : Tensor ``[B, K]``, int32 / int64
        Draft tokens; entries past ``num_draft[b]`` are ignored.
    num_draft : Tensor ``[B]``, int32 / int64, optional
        Drafts per row, in ``[0, K]`` (values outside are clamped); default ``K``.
    backend : str
        ``"auto"`` or a backend of ``spec.greedy`` (``"reference"``).

    Returns
    -------
    tokens : Tensor ``[B, K + 1]``, int64, ``-1`` after the emitted tokens.
    num_accepted : Tensor ``[B]``, int32.

    Examples
    --------
    >>> target_ids = logits.argmax(-1)          # logits [B, K + 1, V]
    >>> tokens, n = infercore.spec.greedy_verify(target_ids, draft_tokens)
    """
    check_tensor("target_ids", target_ids, ndim=2, dtypes=INDEX_DTYPES)
    batch = target_ids.shape[0]
    k = _check_drafts(draft_tokens, num_draft, batch, "target_ids")
    if target_ids.shape[1] != k + 1:
        raise ValueError(
            f"target_ids must have shape [batch, k + 1] = [{batch}, {k + 1}] for "
            f"draft_tokens of shape {tuple(draft_tokens.shape)}, got {tuple(target_ids.shape)}"
        )
    check_same_device(target_ids=target_ids, draft_tokens=draft_tokens, num_draft=num_draft)
    num_draft = _full_num_draft(num_draft, draft_tokens)
    if torch.compiler.is_compiling():
        return torch.ops.infercore.greedy_verify(target_ids, draft_tokens, num_draft, backend)
    return _greedy_verify(target_ids, draft_tokens, num_draft, backend)
