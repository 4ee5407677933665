"""The sampling noise, in plain PyTorch: Philox4x32-10 and the Gumbel transform.

Both backends of ``sample`` draw the same noise, so a seeded row samples the same token
whichever backend runs it (up to rounding of ``exp``/``log`` on ties):

- the 64-bit seed ``s`` of a row is the Philox key ``(s mod 2**32, s >> 32)``;
- token ``i`` takes output word ``i % 4`` of Philox4x32-10 at counter ``(i // 4, 0, 0, 0)``;
- the 32-bit word ``r`` becomes ``v = float32(r) * 2**-32`` and the Gumbel variate
  ``g = -log(-log(1 - v))``, evaluated as ``-(log v + v/2 + 5 v**2/24 + v**3/8)`` for
  ``v < 2**-7`` where ``1 - v`` would lose the digits that matter.

The sampled token is ``argmax_i (logits_i / T + g_i)`` over the allowed tokens: the
Gumbel-max form of the exponential race ``argmax p_i / E_i``.
"""

from __future__ import annotations

import torch

__all__ = ["gumbel_from_bits", "gumbel_noise", "philox4x32"]

_M32 = 0xFFFFFFFF
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
ROUNDS = 10
#: Below this ``v`` the Gumbel transform uses its series (``1 - v`` is inexact there).
SERIES_BELOW = 2.0**-7


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``a * b`` for 32-bit ``a`` and int64 ``b`` in [0, 2**32)."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    b_hi, b_lo = b >> 16, b & 0xFFFF
    # a*b = a_hi*b_hi*2**32 + t; every partial product fits in int64.
    t = ((a_hi * b_lo + a_lo * b_hi) << 16) + a_lo * b_lo
    return (a_hi * b_hi + (t >> 32)) & _M32, t & _M32


def philox4x32(
    seeds: torch.Tensor, counters: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 words for key ``seeds [batch]`` and counters ``(c, 0, 0, 0)``.

    Parameters
    ----------
    seeds : Tensor ``[batch]`` int64
    counters : Tensor ``[n]`` int64, values in ``[0, 2**32)``

    Returns
    -------
    Four int64 tensors ``[batch, n]`` holding unsigned 32-bit words.
    """
    k0 = (seeds & _M32)[:, None]
    k1 = ((seeds >> 32) & _M32)[:, None]
    c0 = counters[None, :].expand(seeds.shape[0], -1)
    c1 = c2 = c3 = torch.zeros_like(c0)
    for _ in range(ROUNDS):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


def gumbel_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """Gumbel variates (float32) from unsigned 32-bit words held in an int64 tensor."""
    v = bits.to(torch.float32) * 2.0**-32
    series = -(torch.log(v) + v * (0.5 + v * (5.0 / 24.0 + v * 0.125)))
    direct = -torch.log(-torch.log(1.0 - v))
    return torch.where(v < SERIES_BELOW, series, direct)


def gumbel_noise(seeds: torch.Tensor, vocab: int) -> torch.Tensor:
    """The Gumbel noise ``[batch, vocab]`` float32 of every token of every row."""
    n = (vocab + 3) // 4
    counters = torch.arange(n, device=seeds.device, dtype=torch.int64)
    words = torch.stack(philox4x32(seeds, counters), dim=-1)  # [batch, n, 4]
    return gumbel_from_bits(words.reshape(seeds.shape[0], 4 * n)[:, :vocab])
