"""The split-K decode kernel (triton_wo_splitk) directly, under explicit configurations:
K tiles spanning several groups, the GEMV, dot and magic paths, edge masks, group sizes,
asymmetric zeros, split counts, and fully written (NaN-poisoned) outputs."""

import dataclasses

import pytest
import torch

from infercore.ops import splitk
from infercore.ops.quant import quantize_weight
from infercore.ops.quant.reference import quantized_linear_reference
from infercore.ops.quant.triton_wo_gemv import word_bits
from infercore.ops.quant.triton_wo_splitk import (
    DEFAULT_CONFIGS,
    MAGIC8_CONFIGS,
    MAX_DOT_BLOCK_K,
    DecodeConfig,
    default_config,
    fixed_splits,
    splitk_linear,
    tile_shape,
)
from infercore.registry import backends
from tests.helpers import assert_close, poison

_TRITON = [b for b in backends("gemm.w4a16") if b.name == "triton"]
pytestmark = pytest.mark.skipif(
    not _TRITON or bool(_TRITON[0].environment_reasons()),
    reason="the Triton backend is unavailable here",
)

# (method, symmetric, group_size, N, K): odd N; K tiles of 128 below hold 4, 2 or 1 groups
# (group 32 / 64 / 128), a part of one group (per channel, K not a multiple of the tile)
# or an odd multiple of 16 (48: the tile is capped to 16).
FORMATS = [
    ("int4", True, 32, 37, 384),
    ("int4", False, 64, 29, 320),
    ("int4", True, 128, 21, 384),
    ("int4", False, None, 19, 298),
    ("int8", False, 32, 37, 224),
    ("int8", True, 128, 21, 256),
    ("int8", True, None, 29, 301),
    ("int8", False, 48, 23, 144),
    ("fp8", True, 64, 19, 192),
]


def _case(method, symmetric, group_size, n, k, m, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=g) * 0.1).to(dtype)
    x = torch.randn(m, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    return x, quantize_weight(w, method, group_size=group_size, symmetric=symmetric), bias


def _run(x, qw, bias, config):
    out = poison(torch.empty((x.shape[0], qw.out_features), dtype=x.dtype))
    assert splitk_linear(x, qw, bias, out, config=config)
    return out


@pytest.mark.parametrize("path", ["gemv", "dot"])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_matches_reference(fmt, m, path):
    x, qw, bias = _case(*fmt, m, torch.float16, seed=m)
    # 3 splits of the K tiles (the partial-sum path), 16 rows per tile (a masked last one)
    out = _run(x, qw, bias, DecodeConfig(block_n=16, block_k=128, splits=3, path=path))
    assert_close(out, quantized_linear_reference(x.double(), qw, bias.double()),
                 dtype=torch.float16)


@pytest.mark.parametrize("path", ["gemv", "dot"])
def test_float32_wide_tiles_without_bias(path):
    # 512-value tiles: 8 groups of 64 each; one split (direct store); 5 rows
    x, qw, _ = _case("int4", False, 64, 45, 1024, 5, torch.float32, seed=3)
    out = _run(x, qw, None, DecodeConfig(block_n=32, block_k=512, splits=1, path=path))
    assert_close(out, quantized_linear_reference(x.double(), qw, None), dtype=torch.float32)


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize(("method", "symmetric", "group_size"),
                         [("int4", True, 48), ("int4", False, None), ("int8", True, 8),
                          ("int8", False, None)], ids=str)
def test_word_gemv_float32_large_activations(method, symmetric, group_size, prefetch):
    # K = 528: whole 32-bit words, not a multiple of the 256-value step (masked words); two
    # rows; activations near 1e4 (their scaled copies stay finite); groups of 48 (tiles of
    # 16: two int4 words under one scale) and 8 (two int8 words)
    x, qw, bias = _case(method, symmetric, group_size, 45, 528, 2, torch.float32, seed=7)
    x = x * 1e4
    cfg = DecodeConfig(block_n=16, block_k=256, splits=2, path="gemv", prefetch=prefetch)
    assert word_bits(qw) == qw.bits
    out = _run(x, qw, bias, cfg)
    assert_close(out, quantized_linear_reference(x.double(), qw, bias.double()),
                 dtype=torch.float32)


# (method, symmetric, group_size): groups of 128 (two per 256-value step), 64, one scale
# per channel with and without zero points (the scale then applies once per row)
WORD_FORMATS = [("int4", True, 128), ("int4", False, 64), ("int8", True, None),
                ("int8", False, None)]
# (num_stages, prefetch): registers hold the next step; loads run ahead through shared
# memory (on a GPU); neither
WORD_PIPELINES = [(1, True), (3, False), (1, False)]


def _word_gemv_case(device, dtype, fmt, pipeline, m, aligned):
    method, symmetric, group_size = fmt
    stages, prefetch = pipeline
    n, k = 77, 1024
    g = torch.Generator().manual_seed(m + 10 * stages)
    w = torch.randn(n, k, generator=g) * 0.1
    qw = quantize_weight(w.to(device), method, group_size=group_size, symmetric=symmetric)
    # unaligned: rows start 2 bytes past a 4-byte boundary, so 16-bit activations load one
    # value at a time instead of as 32-bit pairs
    wide = torch.randn(m, k + 2, generator=g).to(device=device, dtype=dtype)
    x = wide[:, :k] if aligned else wide[:, 1:k + 1]
    bias = torch.randn(n, generator=g).to(device=device, dtype=dtype)
    cfg = DecodeConfig(block_n=32, block_k=256, num_stages=stages, splits=2, path="gemv",
                       prefetch=prefetch)
    out = poison(torch.empty((m, n), device=device, dtype=dtype))
    assert splitk_linear(x, qw, bias, out, config=cfg)
    assert_close(out, quantized_linear_reference(x.double(), qw, bias.double()), dtype=dtype)


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("pipeline", WORD_PIPELINES, ids=str)
@pytest.mark.parametrize("fmt", WORD_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_word_gemv_activation_loads_and_pipelines(dtype, fmt, pipeline, aligned):
    _word_gemv_case("cpu", dtype, fmt, pipeline, 1, aligned)


@pytest.mark.cuda
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("pipeline", WORD_PIPELINES, ids=str)
@pytest.mark.parametrize("fmt", WORD_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_word_gemv_on_cuda(dtype, fmt, pipeline, aligned, m):
    if dtype == torch.float32 and not aligned:
        pytest.skip("float32 activations always load one value at a time")
    _word_gemv_case("cuda", dtype, fmt, pipeline, m, aligned)


@pytest.mark.parametrize(("method", "group_size"), [("int8", None), ("int4", 128)], ids=str)
def test_word_gemv_many_rows_shortens_long_steps(method, group_size):
    # 16 rows with 1024-value steps would hold 16 x 32 x 256 sums per step: the launch
    # halves the step (and a per-channel group with it) until the tile is small
    x, qw, bias = _case(method, True, group_size, 40, 2048, 16, torch.float16, seed=5)
    cfg = DecodeConfig(block_n=32, block_k=1024, splits=2, path="gemv")
    out = _run(x, qw, bias, cfg)
    assert_close(out, quantized_linear_reference(x.double(), qw, bias.double()),
                 dtype=torch.float16)


def test_word_bits_needs_whole_aligned_words():
    def qw(method, k, n=8):
        return quantize_weight(torch.randn(n, k), method, group_size=k, symmetric=True)

    assert word_bits(qw("int4", 64)) == 4
    assert word_bits(qw("int8", 36)) == 8
    assert word_bits(qw("int4", 36)) is None  # 18 bytes per row: not whole words
    assert word_bits(qw("int8", 6)) is None
    assert word_bits(qw("fp8", 64)) is None


# int4 (symmetric, group_size, N, K, block_k) for the magic path: odd N (a masked last tile
# of 16 rows); groups of 32 / 64 (4 / 2 dots per 128-value tile), of 128 in 256-value tiles
# (K = 384: the second tile's second group lies past K) and in 128-value tiles (5 tiles over
# 3 splits), one group per channel (K = 298: a masked last tile).
MAGIC_FORMATS = [
    (True, 32, 37, 384, 128),
    (False, 64, 29, 320, 128),
    (True, 128, 21, 384, 256),
    (False, 128, 23, 640, 128),
    (False, None, 19, 298, 64),
]


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("m", [1, 3, 16, 17])
@pytest.mark.parametrize("fmt", MAGIC_FORMATS, ids=str)
def test_magic_path_matches_reference(fmt, m, splits):
    symmetric, group_size, n, k, block_k = fmt
    x, qw, bias = _case("int4", symmetric, group_size, n, k, m, torch.float16, seed=m + splits)
    if m % 2 == 0:
        bias = None
    out = _run(x, qw, bias, DecodeConfig(16, block_k, splits=splits, path="magic"))
    ref_bias = bias.double() if bias is not None else None
    assert_close(out, quantized_linear_reference(x.double(), qw, ref_bias), dtype=torch.float16)


@pytest.mark.parametrize(
    ("method", "dtype"),
    [("int4", torch.float32), ("int8", torch.float32), ("fp8", torch.float32)],
    ids=str,
)
def test_magic_path_refuses_float32_activations(method, dtype):
    # an explicit path is never swapped for another one: the call raises, writing nothing
    x, qw, _ = _case(method, True, 64, 21, 256, 3, dtype, seed=2)
    out = poison(torch.empty((3, 21), dtype=dtype))
    with pytest.raises(ValueError, match="path='magic' needs bfloat16 or float16 activations"):
        splitk_linear(x, qw, None, out, config=DecodeConfig(16, 128, path="magic"))
    assert out.isnan().all()


@pytest.mark.parametrize("splits", [1, 2, 5])
def test_split_counts_agree_deterministic_and_leave_counters_at_zero(splits):
    x, qw, bias = _case("int8", True, 32, 33, 320, 2, torch.float32, seed=5)
    cfg = DecodeConfig(block_n=16, block_k=64, splits=splits, path="gemv")
    first, second = _run(x, qw, bias, cfg), _run(x, qw, bias, cfg)
    assert torch.equal(first, second)
    if splits > 1:  # the 3 N tiles' counters are back at zero for the next call
        assert int(splitk.split_counters(x.device, 3)[:3].abs().sum()) == 0
    assert_close(first, quantized_linear_reference(x.double(), qw, bias.double()),
                 dtype=torch.float32)


def test_default_configs_run():
    # each default: GEMV for M <= GEMV_MAX_M, dot above, for 4- and 8-bit weights; with
    # 16-bit activations the magic path above GEMV_MAX_M
    for method, m in [("int4", 2), ("int4", 6), ("int8", 2), ("int8", 6)]:
        x, qw, bias = _case(method, True, 64, 21, 256, m, torch.float16, seed=m)
        cfg = default_config(m, qw)
        assert cfg in DEFAULT_CONFIGS.values()
        assert default_config(m, qw, torch.float16).path == "magic"
        out = _run(x, qw, bias, None)
        assert_close(out, quantized_linear_reference(x.double(), qw, bias.double()),
                     dtype=torch.float16)
    # groups of 16 leave the int4 magic path no tile, groups of 8 the int8 one, and int8
    # rows of 150 bytes are not whole words: the default falls back to the dot path
    small_groups = quantize_weight(torch.randn(8, 64), "int4", group_size=16)
    assert default_config(4, small_groups, torch.float16).path != "magic"
    assert default_config(4, quantize_weight(torch.randn(8, 64), "int8", group_size=8),
                          torch.float16).path != "magic"
    assert default_config(4, quantize_weight(torch.randn(8, 150), "int8", group_size=None),
                          torch.float16).path != "magic"
    int8 = quantize_weight(torch.randn(8, 64), "int8", group_size=16)
    assert [default_config(m, int8, torch.bfloat16) for m in (16, 17, 64)] == [
        MAGIC8_CONFIGS[0][1], MAGIC8_CONFIGS[1][1], MAGIC8_CONFIGS[1][1]]
    assert default_config(65, int8, torch.bfloat16).path != "magic"


def test_tile_shape():
    qw = quantize_weight(torch.randn(8, 1024), "int4", group_size=128)
    assert tile_shape(qw, 512, "gemv") == (512, 128)  # four groups per tile
    assert tile_shape(qw, 64, "gemv") == (64, 64)  # half a group per tile
    assert tile_shape(qw, 1024, "gemv") == (1024, 128)
    for path in ("dot", "magic"):  # dot steps capped
        assert tile_shape(qw, 1024, path) == (MAX_DOT_BLOCK_K, 128)
    per_channel = quantize_weight(torch.randn(8, 100), "int8", group_size=None)
    assert tile_shape(per_channel, 512, "dot") == (128, 128)
    odd = quantize_weight(torch.randn(8, 96), "int4", group_size=48)
    assert tile_shape(odd, 256, "gemv") == (16, 16)
    assert tile_shape(odd, 256, "dot") is None  # int4 dots need 32-value tiles
    assert tile_shape(odd, 256, "magic") is None
    small = quantize_weight(torch.randn(8, 128), "int4", group_size=16)
    assert tile_shape(small, 128, "dot") == (128, 16)  # dequantized before the dot
    assert tile_shape(small, 128, "magic") is None  # one group per dot: 8 values a side


@pytest.mark.parametrize(
    ("group_size", "path"), [(48, "dot"), (48, "magic"), (16, "magic")], ids=str
)
def test_int4_groups_without_a_tile_decline_without_writing(group_size, path):
    x, qw, _ = _case("int4", True, group_size, 8, 96, 5, torch.float16, seed=1)
    out = poison(torch.empty((5, 8), dtype=torch.float16))
    assert not splitk_linear(x, qw, None, out, config=DecodeConfig(16, 128, path=path))
    assert out.isnan().all()


def test_fixed_splits_never_leaves_an_empty_split():
    for splits in range(1, 20):
        for k_tiles in range(1, 20):
            count, per_split = fixed_splits(splits, k_tiles)
            assert count <= splits and (count - 1) * per_split < k_tiles <= count * per_split


def test_config_is_a_plain_frozen_dataclass():
    cfg = DecodeConfig(32, 256, num_warps=8, num_stages=2, splits=4, path="dot")
    assert dataclasses.replace(cfg, splits=None).splits is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.block_n = 64
    with pytest.raises(ValueError, match=r"path must be None or one of .*got 'mma'"):
        DecodeConfig(32, 256, path="mma")


@pytest.mark.cuda
@pytest.mark.parametrize("m", [1, 4, 16, 64])
@pytest.mark.parametrize("path", ["gemv", "dot", "magic"])
@pytest.mark.parametrize(
    ("method", "symmetric", "group_size"),
    [("int4", True, 128), ("int4", False, 32), ("int8", True, None), ("int8", False, 64),
     ("fp8", True, None)],
    ids=str,
)
@pytest.mark.parametrize("block", [(16, 512), (64, 256), (32, 1024)], ids=str)
def test_bfloat16_configs_on_cuda(block, method, symmetric, group_size, path, m):
    if path == "gemv" and m > 16:
        pytest.skip("the GEMV path unrolls over rows: meant for few rows")
    torch.manual_seed(m)
    n, k = 1000, 2048
    w = (torch.randn(n, k, device="cuda") * 0.02).to(torch.bfloat16)
    qw = quantize_weight(w, method, group_size=group_size, symmetric=symmetric)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    cfg = DecodeConfig(*block, num_warps=4, num_stages=3, path=path)
    out = poison(torch.empty((m, n), device="cuda", dtype=torch.bfloat16))
    assert splitk_linear(x, qw, bias, out, config=cfg)
    assert_close(out, quantized_linear_reference(x.double(), qw, bias.double()),
                 dtype=torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.parametrize("m", [1, 16, 64])
@pytest.mark.parametrize(("symmetric", "group_size"), [(True, 128), (False, None)], ids=str)
def test_float16_magic_path_on_cuda(symmetric, group_size, m):
    torch.manual_seed(m)
    n, k = 1000, 2048
    w = (torch.randn(n, k, device="cuda") * 0.02).to(torch.float16)
    qw = quantize_weight(w, "int4", group_size=group_size, symmetric=symmetric)
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    cfg = DecodeConfig(64, 256, num_warps=4, num_stages=3, splits=4, path="magic")
    out = poison(torch.empty((m, n), device="cuda", dtype=torch.float16))
    assert splitk_linear(x, qw, None, out, config=cfg)
    assert_close(out, quantized_linear_reference(x.double(), qw, None), dtype=torch.float16)
