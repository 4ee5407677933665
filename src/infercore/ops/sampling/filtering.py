"""The sampling distribution in plain PyTorch: temperature, min-p, top-k, top-p.

This module defines what every ``sample`` backend draws from, and serves as its oracle.
For one row with logits ``x`` (NaN counts as ``-inf``) and temperature ``T > 0``:

1. ``s = x * (1 / T)`` in float32; ``p = softmax(s)``.
2. **min-p** keeps ``p_i >= min_p * max(p) * (1 - 2**-16)`` (the slack keeps the top
   token when ``min_p == 1`` despite rounding in compiled kernels); **top-k** keeps
   ``x_i >= `` the ``k``-th largest logit (ties at the boundary are all kept). Both
   keep an upper set of the logits and do not depend on normalization, so their order
   does not matter.
3. **top-p** on what is left, renormalized: keep token ``i`` when the mass of the kept
   tokens with a strictly larger logit is below ``top_p`` times their total mass (the
   smallest set of most likely tokens reaching ``top_p``; ties kept together).
4. The result is ``p`` restricted to the kept tokens and renormalized.

``top_k <= 0`` (or ``>= vocab``), ``top_p >= 1`` and ``min_p <= 0`` disable a filter. A
row is *greedy* (all mass on its first maximal logit) when ``T == 0`` or when its largest
logit is not finite (all ``-inf``/NaN, or a ``+inf``).
"""

from __future__ import annotations

import torch

__all__ = ["allowed_tokens", "prepare", "row_tensor", "sampling_probs"]

RowParam = float | int | torch.Tensor


#: Relative slack on the min-p threshold, shared with the Triton kernel.
MIN_P_SLACK = 1.0 - 2.0**-16


def row_tensor(value: RowParam | None, default: float, batch: int, device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A per-row parameter as a ``[batch]`` tensor of ``dtype``."""
    if value is None:
        value = default
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.full((batch,), value, dtype=dtype, device=device)


def prepare(
    logits: torch.Tensor, temperature: RowParam
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, s, greedy)``: float32 logits with NaN as -inf, scaled logits (T = 1 on greedy
    rows), and the greedy-row mask ``[batch]``."""
    batch = logits.shape[0]
    x = logits.float()
    x = torch.where(torch.isnan(x), float("-inf"), x)
    t = row_tensor(temperature, 1.0, batch, logits.device)
    greedy = ~(t > 0)
    if x.shape[1]:
        greedy |= ~torch.isfinite(x.max(dim=-1).values)
    inv_t = 1.0 / torch.where(greedy, 1.0, t)
    return x, x * inv_t[:, None], greedy


def allowed_tokens(
    x: torch.Tensor,
    s: torch.Tensor,
    top_k: RowParam | None = None,
    top_p: RowParam | None = None,
    min_p: RowParam | None = None,
) -> torch.Tensor:
    """bool ``[batch, vocab]``: the tokens the filters keep (see the module docstring)."""
    batch, vocab = x.shape
    device = x.device
    allowed = torch.ones_like(x, dtype=torch.bool)
    w = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    if min_p is not None:
        mp = row_tensor(min_p, 0.0, batch, device).clamp(0.0, 1.0) * MIN_P_SLACK
        allowed &= w >= mp[:, None]
    if top_k is None and top_p is None:
        return allowed
    sorted_x, order = x.sort(dim=-1, descending=True)
    if top_k is not None:
        k = row_tensor(top_k, 0, batch, device, torch.int64)
        on = (k > 0) & (k < vocab)
        kth = sorted_x.gather(1, (k.clamp(1, vocab) - 1)[:, None])
        allowed &= ~on[:, None] | (x >= kth)
    if top_p is not None:
        p = row_tensor(top_p, 1.0, batch, device)
        ws = torch.where(allowed, w, 0.0).gather(1, order)
        cum = ws.cumsum(dim=-1)
        prefix = (cum - ws) < p[:, None] * cum[:, -1:]
        prefix[:, 0] = True
        tau = torch.where(prefix, sorted_x, float("inf")).min(dim=-1, keepdim=True).values
        allowed &= ~(p < 1)[:, None] | (x >= tau)
    return allowed


def sampling_probs(
    logits: torch.Tensor,
    temperature: RowParam,
    top_k: RowParam | None = None,
    top_p: RowParam | None = None,
    min_p: RowParam | None = None,
) -> torch.Tensor:
    """The filtered, renormalized distribution that ``sample`` draws from.

    Use it to apply the same sampling parameters elsewhere (speculative decoding applies
    it to target and draft logits alike). Arguments are not validated here; ``sample``
    documents them. Any leading layout flattens to rows: pass ``[rows, vocab]`` with
    per-row parameters repeated accordingly.

    Parameters
    ----------
    logits : Tensor ``[batch, vocab]``, float16 / bfloat16 / float32
    temperature, top_k, top_p, min_p : number or Tensor ``[batch]``
        As in :func:`infercore.ops.sample`; ``None`` disables a filter.

    Returns
    -------
    Tensor ``[batch, vocab]`` float32; each row sums to 1 (one-hot for greedy rows).

    Examples
    --------
    >>> probs = sampling_probs(logits, 0.8, top_k=50, top_p=0.9)
    """
    x, s, greedy = prepare(logits, temperature)
    allowed = allowed_tokens(x, s, top_k, top_p, min_p)
    probs = torch.where(allowed, s, float("-inf")).softmax(dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(1, x.argmax(dim=-1, keepdim=True), 1.0)
    return torch.where(greedy[:, None], one_hot, probs)
