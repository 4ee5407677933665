"""Split-K in the Triton matmul kernels (pointer and TMA, plain and persistent): against
the reference on odd shapes, deterministic, counters left at zero; split planning."""

import dataclasses

import pytest
import torch

import infercore
from infercore.ops import splitk
from infercore.ops.gemm import GemmFp8Inputs
from infercore.ops.gemm.fp8_reference import gemm_fp8_reference
from infercore.ops.gemm.fp8_triton import gemm_fp8_triton
from infercore.ops.gemm.reference import gemm_reference
from infercore.ops.gemm.triton_configs import (
    CONFIGS,
    MAX_SPLIT_K,
    SPLIT_K_PARTIAL_RATIO,
    SPLIT_K_WAVES,
    GemmConfig,
    num_sms,
    plan_split_k,
)
from infercore.ops.gemm.triton_gemm import tune_space
from infercore.ops.gemm.triton_launch import launch_matmul
from infercore.registry import get_registry
from tests.helpers import assert_close, poison

# (M, N, K): M from 1 to 33, K not a multiple of BLOCK_K * split_k (16 * 2, 16 * 3); the
# last two have 16-byte rows in float16 and float32, so the TMA kernel takes them.
SHAPES = [(1, 37, 100), (7, 19, 83), (17, 48, 136), (33, 24, 104)]
# (pointer or TMA when the rows allow, persistent): 16x16x16 tiles, 2 "SMs" in the
# interpreter, so a persistent program runs several splits of several tiles.
KERNELS = {
    "pointer": GemmConfig(16, 16, 16, group_m=2),
    "tma_persistent": GemmConfig(16, 16, 16, group_m=2, tma=True, persistent=True),
}


def _rand(*shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) + 0.25).to(device=device, dtype=dtype)


def _skip_without_triton(device):
    if device.type == "cuda" and get_registry().get("gemm", "triton").environment_reasons():
        pytest.skip("triton unavailable")


def _counters_at_zero(device, n):
    return int(splitk.split_counters(device, n)[:n].abs().sum()) == 0


def _split_matmul(a, b, bias, config):
    """Two poisoned calls: (first output, second output, kernel used)."""
    outs, kernel = [], None
    for _ in range(2):
        out = poison(torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device))
        kernel = launch_matmul(a, b, out, bias=bias, config=config)
        outs.append(out)
    return outs[0], outs[1], kernel


@pytest.mark.parametrize("split_k", [2, 3])
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_split_k_matches_reference(shape, dtype, kernel, split_k, device):
    _skip_without_triton(device)
    m, n, k = shape
    a = _rand(m, k, dtype=dtype, device=device, seed=m + k)
    b = _rand(n, k, dtype=dtype, device=device, seed=n).t()  # weight.t(), as linear passes
    bias = _rand(n, dtype=torch.float32, device=device, seed=k) * 4
    config = dataclasses.replace(KERNELS[kernel], split_k=split_k)
    first, second, used = _split_matmul(a, b, bias, config)
    hopper = device.type == "cpu" or torch.cuda.get_device_capability(device)[0] >= 9
    if kernel == "tma_persistent" and hopper:
        aligned = (k * dtype.itemsize) % 16 == 0 and (n * dtype.itemsize) % 16 == 0
        assert used == ("tma" if aligned else "pointer")
    ref = gemm_reference(a.double(), b.double(), bias.double())
    assert_close(first, ref, dtype=dtype)
    # the second call is right too: the first left every tile's counter at zero
    tiles = -(-m // 16) * -(-n // 16)
    assert _counters_at_zero(device, tiles)
    assert torch.equal(first, second)  # partials summed in a fixed order


def test_split_k_planned_from_the_sms(device):
    """``split_k=None``: 2 output tiles of 16x16 and 7 K tiles, split towards
    SPLIT_K_WAVES x SMs programs within the partials' traffic limit (6 splits here): in
    the interpreter (2 SMs) 3 splits of 3, 3 and 1 K tiles; on a GPU with 132 SMs the
    limit, 6 wanted splits of 2 K tiles, so 4 splits. The result is right either way."""
    _skip_without_triton(device)
    m, n, k = 2, 20, 100  # few rows: the partials traffic allows up to 6 splits
    config = GemmConfig(16, 16, 16, split_k=None)
    splits, per_split = plan_split_k(config, m, n, k, 4, device)
    wanted = min(-(-SPLIT_K_WAVES * num_sms(device) // 2), 6)
    assert per_split == -(-7 // wanted)  # the fewest K tiles per split that give `wanted`
    assert (splits - 1) * per_split < 7 <= splits * per_split  # all of K, no empty split
    a = _rand(m, k, dtype=torch.float32, device=device, seed=1)
    b = _rand(k, n, dtype=torch.float32, device=device, seed=2)
    out, _, _ = _split_matmul(a, b, None, config)
    assert_close(out, gemm_reference(a.double(), b.double()), dtype=torch.float32)
    assert _counters_at_zero(device, 2)


def test_split_k_one_k_tile_and_empty_k_run_unsplit(device):
    _skip_without_triton(device)
    config = GemmConfig(16, 16, 16, split_k=4)
    assert plan_split_k(config, 9, 40, 16, 2, device) == (1, 1)
    assert plan_split_k(config, 9, 40, 0, 2, device) == (1, 1)
    a = _rand(9, 0, dtype=torch.float32, device=device, seed=3)
    b = _rand(0, 12, dtype=torch.float32, device=device, seed=4)
    bias = _rand(12, dtype=torch.float32, device=device, seed=5)
    out, _, _ = _split_matmul(a, b, bias, config)
    assert torch.equal(out, bias.expand(9, 12))


@pytest.mark.parametrize("recipe", ["token_channel", "group_block"])
def test_split_k_fp8_scales(recipe, device):
    """FP8 through the split path: per-K-group scales follow each split's K tiles, and
    per-row/column scales and the bias are applied once, after the sum."""
    _skip_without_triton(device)
    ga, ba, gb, bb = {"token_channel": ("token", None, "channel", None),
                      "group_block": ("block", (1, 128), "block", (128, 128))}[recipe]
    m, n, k = 9, 24, 300
    x = _rand(m, k, dtype=torch.float32, device=device, seed=6)
    w = _rand(n, k, dtype=torch.float32, device=device, seed=7)
    a_q, a_s = infercore.ops.quantize_fp8(x, ga, block_size=ba or (128, 128))
    b_q, b_s = infercore.ops.quantize_fp8(w.t(), gb, block_size=bb or (128, 128))
    bias = _rand(n, dtype=torch.float32, device=device, seed=8)
    out = poison(torch.empty(m, n, dtype=torch.float32, device=device))
    inputs = GemmFp8Inputs(a_q, b_q, a_s, b_s, bias, out)
    gemm_fp8_triton(inputs, config=GemmConfig(16, 16, 32, split_k=3))
    assert_close(out, gemm_fp8_reference(inputs, torch.float64), tol=1e-3)
    assert _counters_at_zero(device, 2)


def test_fixed_and_planned_splits_leave_no_split_empty():
    for k_tiles in range(0, 40):
        for wanted in range(1, 20):
            count, per_split = splitk.fixed_splits(wanted, k_tiles)
            assert 1 <= count <= wanted and per_split >= 1
            assert (count - 1) * per_split < max(k_tiles, 1) <= count * per_split
    # Llama-3-8B o_proj at M=16 on 132 SMs: 64 tiles of 16x64, K=4096 in 32 tiles of 128
    splits, per_split = splitk.plan_splits(64, 32, SPLIT_K_WAVES * 132, MAX_SPLIT_K)
    assert 64 * splits >= SPLIT_K_WAVES * 132 and splits * per_split >= 32
    assert splitk.plan_splits(1000, 32, 396, MAX_SPLIT_K) == (1, 32)  # enough tiles already
    assert splitk.plan_splits(1, 1000, 396, MAX_SPLIT_K)[0] == MAX_SPLIT_K


def test_planned_split_k_bounds_the_partials_traffic(device):
    """Float32 partials (written and read) stay within SPLIT_K_PARTIAL_RATIO of the bytes
    of b, and a grid that already fills the GPU is not split."""
    config = GemmConfig(16, 64, 128, split_k=None)
    for m, n, k in [(16, 4096, 4096), (64, 4096, 4096), (64, 4096, 14336), (256, 4096, 4096),
                    (16, 28672, 4096), (2048, 4096, 4096)]:
        splits, _ = plan_split_k(config, m, n, k, 2, device)
        assert splits == 1 or splits * m * n * 8 <= SPLIT_K_PARTIAL_RATIO * n * k * 2
    assert plan_split_k(config, 256, 4096, 4096, 2, device)[0] == 1
    assert plan_split_k(config, 2048, 4096, 4096, 2, device)[0] == 1


def test_config_table_splits_only_16_bit_small_and_medium():
    for (_, bits, mc), cfg in CONFIGS.items():
        if bits != 16 or mc == "large":
            assert cfg.split_k == 1, (bits, mc, cfg)


def test_tune_space_offers_splits(device):
    configs = tune_space(16, 2, 2, device)
    assert any(c.split_k != 1 for c in configs) and any(c.split_k == 1 for c in configs)
    assert len(set(configs)) == len(configs)


@pytest.mark.parametrize("split_k", [0, -2, 1.5])
def test_config_rejects_bad_split_k(split_k):
    with pytest.raises(ValueError, match=r"split_k must be None or an integer >= 1, got"):
        GemmConfig(16, 16, 16, split_k=split_k)


@pytest.mark.cuda
@pytest.mark.parametrize("split_k", [None, 2, 5])
@pytest.mark.parametrize("tma", [True, False], ids=["tma", "pointer"])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 4096, 4096), (16, 6144, 4096), (64, 4096, 14336),
                                           (512, 4096, 4096), (33, 1000, 1000)], ids=str)
def test_split_k_bf16_on_cuda(m, n, k, tma, split_k):
    _skip_without_triton(torch.device("cuda"))
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16).t()
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    block_m = 16 if m <= 32 else 64
    config = GemmConfig(block_m, 64, 128, num_warps=4, num_stages=3, tma=tma, split_k=split_k)
    first, second, used = _split_matmul(a, b, bias, config)
    assert_close(first, gemm_reference(a.double(), b.double(), bias.double()),
                 dtype=torch.bfloat16)
    assert torch.equal(first, second)
    assert _counters_at_zero(a.device, -(-m // block_m) * -(-n // 64))
    if tma and torch.cuda.get_device_capability()[0] >= 9 and n % 8 == 0 and k % 8 == 0:
        assert used == "tma"
