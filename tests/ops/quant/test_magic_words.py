"""The magic path over 32-bit words (triton_wo_magic_words): int4, int8 and fp8 codes
turned by bit operations into 16-bit operands in the dot's register order, activations
permuted to match. Against the float64 reference on odd N, K not a multiple of the step,
groups of 16 (8-bit codes) / 32 / 64 / 128 and one per channel, with and without zero
points, split K, and NaN-poisoned outputs."""

import pytest
import torch

from infercore.ops.quant import quantize_weight
from infercore.ops.quant import triton_wo_splitk as splitk_mod
from infercore.ops.quant.reference import quantized_linear_reference
from infercore.ops.quant.triton_wo_gemv import word_rows
from infercore.ops.quant.triton_wo_magic_words import (
    FP8_PAIRS,
    _byte_pairs_asm,
    _fp8_pairs_asm,
    _pairs_asm,
    step_words,
)
from infercore.ops.quant.triton_wo_splitk import (
    DecodeConfig,
    default_config,
    plan_wave_splits,
    splitk_linear,
)
from infercore.registry import backends
from tests.helpers import assert_close, poison

_TRITON = [b for b in backends("gemm.w4a16") if b.name == "triton"]
pytestmark = pytest.mark.skipif(
    not _TRITON or bool(_TRITON[0].environment_reasons()),
    reason="the Triton backend is unavailable here",
)

# (method, symmetric, group_size, N, K, block_k): odd N throughout. int4: 4-word steps
# (groups of 32), 8-word steps over 3 splits (groups of 64), groups of 128 in 16-word
# steps, and one scale per channel with K = 296 (37 words: the last 32-word step is mostly
# past K). int8: 4-word steps (groups of 16), 8-word steps (groups of 32), 16-word steps
# (groups of 64), one scale per channel with K = 148 (37 words); fp8 (symmetric only) the
# same way.
FORMATS = [
    ("int4", True, 32, 37, 288, 128),
    ("int4", False, 64, 29, 320, 256),
    ("int4", True, 128, 21, 384, 128),
    ("int4", False, 128, 23, 512, 128),
    ("int4", True, None, 19, 296, 256),
    ("int4", False, None, 27, 296, 256),
    ("int8", True, 16, 37, 144, 64),
    ("int8", False, 32, 29, 160, 128),
    ("int8", True, 64, 21, 192, 64),
    ("int8", False, 64, 23, 256, 128),
    ("int8", True, None, 19, 148, 128),
    ("int8", False, None, 27, 148, 128),
    ("fp8", True, 16, 37, 144, 64),
    ("fp8", True, None, 19, 148, 128),
]


def _case(method, symmetric, group_size, n, k, m, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.1
    x = torch.randn(m, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    qw = quantize_weight(w, method, group_size=group_size or k, symmetric=symmetric)
    return x.to(device), qw.to(device), bias.to(device)


@pytest.fixture
def launches(monkeypatch):
    """Counts launches of the word kernel, so each test knows which kernel it checked."""
    calls = []
    real = splitk_mod.launch_magic_words

    def counted(*args, **kwargs):
        calls.append(kwargs["step"])
        return real(*args, **kwargs)

    monkeypatch.setattr(splitk_mod, "launch_magic_words", counted)
    return calls


def _check(x, qw, bias, cfg, launches):
    out = poison(torch.empty((x.shape[0], qw.out_features), dtype=x.dtype, device=x.device))
    assert splitk_linear(x, qw, bias, out, config=cfg)
    assert launches, "the word kernel did not run"
    ref_bias = bias.double() if bias is not None else None
    assert_close(out, quantized_linear_reference(x.double(), qw, ref_bias), dtype=x.dtype)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("m", [1, 5, 17])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_matches_reference(fmt, m, splits, launches):
    method, symmetric, group_size, n, k, block_k = fmt
    x, qw, bias = _case(method, symmetric, group_size, n, k, m, torch.float16, "cpu",
                        seed=m + splits)
    assert word_rows(qw)
    cfg = DecodeConfig(16, block_k, num_stages=2, splits=splits, path="magic")
    _check(x, qw, bias if m % 2 else None, cfg, launches)
    assert launches == [step_words(qw, block_k * qw.bits // 32)]


def test_step_words():
    def qw(group_size, k=1024):
        return quantize_weight(torch.randn(4, k), "int4", group_size=group_size)

    assert step_words(qw(128)) == 16  # one group per step
    assert step_words(qw(256)) == 32
    assert step_words(qw(1024)) == 64  # capped: a step is part of a group
    assert step_words(qw(96, k=960)) == 4  # 12 words: the largest power of two dividing
    assert step_words(qw(None)) == 64
    assert step_words(qw(128), cap=8) == 8
    assert step_words(qw(16)) is None  # 2 words: a step needs 32 values
    assert step_words(qw(48, k=960)) is None

    def qw8(group_size, k=1024):
        return quantize_weight(torch.randn(4, k), "int8", group_size=group_size)

    assert step_words(qw8(128)) == 32  # 4 values a word
    assert step_words(qw8(16)) == 4
    assert step_words(qw8(48, k=960)) == 4
    assert step_words(qw8(8)) is None  # 2 words
    assert step_words(qw8(None), cap=16) == 16


def test_rows_that_are_not_whole_words_take_the_byte_path(launches):
    # K = 298: 149 bytes per row; the byte version of the magic path serves it
    x, qw, bias = _case("int4", False, None, 19, 298, 3, torch.float16, "cpu", seed=4)
    out = poison(torch.empty((3, 19), dtype=torch.float16))
    assert splitk_linear(x, qw, bias, out, config=DecodeConfig(16, 64, path="magic"))
    assert not launches
    assert_close(out, quantized_linear_reference(x.double(), qw, bias.double()),
                 dtype=torch.float16)


def test_plan_wave_splits_fills_one_wave():
    # 132 SMs, 4 programs each: 528 programs at most
    assert plan_wave_splits(112, 32, 132) == (4, 8)  # 448 programs (a fifth split: 560)
    assert plan_wave_splits(32, 112, 132) == (16, 7)
    assert plan_wave_splits(600, 32, 132) == (1, 32)
    assert plan_wave_splits(8, 3, 132) == (3, 1)  # never more splits than steps
    assert plan_wave_splits(112, 32, 132, programs_per_sm=2) == (2, 16)


def test_default_is_the_word_path_for_a_few_rows():
    qw = quantize_weight(torch.randn(64, 512), "int4", group_size=128)
    for m in (2, 16, 64):
        cfg = default_config(m, qw, torch.bfloat16)
        assert cfg.path == "magic" and step_words(qw, cfg.block_k // 8) == 16
    assert default_config(1, qw, torch.bfloat16).path is None  # GEMV over words
    # rows of 149 bytes: the byte version serves up to 16 rows, the dot path beyond
    odd = quantize_weight(torch.randn(64, 298), "int4", group_size=None)
    assert default_config(16, odd, torch.bfloat16).path == "magic"
    assert default_config(17, odd, torch.bfloat16).path != "magic"


def test_pairs_ptx_subtracts_the_offset_only_for_symmetric_codes():
    exact = _pairs_asm(0x43004300, 0x43084308, bf16=True)
    assert exact.count("lop3.b32") == 4 and exact.count("sub.rn.bf16x2") == 4
    assert "0x43084308" in exact
    assert _pairs_asm(0x64006400, 0x64086408, bf16=False).count("sub.rn.f16x2") == 4
    raw = _pairs_asm(0x43004300, None, bf16=True)
    assert raw.count("lop3.b32") == 4 and "sub." not in raw


def test_byte_pairs_ptx_inverts_the_top_bit_only_for_unsigned_codes():
    signed = _byte_pairs_asm(0x43004300, signed=True, bf16=True)
    assert signed.count("lop3.b32") == 4 and signed.count("sub.rn.bf16x2") == 2
    assert signed.count("0xea;") == 4 and "0xae" not in signed
    unsigned = _byte_pairs_asm(0x64006400, signed=False, bf16=False)
    assert unsigned.count("0xae;") == 2 and unsigned.count("sub.rn.f16x2") == 2


def test_fp8_pairs_ptx_moves_sign_and_bits_by_activation_dtype():
    bf16 = _fp8_pairs_asm(torch.bfloat16)
    assert "shl.b32 t, $2, 4;" in bf16 and "shr.u32 t, $2, 4;" in bf16 and "0x07f007f0" in bf16
    fp16 = _fp8_pairs_asm(torch.float16)
    assert "shl.b32 t, $2, 7;" in fp16 and "shr.u32 t, $2, 1;" in fp16 and "0x3f803f80" in fp16


def test_fp8_bit_moves_give_every_value_times_a_power_of_two():
    # all 256 e4m3 bytes (NaN aside), subnormals included: the exponent fields differ by
    # a constant bias, so the 16-bit pattern is the value times 2**-120 / 2**-8 exactly
    b = torch.arange(256, dtype=torch.int32)
    value = b.to(torch.uint8).view(torch.float8_e4m3fn).double()
    finite = ~value.isnan()
    for dtype, (left, _, low, x_factor, out_factor) in FP8_PAIRS.items():
        bits = ((b << 8) & 0x8000) | ((b << left) & low & 0xFFFF)
        half = bits.to(torch.int16).view(dtype).double()
        assert torch.equal(half[finite] * x_factor * out_factor, value[finite])


def test_int8_rows_that_are_not_whole_words_decline_without_writing(launches):
    # K = 150: rows of 150 bytes are not whole words; int8 has no byte version
    x, qw, _ = _case("int8", True, None, 19, 150, 3, torch.float16, "cpu", seed=5)
    out = poison(torch.empty((3, 19), dtype=torch.float16))
    assert not splitk_linear(x, qw, None, out, config=DecodeConfig(16, 64, path="magic"))
    assert not launches and out.isnan().all()


@pytest.mark.cuda
@pytest.mark.parametrize("m", [1, 4, 16, 33])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize(("block_n", "num_warps"), [(16, 4), (64, 4), (128, 4), (128, 8)],
                         ids=str)
def test_on_cuda(block_n, num_warps, fmt, dtype, m, launches):
    method, symmetric, group_size, n, k, block_k = fmt
    # wider weights than on CPU: several N tiles of 128
    n, k = n * 17, k * 4
    x, qw, bias = _case(method, symmetric, group_size, n, k, m, dtype, "cuda", seed=m)
    cfg = DecodeConfig(block_n, block_k, num_warps=num_warps, num_stages=3, path="magic")
    _check(x, qw, bias, cfg, launches)
