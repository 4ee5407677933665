"""Counter-based uniform random numbers for the verifiers.

A uniform is a pure function of a 64-bit row seed and a 32-bit counter: four rounds of a
32-bit integer mixer (xor-shift-multiply, the "lowbias32" family) over the seed's two
halves and the counter, then the top 24 bits scaled to ``[0, 1)``. The Triton kernel
computes the same function with native uint32 arithmetic; this module is the PyTorch
version (int64 tensors, products split in 16-bit halves so nothing overflows), so both
backends draw identical numbers from identical seeds.

Counters used by the rejection sampler: ``2 * j`` for the acceptance test of draft
position ``j`` and ``2 * j + 1`` for a token sampled at position ``j``. A row's draws
depend only on its seed and its own positions, never on the batch it sits in.
"""

from __future__ import annotations

import torch

__all__ = ["MIX_A", "MIX_B", "SALT_LO", "SALT_OUT", "uniforms"]

#: Multipliers of the 32-bit mixer (odd, below 2**31 so Triton types them as int32).
MIX_A = 0x21F0AAAD
MIX_B = 0x735A2D97
#: Constants xor-ed in before the first and after the counter round.
SALT_LO = 0x5BD1E995
SALT_OUT = 0x27D4EB2F

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for ``0 <= x < 2**32`` held in int64, without overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, MIX_A)
    x = x ^ (x >> 15)
    x = _mul32(x, MIX_B)
    return x ^ (x >> 15)


def uniforms(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Uniform floats in ``[0, 1)`` for each (row seed, counter) pair.

    Parameters
    ----------
    seeds : Tensor ``[B]``, int64
        One seed per row; any 64-bit value.
    counters : Tensor ``[B, n]``, integer, values in ``[0, 2**32)``

    Returns
    -------
    Tensor ``[B, n]``, float32, multiples of ``2**-24``.
    """
    s = seeds.to(torch.int64)[:, None]
    lo = s & _MASK32
    hi = (s >> 32) & _MASK32
    h = _mix32(lo ^ SALT_LO)
    h = _mix32(h ^ hi)
    h = _mix32(h ^ (counters.to(torch.int64) & _MASK32))
    h = _mix32(h ^ SALT_OUT)
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))
