"""``apply_penalties``: repetition, presence and frequency penalties (``sample.penalties``).

Convention (as in vLLM), applied in this order, in float32, rounding once to the logits'
dtype:

1. **repetition** ``r``: for every token seen in the prompt or the output
   (``prompt_mask | token_counts > 0``), a positive logit is divided by ``r`` and a
   non-positive one multiplied by ``r``;
2. **frequency** ``f``: ``logit -= f * count`` (output counts only);
3. **presence** ``p``: ``logit -= p * (count > 0)`` (output only).

``r = 1``, ``f = 0``, ``p = 0`` are neutral. The logits are modified **in place**.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infercore.ops.common import FLOAT_DTYPES, TensorInputs, check_same_device, check_tensor
from infercore.ops.sampling.filtering import RowParam
from infercore.ops.sampling.params import check_row_param
from infercore.registry import resolve

__all__ = ["PenaltyInputs", "apply_penalties"]

COUNT_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True, slots=True)
class PenaltyInputs(TensorInputs):
    """What ``sample.penalties`` backends are asked to support."""

    logits: torch.Tensor
    token_counts: torch.Tensor
    prompt_mask: torch.Tensor | None
    repetition_penalty: RowParam
    presence_penalty: RowParam
    frequency_penalty: RowParam


def _apply(logits, token_counts, prompt_mask, repetition, presence, frequency, backend):
    inputs = PenaltyInputs(logits, token_counts, prompt_mask, repetition, presence, frequency)
    resolve("sample.penalties", inputs, backend).run(
        logits, token_counts, prompt_mask, repetition, presence, frequency
    )


def _join(t: torch.Tensor | None, value: float) -> RowParam:
    return t if t is not None else value


@torch.library.custom_op("infercore::apply_penalties", mutates_args=("logits",))
def _apply_penalties_op(
    logits: torch.Tensor,
    token_counts: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    repetition: torch.Tensor | None,
    repetition_value: float,
    presence: torch.Tensor | None,
    presence_value: float,
    frequency: torch.Tensor | None,
    frequency_value: float,
    backend: str,
) -> None:
    _apply(
        logits, token_counts, prompt_mask, _join(repetition, repetition_value),
        _join(presence, presence_value), _join(frequency, frequency_value), backend,
    )


@_apply_penalties_op.register_fake
def _(logits, token_counts, prompt_mask, repetition, repetition_value, presence,
      presence_value, frequency, frequency_value, backend) -> None:
    return None


def _split(value: RowParam) -> tuple[torch.Tensor | None, float]:
    return (value, 0.0) if isinstance(value, torch.Tensor) else (None, float(value))


def _finite(v):
    return (v > -torch.inf) & (v < torch.inf)


def _positive(v):
    return (v > 0) & (v < torch.inf)


def apply_penalties(
    logits: torch.Tensor,
    token_counts: torch.Tensor,
    *,
    repetition_penalty: RowParam = 1.0,
    presence_penalty: RowParam = 0.0,
    frequency_penalty: RowParam = 0.0,
    prompt_mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Apply repetition, presence and frequency penalties to ``logits`` in place.

    See :mod:`infercore.ops.sampling.penalties_op` for the convention.

    Parameters
    ----------
    logits : Tensor ``[batch, vocab]``, float32 / float16 / bfloat16, modified in place
        Rows must have unit stride along the vocabulary.
    token_counts : Tensor ``[batch, vocab]``, int32 / int64
        How often each token occurs in each row's output so far.
    repetition_penalty : number or Tensor ``[batch]`` (floating)
        Positive; ``1`` is neutral. Applies to tokens in the prompt or the output.
    presence_penalty, frequency_penalty : number or Tensor ``[batch]`` (floating)
        Finite; ``0`` is neutral; negative values favour repeats. Output tokens only.
    prompt_mask : Tensor ``[batch, vocab]`` bool, optional
        Tokens present in each row's prompt.
    backend : str
        ``"auto"`` or a backend name of ``sample.penalties``.

    Tensor parameters are range-checked as in :func:`infercore.ops.sample`.

    Returns
    -------
    ``logits`` itself, penalized.

    Examples
    --------
    >>> infercore.ops.apply_penalties(logits, counts, repetition_penalty=1.1,
    ...                               frequency_penalty=0.2, prompt_mask=in_prompt)
    """
    check_tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)
    if logits.stride(-1) != 1:
        raise ValueError(f"logits must have unit stride along the vocab, got {logits.stride()}")
    check_tensor("token_counts", token_counts, ndim=2, dtypes=COUNT_DTYPES)
    if token_counts.shape != logits.shape:
        raise ValueError(f"token_counts must have the logits' shape {tuple(logits.shape)}, "
                         f"got {tuple(token_counts.shape)}")
    if prompt_mask is not None:
        check_tensor("prompt_mask", prompt_mask, ndim=2, dtypes=(torch.bool,))
        if prompt_mask.shape != logits.shape:
            raise ValueError(f"prompt_mask must have the logits' shape {tuple(logits.shape)}, "
                             f"got {tuple(prompt_mask.shape)}")
    check_same_device(logits=logits, token_counts=token_counts, prompt_mask=prompt_mask)
    batch = logits.shape[0]
    rows = {"batch": batch, "device": logits.device, "integer": False}
    rep = check_row_param("repetition_penalty", repetition_penalty, ok=_positive,
                          allowed="positive and finite", **rows)
    pres = check_row_param("presence_penalty", presence_penalty, ok=_finite,
                           allowed="finite", **rows)
    freq = check_row_param("frequency_penalty", frequency_penalty, ok=_finite,
                           allowed="finite", **rows)
    neutral = not any(isinstance(v, torch.Tensor) for v in (rep, pres, freq)) and (
        rep == 1.0 and pres == 0.0 and freq == 0.0
    )
    if neutral or logits.numel() == 0:
        return logits
    if torch.compiler.is_compiling():
        torch.ops.infercore.apply_penalties(
            logits, token_counts, prompt_mask, *_split(rep), *_split(pres), *_split(freq),
            backend,
        )
    else:
        _apply(logits, token_counts, prompt_mask, rep, pres, freq, backend)
    return logits
