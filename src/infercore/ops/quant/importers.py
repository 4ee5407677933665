"""Convert AWQ and GPTQ checkpoint tensors into :class:`QuantizedWeight`.

Both formats store, per linear layer of ``K`` inputs and ``N`` outputs with ``G`` groups
along K, int32 words that pack ``32 // bits`` values each, float16 ``scales [G, N]`` and
integer zero points, and dequantize as ``w[k, n] = (q[k, n] - z[g, n]) * s[g, n]`` with
``g = k // group_size``. They differ in how the words are laid out:

AWQ (AutoAWQ / llm-awq "GEMM" format, 4-bit)
    ``qweight int32 [K, N // 8]``: word ``(k, c)`` holds row ``k``, columns ``8c .. 8c + 7``
    in the interleaved order ``AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)``: bits ``4i .. 4i + 3``
    hold column ``8c + AWQ_ORDER[i]``. ``qzeros int32 [G, N // 8]`` is packed the same way.
    Zero points are stored as they are.

GPTQ (AutoGPTQ / GPTQModel, 4- or 8-bit)
    ``qweight int32 [K // P, N]`` with ``P = 32 // bits``, packed along K in order: bits
    ``bits*j ..`` of word ``(r, n)`` hold row ``k = r*P + j``. ``qzeros int32 [G, N // P]``
    packs columns in order: bits ``bits*j ..`` of word ``(g, c)`` hold column ``c*P + j``.
    ``g_idx int32 [K]`` maps rows to groups; only the trivial ``k // group_size`` is
    supported (act-order checkpoints permute rows). The original ("gptq", v1) format stores
    ``zero - 1`` (so a symmetric 4-bit checkpoint stores 7 for a zero point of 8); the
    "gptq_v2" format stores the zero point itself.

Zero points that all equal the symmetric one (8 for 4-bit, 128 for 8-bit) give a
symmetric :class:`QuantizedWeight`, which skips loading zeros in the kernels.
"""

from __future__ import annotations

import torch

from infercore.ops.common import FLOAT_DTYPES, check_tensor
from infercore.ops.quant.weights import QuantizedWeight, pack_int4

__all__ = ["AWQ_ORDER", "from_awq", "from_gptq"]

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# Nibble index that holds each column of an AWQ word: the inverse permutation.
_AWQ_NIBBLE_OF_COLUMN = tuple(AWQ_ORDER.index(c) for c in range(8))
_WORDS = (torch.int32,)


def _unpack_words(words: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 ``[..., W]`` -> int16 ``[..., W, 32 // bits]``, field ``j`` = bits ``bits*j ..``."""
    shifts = torch.arange(0, 32, bits, device=words.device, dtype=torch.int32)
    fields = (words[..., None] >> shifts) & ((1 << bits) - 1)
    return fields.to(torch.int16)


def _groups(scales: torch.Tensor, k: int, group_size: int | None) -> int:
    groups = scales.shape[0]
    if groups == 0 or k % groups:
        raise ValueError(f"scales has {groups} group rows, which does not divide K={k}")
    if group_size not in (None, -1) and group_size != k // groups:
        raise ValueError(
            f"group_size={group_size} does not match the tensors: K={k} with {groups} groups "
            f"of scales means group_size={k // groups}"
        )
    return k // groups


def _build(bits: int, u_kn: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
           group_size: int) -> QuantizedWeight:
    """From unpacked values ``u [K, N]`` and zero points ``[G, N]`` (both int16)."""
    sym_zero = 8 if bits == 4 else 128
    symmetric = bool((zeros == sym_zero).all())
    u = u_kn.t()
    if bits == 4:
        qweight = pack_int4(u.to(torch.uint8))
        method = "int4"
    elif symmetric:
        qweight = (u - sym_zero).to(torch.int8)
        method = "int8"
    else:
        qweight = u.to(torch.uint8)
        method = "int8"
    z = None if symmetric else zeros.to(torch.uint8).contiguous()
    return QuantizedWeight(method, qweight.contiguous(), scales.contiguous(), z, group_size)


def from_awq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    *,
    group_size: int | None = None,
) -> QuantizedWeight:
    """Convert one AWQ 4-bit linear layer (see the module docstring for the packing).

    Parameters
    ----------
    qweight : Tensor ``int32 [K, N // 8]``
    qzeros : Tensor ``int32 [G, N // 8]``
    scales : Tensor ``[G, N]``, float16 / bfloat16 / float32
    group_size : int, optional
        Checked against ``K // G`` when given.

    Returns
    -------
    QuantizedWeight of method ``"int4"`` holding ``w [N, K]``.
    """
    qweight = check_tensor("qweight", qweight, ndim=2, dtypes=_WORDS)
    qzeros = check_tensor("qzeros", qzeros, ndim=2, dtypes=_WORDS)
    scales = check_tensor("scales", scales, ndim=2, dtypes=FLOAT_DTYPES)
    k, words = qweight.shape
    n = words * 8
    gs = _groups(scales, k, group_size)
    if tuple(scales.shape) != (k // gs, n):
        raise ValueError(
            f"scales must have shape [G, N] = [{k // gs}, {n}], got {tuple(scales.shape)}"
        )
    if tuple(qzeros.shape) != (k // gs, words):
        raise ValueError(
            f"qzeros must have shape [G, N // 8] = [{k // gs}, {words}], got {tuple(qzeros.shape)}"
        )
    order = list(_AWQ_NIBBLE_OF_COLUMN)
    u = _unpack_words(qweight, 4)[..., order].reshape(k, n)
    z = _unpack_words(qzeros, 4)[..., order].reshape(k // gs, n)
    return _build(4, u, z, scales, gs)


def from_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None = None,
    *,
    bits: int = 4,
    checkpoint_format: str = "gptq",
) -> QuantizedWeight:
    """Convert one GPTQ linear layer (see the module docstring for the packing).

    Parameters
    ----------
    qweight : Tensor ``int32 [K * bits // 32, N]``
    qzeros : Tensor ``int32 [G, N * bits // 32]``
    scales : Tensor ``[G, N]``, float16 / bfloat16 / float32
    g_idx : Tensor ``[K]``, integer, optional
        Must be ``k // group_size`` (no act-order permutation) when given.
    bits : int
        4 or 8.
    checkpoint_format : str
        ``"gptq"`` (v1: stored zero points are ``zero - 1``) or ``"gptq_v2"``.

    Returns
    -------
    QuantizedWeight of method ``"int4"`` (4-bit) or ``"int8"`` (8-bit) holding ``w [N, K]``.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits!r}")
    if checkpoint_format not in ("gptq", "gptq_v2"):
        raise ValueError(
            f"checkpoint_format must be 'gptq' or 'gptq_v2', got {checkpoint_format!r}"
        )
    qweight = check_tensor("qweight", qweight, ndim=2, dtypes=_WORDS)
    qzeros = check_tensor("qzeros", qzeros, ndim=2, dtypes=_WORDS)
    scales = check_tensor("scales", scales, ndim=2, dtypes=FLOAT_DTYPES)
    per_word = 32 // bits
    rows, n = qweight.shape
    k = rows * per_word
    gs = _groups(scales, k, None)
    if tuple(scales.shape) != (k // gs, n):
        raise ValueError(
            f"scales must have shape [G, N] = [{k // gs}, {n}], got {tuple(scales.shape)}"
        )
    if n % per_word or tuple(qzeros.shape) != (k // gs, n // per_word):
        raise ValueError(
            f"qzeros must have shape [G, N // {per_word}] = [{k // gs}, {n // per_word}] for "
            f"N={n}, got {tuple(qzeros.shape)}"
        )
    if g_idx is not None:
        check_tensor("g_idx", g_idx, ndim=1, dtypes=(torch.int32, torch.int64))
        trivial = torch.arange(k, device=g_idx.device) // gs
        if g_idx.shape[0] != k or not torch.equal(g_idx.long(), trivial):
            raise ValueError(
                "g_idx is not k // group_size: the checkpoint was quantized with act-order "
                "(desc_act=True), which permutes rows between groups; this is not supported. "
                "Re-quantize with desc_act=False (or use a checkpoint without act-order)."
            )
    # [K // P, N, P] -> [K // P, P, N] -> [K, N]: field j of word row r is k = r*P + j.
    u = _unpack_words(qweight, bits).permute(0, 2, 1).reshape(k, n)
    z = _unpack_words(qzeros, bits).reshape(k // gs, n)
    if checkpoint_format == "gptq":
        z = (z + 1) & ((1 << bits) - 1)
    return _build(bits, u, z, scales, gs)
