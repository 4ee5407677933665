"""gemm / linear: every registered backend against the reference, plus argument checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import infercore
from infercore.ops.gemm import GemmInputs
from infercore.ops.gemm.reference import gemm_reference
from infercore.ops.gemm.triton_configs import (
    CONFIGS,
    FAST_ACCUM_CONFIGS,
    FAST_ACCUM_FEW_TILES,
    FEW_TILES,
    SM90_SHARED_MEMORY,
    GemmConfig,
    fit_shared_memory,
    pick_config,
    shared_memory_bytes,
)
from infercore.ops.gemm.triton_launch import launch_matmul
from infercore.registry import backends, get_registry
from tests.helpers import assert_close, backend_params, poison, skip_unless_supported

# (M, N, K): odd sizes straddling the 32-wide interpreter tiles, M = 1 (decode) included.
SHAPES = [(1, 7, 33), (7, 33, 100), (33, 100, 7), (100, 257, 33), (257, 40, 1)]
DTYPES = [torch.float32, torch.float16]


def _rand(*shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) + 0.25).to(device=device, dtype=dtype)


def _run(backend, a, b, *, bias=None, out_dtype=None, out=None):
    """gemm with ``backend``, skipping (with reasons) when it declines the inputs."""
    dtype = out_dtype or a.dtype
    probe = out if out is not None else a.new_empty(a.shape[0], b.shape[1], dtype=dtype)
    skip_unless_supported("gemm", backend, GemmInputs(a, b, bias, probe))
    return infercore.ops.gemm(a, b, bias=bias, out_dtype=out_dtype, out=out, backend=backend)


def _ref(a, b, bias=None):
    return gemm_reference(a.double(), b.double(), None if bias is None else bias.double())


@pytest.mark.parametrize("backend", backend_params("gemm"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gemm_matches_reference(backend, dtype, shape, device):
    m, n, k = shape
    a = _rand(m, k, dtype=dtype, device=device, seed=m + n)
    b = _rand(k, n, dtype=dtype, device=device, seed=k)
    out = _run(backend, a, b)
    assert out.dtype == dtype and out.shape == (m, n)
    assert_close(out, _ref(a, b), dtype=dtype)


@pytest.mark.parametrize("backend", backend_params("gemm"))
@pytest.mark.parametrize("layout", ["b_kmajor", "b_strided", "a_transposed"])
def test_gemm_takes_strides(backend, layout, device):
    m, n, k = 37, 45, 70
    a = _rand(m, k, dtype=torch.float16, device=device, seed=1)
    if layout == "a_transposed":
        a = _rand(k, m, dtype=torch.float16, device=device, seed=1).t()
    if layout == "b_kmajor":  # weight.t(): what linear passes
        b = _rand(n, k, dtype=torch.float16, device=device, seed=2).t()
    else:
        b = _rand(k, 2 * n + 3, dtype=torch.float16, device=device, seed=2)[:, 1 : 2 * n + 1 : 2]
    assert not (a.is_contiguous() and b.is_contiguous())
    assert_close(_run(backend, a, b), _ref(a, b), dtype=torch.float16)


@pytest.mark.parametrize("backend", backend_params("gemm"))
@pytest.mark.parametrize(
    ("dtype", "out_dtype", "bias_dtype"),
    [
        (torch.float16, torch.float16, torch.float16),
        (torch.float16, torch.float32, torch.float32),
        (torch.float32, torch.float16, torch.float32),
        (torch.float32, torch.float32, torch.float16),
    ],
    ids=str,
)
def test_gemm_bias_and_out_dtype(backend, dtype, out_dtype, bias_dtype, device):
    m, n, k = 19, 50, 41
    a = _rand(m, k, dtype=dtype, device=device, seed=3)
    b = _rand(k, n, dtype=dtype, device=device, seed=4)
    bias = _rand(n, dtype=bias_dtype, device=device, seed=5) * 4
    out = _run(backend, a, b, bias=bias, out_dtype=out_dtype)
    assert out.dtype == out_dtype
    assert_close(out, _ref(a, b, bias), dtype=out_dtype)


@pytest.mark.parametrize("backend", backend_params("gemm", include_reference=True))
def test_gemm_fills_poisoned_strided_out(backend, device):
    m, n, k = 21, 34, 66
    a = _rand(m, k, dtype=torch.float16, device=device, seed=6)
    b = _rand(k, n, dtype=torch.float16, device=device, seed=7)
    buf = poison(torch.empty(m, n + 5, dtype=torch.float32, device=device))
    out = buf[:, 2 : n + 2]
    got = _run(backend, a, b, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert_close(out, _ref(a, b), dtype=torch.float32)
    assert torch.isnan(buf[:, :2]).all() and torch.isnan(buf[:, n + 2 :]).all()


@pytest.mark.parametrize("backend", backend_params("gemm", include_reference=True))
def test_gemm_empty_dims(backend, device):
    a = _rand(0, 8, dtype=torch.float32, device=device, seed=8)
    b = _rand(8, 5, dtype=torch.float32, device=device, seed=9)
    assert _run(backend, a, b).shape == (0, 5)
    bias = _rand(5, dtype=torch.float32, device=device, seed=10)
    out = poison(torch.empty(3, 5, device=device))
    a0, b0 = a.new_empty(3, 0), b.new_empty(0, 5)
    _run(backend, a0, b0, bias=bias, out=out)  # K = 0: the bias alone
    assert torch.equal(out, bias.expand(3, 5))


@pytest.mark.parametrize("backend", backend_params("gemm"))
def test_linear_matches_functional_linear(backend, device):
    x = _rand(2, 3, 40, dtype=torch.float16, device=device, seed=11)
    w = _rand(24, 40, dtype=torch.float16, device=device, seed=12)
    bias = _rand(24, dtype=torch.float16, device=device, seed=13)
    inputs = GemmInputs(x.view(6, 40), w.t(), bias, x.new_empty(6, 24))
    skip_unless_supported("gemm", backend, inputs)
    y = infercore.ops.linear(x, w, bias, backend=backend)
    ref = torch.nn.functional.linear(x.double(), w.double(), bias.double())
    assert y.shape == (2, 3, 24) and y.dtype == torch.float16
    assert_close(y, ref, dtype=torch.float16)


@pytest.mark.parametrize(
    "config",
    [
        GemmConfig(32, 32, 32, group_m=2, persistent=True, tma=True),
        GemmConfig(16, 64, 16, group_m=1, tma=True),
    ],
    ids=["persistent", "one_tile_per_program"],
)
@pytest.mark.parametrize("b_kmajor", [True, False], ids=["b_kmajor", "b_rowmajor"])
def test_triton_tma_kernel(config, b_kmajor, device):
    """The TMA-descriptor kernel (Hopper's path), run here through the interpreter."""
    if device.type == "cuda" and get_registry().get("gemm", "triton").environment_reasons():
        pytest.skip("triton unavailable")
    m, n, k = 70, 48, 96  # 16-byte aligned rows, edges not multiples of the tiles
    a = _rand(m, k, dtype=torch.float16, device=device, seed=14)
    w = _rand(n, k, dtype=torch.float16, device=device, seed=15)
    b = w.t() if b_kmajor else w.t().contiguous()
    bias = _rand(n, dtype=torch.float32, device=device, seed=16)
    out = poison(torch.empty(m, n, dtype=torch.float16, device=device))
    kernel = launch_matmul(a, b, out, bias=bias, config=config)
    if device.type == "cpu" or torch.cuda.get_device_capability(device)[0] >= 9:
        assert kernel == "tma"
    assert_close(out, _ref(a, b, bias), dtype=torch.float16)


def test_triton_falls_back_to_pointers_for_unaligned_rows(device):
    a = torch.randn(9, 7, dtype=torch.float16, device=device)  # 14-byte rows: no TMA
    b = torch.randn(7, 8, dtype=torch.float16, device=device)
    out = poison(torch.empty(9, 8, dtype=torch.float16, device=device))
    assert launch_matmul(a, b, out, config=GemmConfig(16, 16, 16, tma=True)) == "pointer"
    assert_close(out, _ref(a, b), dtype=torch.float16)


def test_config_table_fits_hopper_shared_memory():
    """Every Hopper entry fits 227 KB of shared memory with a 16-bit output tile as it is,
    and with a float32 one once fitted (fewer stages)."""
    tables = {"few": FEW_TILES, "fast": FAST_ACCUM_CONFIGS, "fast few": FAST_ACCUM_FEW_TILES}
    extra = {(cls, bits, f"{m} {name}"): cfg for name, table in tables.items()
             for (cls, bits, m), cfg in table.items()}
    for (cls, bits, _), cfg in {**CONFIGS, **extra}.items():
        assert cfg.block_k * bits // 8 >= 16, cfg  # TMA boxes and dots need 16-byte rows
        if cls != "sm90":
            continue
        assert fit_shared_memory(cfg, bits // 8, 2) == cfg
        fitted = fit_shared_memory(cfg, bits // 8, 4)
        assert shared_memory_bytes(fitted, bits // 8, 4) <= SM90_SHARED_MEMORY, fitted
        assert fitted.num_stages >= 2 and fitted.block_m == cfg.block_m
    assert pick_config(1, 16, torch.device("cpu")).persistent


def test_few_tiles_take_their_own_entry(monkeypatch):
    """Hopper bf16: the M class's entry, unless its output tiles would fill at most half
    of the SMs (then the FEW_TILES entry); without N the M class alone decides."""
    from infercore.ops.gemm import triton_configs

    monkeypatch.setattr(triton_configs, "device_class", lambda device: "sm90")
    monkeypatch.setattr(triton_configs, "num_sms", lambda device: 132)
    dev = torch.device("cuda")
    large, few_large = CONFIGS[("sm90", 16, "large")], FEW_TILES[("sm90", 16, "large")]
    medium, few_medium = CONFIGS[("sm90", 16, "medium")], FEW_TILES[("sm90", 16, "medium")]
    assert (large.block_m, large.block_n) == (128, 256) and few_large != large
    assert (medium.block_m, medium.block_n) == (64, 64) and few_medium != medium
    assert pick_config(512, 16, dev, 4096) == few_large  # 4 x 16 = 64 tiles <= 66
    assert pick_config(512, 16, dev, 6144) == large  # 96 tiles
    assert pick_config(512, 16, dev, 28672) == large
    assert pick_config(4096, 16, dev, 4096) == large  # 512 tiles
    assert pick_config(512, 16, dev) == large
    assert pick_config(64, 16, dev, 4096) == few_medium  # 64 tiles of 64x64
    assert pick_config(64, 16, dev, 6144) == medium  # 96 tiles
    assert pick_config(16, 16, dev, 4096) == CONFIGS[("sm90", 16, "small")]  # no entry
    assert pick_config(512, 8, dev, 4096) == CONFIGS[("sm90", 8, "large")]


def test_fp8_fast_accumulation_has_its_own_entries(monkeypatch):
    """Hopper FP8 with fast accumulation: its own large entry and few-tiles entry; classes
    without one keep the common entry; fast accumulation changes nothing for bf16."""
    from infercore.ops.gemm import triton_configs

    monkeypatch.setattr(triton_configs, "device_class", lambda device: "sm90")
    monkeypatch.setattr(triton_configs, "num_sms", lambda device: 132)
    dev = torch.device("cuda")
    fast, fast_few = (FAST_ACCUM_CONFIGS[("sm90", 8, "large")],
                      FAST_ACCUM_FEW_TILES[("sm90", 8, "large")])
    assert fast != CONFIGS[("sm90", 8, "large")] and fast_few != fast
    assert pick_config(8192, 8, dev, 8192, fast_accum=True) == fast
    assert pick_config(8192, 8, dev, fast_accum=True) == fast
    assert pick_config(512, 8, dev, 6144, fast_accum=True) == fast  # 96 tiles of 128x256
    assert pick_config(512, 8, dev, 4096, fast_accum=True) == fast_few  # 64 tiles
    assert pick_config(8192, 8, dev, 8192) == CONFIGS[("sm90", 8, "large")]
    assert pick_config(16, 8, dev, 4096, fast_accum=True) == CONFIGS[("sm90", 8, "small")]
    assert pick_config(512, 16, dev, 4096, fast_accum=True) == FEW_TILES[("sm90", 16, "large")]


def test_kernels_compile_for_hopper_with_wgmma_and_tma():
    """Ahead-of-time compilation for sm90 (no GPU needed): the Hopper path really uses
    wgmma and TMA, split-K (and only split-K) atomic counters, and fits in shared memory;
    FP8 adds each K tile's products into float32 (one add per accumulator element and
    tile) unless asked for fast accumulation (no float32 adds at all)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "tests.ops.sm90_compile"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 7, proc.stdout
    by_case = {r["case"]: r for r in results}
    promoting = by_case["fp8 large, tensor-wise"]
    per_thread = promoting["block_m"] * promoting["block_n"] // (32 * promoting["num_warps"])
    assert promoting["adds"] == per_thread, promoting
    assert by_case["fp8 large, tensor-wise, fast accumulation"]["adds"] == 0
    for r in results:
        # wgmma: warpgroups of 64 rows (16-row tiles use mma.sync)
        assert r["tma"] and r["wgmma"] == (r["block_m"] >= 64), r
        assert r["atomics"] == ("split-K" in r["case"]), r  # the counters, only when split
        assert r["shared"] <= SM90_SHARED_MEMORY, r


def test_auto_dispatch_order():
    names = [b.name for b in backends("gemm")]
    assert names.index("torch") < names.index("triton") < names.index("reference")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(a=torch.randn(4, 8), b=torch.randn(7, 3)), ValueError, r"b must have shape \[K, N\]"),
        (dict(a=torch.randn(4, 8), b=torch.randn(8, 3, dtype=torch.float16)), TypeError,
         "b must have a's dtype"),
        (dict(a=torch.randn(4, 8, dtype=torch.float64), b=torch.randn(8, 3)), TypeError,
         "a must have dtype"),
        (dict(a=torch.randn(2, 4, 8), b=torch.randn(8, 3)), ValueError, "a must have 2"),
        (dict(a=torch.randn(4, 8), b=torch.randn(8, 3), bias=torch.randn(4)), ValueError,
         r"bias must have shape \[N\] = \[3\]"),
        (dict(a=torch.randn(4, 8), b=torch.randn(8, 3), out_dtype=torch.int32), TypeError,
         "out_dtype must be one of"),
        (dict(a=torch.randn(4, 8), b=torch.randn(8, 3), out=torch.empty(3, 4)), ValueError,
         r"out must have shape \[M, N\] = \[4, 3\]"),
        (dict(a=torch.randn(4, 8), b=torch.randn(8, 3), out=torch.empty(4, 3),
              out_dtype=torch.float16), TypeError, "out has dtype float32 but out_dtype"),
        (dict(a=torch.randn(4, 8), b=torch.randn(8, 3), backend="nope"), ValueError,
         "not a backend of 'gemm'"),
    ],
)
def test_gemm_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        infercore.ops.gemm(**kwargs)


def test_linear_rejects_mismatched_weight():
    with pytest.raises(ValueError, match=r"weight must have shape \[N, K\] with K = x.shape\[-1\]"):
        infercore.ops.linear(torch.randn(2, 8), torch.randn(3, 7))
    with pytest.raises(TypeError, match="weight must have x's dtype"):
        infercore.ops.linear(torch.randn(2, 8), torch.randn(3, 8, dtype=torch.float16))


def test_gemm_custom_ops_have_fake_implementations():
    a = torch.empty(5, 16, device="meta", dtype=torch.bfloat16)
    b = torch.empty(16, 9, device="meta", dtype=torch.bfloat16)
    out = torch.ops.infercore.gemm(a, b, None, torch.float32, "auto")
    assert out.shape == (5, 9) and out.dtype == torch.float32 and out.device.type == "meta"


def test_gemm_under_torch_compile_fullgraph(device):
    """Traced as opaque custom ops (aot_eager checks the fakes without generating code)."""
    x = _rand(3, 5, 24, dtype=torch.float32, device=device, seed=17)
    w = _rand(16, 24, dtype=torch.float32, device=device, seed=18)

    @torch.compile(fullgraph=True, dynamic=False, backend="aot_eager")
    def f(x, w, buf):
        infercore.ops.gemm(x[0], w.t(), out=buf)
        return infercore.ops.linear(x, w) * 2 + 1, buf

    buf = torch.empty(5, 16, device=device)
    y, buf = f(x, w, buf)
    ref = torch.nn.functional.linear(x.double(), w.double())
    assert_close(y, ref * 2 + 1, dtype=torch.float32)
    assert_close(buf, ref[0], dtype=torch.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("gemm"))
@pytest.mark.parametrize(
    ("m", "n", "k"), [(1, 4096, 4096), (16, 6144, 4096), (512, 4096, 14336), (4096, 1024, 4096),
                      (257, 129, 1000)], ids=str)
@pytest.mark.parametrize("b_kmajor", [True, False], ids=["b_kmajor", "b_rowmajor"])
def test_gemm_bf16_on_cuda(backend, m, n, k, b_kmajor):
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    b = w.t() if b_kmajor else w.t().contiguous()
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    out = _run(backend, a, b, bias=bias)
    assert_close(out, _ref(a, b, bias), dtype=torch.bfloat16)
