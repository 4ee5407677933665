"""``sample``: draw one token per row from the filtered distribution (family ``sample``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_tensor
from infercore.ops.sampling.filtering import RowParam
from infercore.ops.sampling.params import (
    check_count,
    check_row_param,
    finite_at_least_zero,
    in_closed_unit,
    in_open_closed_unit,
    resolve_seeds,
)
from infercore.registry import resolve

__all__ = ["SampleInputs", "SampleOutput", "sample"]


class SampleOutput(NamedTuple):
    """What :func:`sample` returns.

    Attributes
    ----------
    token_ids : Tensor ``[batch]`` int64
        The sampled token of each row, always in ``[0, vocab)``.
    logprobs : Tensor ``[batch, n]`` float32 or None
        With ``return_logprobs=n > 0``: the ``n`` largest log-probabilities of each row,
        in descending order, of ``log_softmax(logits / T)`` (temperature-scaled, before
        top-k/top-p/min-p; ``T = 1`` on rows with ``T == 0``).
    logprob_ids : Tensor ``[batch, n]`` int64 or None
        The tokens of ``logprobs``.
    token_logprobs : Tensor ``[batch]`` float32 or None
        The log-probability of each sampled token under the same distribution.
    """

    token_ids: torch.Tensor
    logprobs: torch.Tensor | None = None
    logprob_ids: torch.Tensor | None = None
    token_logprobs: torch.Tensor | None = None


@dataclass(frozen=True, slots=True)
class SampleInputs(TensorInputs):
    """What ``sample`` backends are asked to support."""

    logits: torch.Tensor
    temperature: RowParam
    top_k: RowParam
    top_p: RowParam
    min_p: RowParam
    seeds: torch.Tensor


def _sample(logits, temperature, top_k, top_p, min_p, seeds, backend):
    inputs = SampleInputs(logits, temperature, top_k, top_p, min_p, seeds)
    return resolve("sample", inputs, backend).run(logits, temperature, top_k, top_p, min_p, seeds)


def _join(t: torch.Tensor | None, value: float | int) -> RowParam:
    return t if t is not None else value


def _split(value: RowParam, cast: type = float) -> tuple[torch.Tensor | None, float | int]:
    return (value, cast(0)) if isinstance(value, torch.Tensor) else (None, cast(value))


@torch.library.custom_op("infercore::sample", mutates_args=())
def _sample_op(
    logits: torch.Tensor,
    seeds: torch.Tensor,
    temperature: torch.Tensor | None,
    temperature_value: float,
    top_k: torch.Tensor | None,
    top_k_value: int,
    top_p: torch.Tensor | None,
    top_p_value: float,
    min_p: torch.Tensor | None,
    min_p_value: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _sample(
        logits,
        _join(temperature, temperature_value),
        _join(top_k, top_k_value),
        _join(top_p, top_p_value),
        _join(min_p, min_p_value),
        seeds,
        backend,
    )


@_sample_op.register_fake
def _(logits, seeds, temperature, temperature_value, top_k, top_k_value, top_p, top_p_value,
      min_p, min_p_value, backend):
    batch = logits.shape[0]
    return (
        torch.empty(batch, dtype=torch.int64, device=logits.device),
        torch.empty(batch, dtype=torch.float32, device=logits.device),
    )


def _logprobs(
    logits: torch.Tensor, temperature: RowParam, lse: torch.Tensor, ids: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``n`` log-probabilities of ``logits / T`` from the row log-sum-exp."""
    if isinstance(temperature, torch.Tensor):
        t = temperature.float()
        inv_t = (1.0 / torch.where(t > 0, t, 1.0))[:, None]
    else:
        inv_t = 1.0 / temperature if temperature > 0 else 1.0
    values, top_ids = logits.topk(n, dim=-1)
    logprobs = values.float() * inv_t - lse[:, None]
    token = logits.gather(1, ids[:, None]).float() * inv_t - lse[:, None]
    return logprobs, top_ids, token[:, 0]


def sample(
    logits: torch.Tensor,
    *,
    temperature: RowParam,
    top_k: RowParam | None = None,
    top_p: RowParam | None = None,
    min_p: RowParam | None = None,
    seeds: torch.Tensor | None = None,
    return_logprobs: int = 0,
    backend: str = "auto",
) -> SampleOutput:
    """Sample one token per row after temperature, min-p, top-k and top-p.

    The distribution is the one :func:`infercore.ops.sampling.sampling_probs` returns:
    ``softmax(logits / T)``, min-p and top-k applied, then top-p on the renormalized
    remainder (see :mod:`infercore.ops.sampling.filtering`). The draw is the Gumbel-max
    form of the exponential race, ``argmax(logits / T + g)`` over the kept tokens, with
    noise ``g`` from a counter-based generator keyed by the row's seed
    (:mod:`infercore.ops.sampling.philox`), the same in every backend. The ``triton``
    backend finds the top-k/top-p thresholds without sorting the vocabulary; no backend
    synchronizes with the device.

    Parameters
    ----------
    logits : Tensor ``[batch, vocab]``, float32 / float16 / bfloat16
        NaN counts as ``-inf``. A row whose largest logit is not finite is sampled greedily.
    temperature : number or Tensor ``[batch]`` (floating)
        ``>= 0`` and finite; ``0`` means greedy (first maximal logit) for that row.
    top_k : int or Tensor ``[batch]`` (integer), optional
        Keep the ``k`` most likely tokens (ties at the boundary kept); ``<= 0`` disables.
    top_p : number or Tensor ``[batch]`` (floating), optional
        In ``(0, 1]``; keep the most likely tokens until their mass reaches ``top_p``;
        ``1`` disables.
    min_p : number or Tensor ``[batch]`` (floating), optional
        In ``[0, 1]``; keep tokens with probability ``>= min_p`` times the largest; ``0``
        disables.
    seeds : Tensor ``[batch]`` int64, optional
        A row with a seed ``>= 0`` draws from a stream that depends only on that seed,
        so it samples the same token whatever else is in the batch (pass a new seed for
        every step, e.g. derived from a request seed and its position). Rows with a
        negative seed, and all rows when ``seeds`` is None, take a seed from torch's
        default generator of the logits' device (so ``torch.manual_seed`` applies).
    return_logprobs : int
        ``n > 0`` also returns the top-``n`` log-probabilities (see :class:`SampleOutput`).
    backend : str
        ``"auto"`` or a backend name of ``sample`` (``"triton"``, ``"reference"``).

    Tensor parameters must be on the logits' device. Their ranges are checked when they
    live on the CPU; GPU tensors are checked only under ``INFERCORE_SAMPLING_CHECKS=1``
    (checking synchronizes). Unchecked out-of-range values still give ids in range.

    Returns
    -------
    SampleOutput
        ``token_ids [batch]`` int64, plus the log-probabilities when asked.

    Raises
    ------
    ValueError
        Temperature negative or not finite, ``top_p`` outside ``(0, 1]``, ``min_p``
        outside ``[0, 1]``, shape or device mismatches (the message names the argument).

    Examples
    --------
    >>> logits = torch.randn(4, 128256, device="cuda")
    >>> out = infercore.ops.sample(logits, temperature=0.7, top_k=50, top_p=0.9)
    >>> out.token_ids.shape
    torch.Size([4])

    Also available as ``torch.ops.infercore.sample``, which ``torch.compile`` traces as one
    opaque op (the seeds of unseeded rows are drawn outside it).
    """
    check_tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)
    batch, vocab = logits.shape
    if vocab == 0:
        raise ValueError("logits must have a non-empty vocab dimension, got shape "
                         f"{tuple(logits.shape)}")
    rows = {"batch": batch, "device": logits.device}
    temperature = check_row_param(
        "temperature", temperature, integer=False, ok=finite_at_least_zero,
        allowed="finite and >= 0", **rows,
    )
    top_k = 0 if top_k is None else check_row_param("top_k", top_k, integer=True, **rows)
    top_p = 1.0 if top_p is None else check_row_param(
        "top_p", top_p, integer=False, ok=in_open_closed_unit, allowed="in (0, 1]", **rows
    )
    min_p = 0.0 if min_p is None else check_row_param(
        "min_p", min_p, integer=False, ok=in_closed_unit, allowed="in [0, 1]", **rows
    )
    n = check_count("return_logprobs", return_logprobs, 0, vocab)
    seeds = resolve_seeds(seeds, batch, logits.device)
    if torch.compiler.is_compiling():
        ids, lse = torch.ops.infercore.sample(
            logits, seeds, *_split(temperature), *_split(top_k, int), *_split(top_p),
            *_split(min_p), backend,
        )
    else:
        ids, lse = _sample(logits, temperature, top_k, top_p, min_p, seeds, backend)
    if n == 0:
        return SampleOutput(ids)
    return SampleOutput(ids, *_logprobs(logits, temperature, lse, ids, n))
