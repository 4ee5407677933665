"""AWQ / GPTQ importers against tensors packed by hand, word by word."""

import pytest
import torch

from infercore.ops.quant import dequantize_weight, from_awq, from_gptq, quantized_linear
from infercore.ops.quant.importers import AWQ_ORDER
from infercore.ops.quant.weights import unpack_int4


def _int32(word: int) -> int:
    """Python int of 32 bits -> the value an int32 tensor stores."""
    return word - (1 << 32) if word >= 1 << 31 else word


def _pack_fields(fields: list[int], bits: int) -> int:
    word = 0
    for j, value in enumerate(fields):
        word |= (value & ((1 << bits) - 1)) << (bits * j)
    return _int32(word)


def _random_layer(k, n, group_size, bits, seed, zero_range=None):
    g = torch.Generator().manual_seed(seed)
    top = (1 << bits) - 1
    u = torch.randint(0, top + 1, (k, n), generator=g)
    lo, hi = zero_range or (0, top)
    z = torch.randint(lo, hi + 1, (k // group_size, n), generator=g)
    s = (torch.rand(k // group_size, n, generator=g) * 0.1 + 0.01).half()
    expected = (u - z.repeat_interleave(group_size, 0)).float() * s.float().repeat_interleave(
        group_size, 0
    )
    return u, z, s, expected.t()  # expected in [N, K]


def _awq_pack(t: torch.Tensor) -> torch.Tensor:
    """[R, N] nibbles -> int32 [R, N // 8]: bits 4i.. of word c hold column 8c + AWQ_ORDER[i]."""
    rows, n = t.shape
    out = [[_pack_fields([int(t[r, 8 * c + AWQ_ORDER[i]]) for i in range(8)], 4)
            for c in range(n // 8)] for r in range(rows)]
    return torch.tensor(out, dtype=torch.int32)


def _gptq_pack_rows(u: torch.Tensor, bits: int) -> torch.Tensor:
    """[K, N] -> int32 [K // P, N]: field j of word (r, n) holds row r * P + j."""
    p = 32 // bits
    k, n = u.shape
    out = [[_pack_fields([int(u[r * p + j, c]) for j in range(p)], bits) for c in range(n)]
           for r in range(k // p)]
    return torch.tensor(out, dtype=torch.int32)


def _gptq_pack_cols(z: torch.Tensor, bits: int) -> torch.Tensor:
    """[G, N] -> int32 [G, N // P]: field j of word (g, c) holds column c * P + j."""
    p = 32 // bits
    g, n = z.shape
    out = [[_pack_fields([int(z[r, c * p + j]) for j in range(p)], bits) for c in range(n // p)]
           for r in range(g)]
    return torch.tensor(out, dtype=torch.int32)


def test_awq_interleaved_order_literal():
    qweight = torch.tensor([[_int32(0x76543210)]] * 2, dtype=torch.int32)  # K=2, N=8
    qzeros = torch.tensor([[_int32(0x88888888)]], dtype=torch.int32)
    qw = from_awq(qweight, qzeros, torch.ones(1, 8, dtype=torch.float16))
    # nibble i holds column AWQ_ORDER[i] = (0, 2, 4, 6, 1, 3, 5, 7): column j gets i
    assert unpack_int4(qw.qweight)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert qw.symmetric and qw.group_size == 2


@pytest.mark.parametrize("group_size", [32, 64])
def test_awq_matches_hand_packed_layer(group_size):
    u, z, s, expected = _random_layer(64, 24, group_size, 4, seed=group_size)
    qw = from_awq(_awq_pack(u), _awq_pack(z), s, group_size=group_size)
    assert qw.method == "int4" and not qw.symmetric and qw.scales.dtype == torch.float16
    assert torch.equal(dequantize_weight(qw), expected)
    x = torch.randn(3, 64)
    torch.testing.assert_close(quantized_linear(x, qw), x @ expected.t(), rtol=1e-4, atol=1e-4)


def test_gptq_sequential_order_literal():
    qweight = torch.tensor([[_int32(0x76543210), 0]], dtype=torch.int32)  # K=8, N=2
    qzeros = torch.zeros(1, 1, dtype=torch.int32)  # v1 stores zero - 1; 2 columns, 4-bit
    with pytest.raises(ValueError, match="qzeros must have shape"):
        from_gptq(qweight, qzeros, torch.ones(1, 2, dtype=torch.float16))
    qweight = torch.tensor([[_int32(0x76543210)] + [0] * 7], dtype=torch.int32)  # N=8
    qzeros = torch.tensor([[_int32(0x77777777)]], dtype=torch.int32)
    qw = from_gptq(qweight, qzeros, torch.ones(1, 8, dtype=torch.float16))
    assert unpack_int4(qw.qweight)[0].tolist() == list(range(8))  # rows 0..7 of column 0
    assert qw.symmetric  # stored 7 + 1 = 8 everywhere


@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_matches_hand_packed_layer(bits, fmt):
    group_size = 32
    # v1 cannot store a zero point of 0 (it stores zero - 1): keep zeros >= 1 there
    zero_range = (1, (1 << bits) - 1) if fmt == "gptq" else None
    u, z, s, expected = _random_layer(64, 16, group_size, bits, seed=bits, zero_range=zero_range)
    stored_z = z - 1 if fmt == "gptq" else z
    g_idx = torch.arange(64, dtype=torch.int32) // group_size
    qw = from_gptq(_gptq_pack_rows(u, bits), _gptq_pack_cols(stored_z, bits), s, g_idx,
                   bits=bits, checkpoint_format=fmt)
    assert qw.method == ("int4" if bits == 4 else "int8") and not qw.symmetric
    assert torch.equal(dequantize_weight(qw), expected)


def test_gptq_symmetric_8bit_becomes_int8_symmetric():
    u, z, s, expected = _random_layer(32, 8, 16, 8, seed=1, zero_range=(128, 128))
    qw = from_gptq(_gptq_pack_rows(u, 8), _gptq_pack_cols(z - 1, 8), s, bits=8)
    assert qw.symmetric and qw.qweight.dtype == torch.int8
    assert torch.equal(dequantize_weight(qw), expected)


def test_gptq_rejects_act_order_and_bad_arguments():
    u, z, s, _ = _random_layer(64, 8, 32, 4, seed=2)
    qweight, qzeros = _gptq_pack_rows(u, 4), _gptq_pack_cols(z, 4)
    g_idx = (torch.arange(64) // 32).flip(0).int()
    with pytest.raises(ValueError, match="act-order"):
        from_gptq(qweight, qzeros, s, g_idx)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        from_gptq(qweight, qzeros, s, bits=3)
    with pytest.raises(ValueError, match="checkpoint_format must be"):
        from_gptq(qweight, qzeros, s, checkpoint_format="exl2")
    with pytest.raises(TypeError, match="qweight must have dtype int32"):
        from_gptq(qweight.to(torch.int64), qzeros, s)
    with pytest.raises(ValueError, match="scales has 3 group rows"):
        from_gptq(qweight, qzeros, s[:1].expand(3, 8).contiguous())
    with pytest.raises(ValueError, match="group_size=16 does not match"):
        from_awq(_awq_pack(u), _awq_pack(z), s, group_size=16)
