"""The cutlass plugin: registration through the entry point, reasons, tile choice, GEMMs."""

import importlib.metadata
import sqlite3
import sys

import pytest
import torch
from infercore_cutlass import kernels, runtime

import infercore
from infercore.plugins import statuses
from infercore.registry import backends, get_registry


def _cutlass():
    return get_registry().get("gemm", "cutlass")


def test_entry_point_registers_the_cutlass_backend():
    eps = importlib.metadata.entry_points(group="infercore")
    assert any(ep.name == "cutlass" and ep.value == "infercore_cutlass.plugin" for ep in eps)
    assert "cutlass" in [b.name for b in backends("gemm")]
    assert _cutlass().plugin == "cutlass"
    assert {s.name: s.status for s in statuses()}["cutlass"] == "loaded"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reasons given without CUDA")
def test_unavailable_without_cuda_with_reasons():
    reasons = _cutlass().environment_reasons()
    assert any("cuda device" in r for r in reasons), reasons
    a = torch.randn(16, 32, dtype=torch.float16)
    b = torch.randn(32, 8, dtype=torch.float16)
    with pytest.raises(ValueError, match="backend 'cutlass' of 'gemm', which cannot run"):
        infercore.ops.gemm(a, b, backend="cutlass")
    assert infercore.ops.gemm(a, b).shape == (16, 8)  # auto passes it over


def _td(tb, cluster, kernel=None, epilogue=None, stages=0, sched="Default"):
    """A real ``cutlass_cppgen`` tile description (so the CTA tile is computed by CUTLASS's
    own convention), built without a GPU."""
    runtime.load_cutlass()
    from cutlass_cppgen.backend.library import MathInstruction, TileDescription
    from cutlass_library import (
        DataType,
        EpilogueScheduleType,
        KernelScheduleType,
        OpcodeClass,
        TileSchedulerType,
    )

    math = MathInstruction([64, 128, 16], DataType.bf16, DataType.bf16, DataType.f32,
                           OpcodeClass.TensorOp)
    return TileDescription(
        list(tb), stages, None, math, list(cluster),
        kernel_schedule=getattr(KernelScheduleType, kernel or "ScheduleAuto"),
        epilogue_schedule=getattr(EpilogueScheduleType, epilogue or "ScheduleAuto"),
        tile_scheduler=getattr(TileSchedulerType, sched),
    )


def test_tile_choice_follows_preferences():
    coop = ("TmaWarpSpecializedCooperative", "TmaWarpSpecializedCooperative")
    pingpong = ("TmaWarpSpecializedPingpong", "TmaWarpSpecialized")
    tds = [
        _td((128, 256, 64), (2, 1, 1), "ScheduleAuto", "ScheduleAuto"),
        _td((256, 256, 64), (2, 1, 1), *coop, sched="StreamK"),
        _td((128, 256, 64), (2, 1, 1), *coop),  # emitted as 64x256 CTAs
        _td((256, 256, 64), (2, 1, 1), *coop),
        _td((64, 256, 64), (1, 2, 1), *pingpong),
    ]
    assert kernels.cta_tile(tds[2]) == (64, 256, 64)
    assert kernels.choose_tile(tds, 90, "large") is tds[3]
    assert kernels.choose_tile(tds, 90, "small") is tds[4]
    # A kernel of the preferred kind with another tile is re-tiled to the preferred CTA tile.
    retiled = kernels.choose_tile(tds[2:3], 90, "large")
    assert kernels.cta_tile(retiled) == (128, 256, 64)
    assert tuple(retiled.cluster_shape) == (2, 1, 1)
    # None of the preferred kind: the first one CUTLASS compiles (not stream-K, and no
    # cooperative or automatic kernel with CTAs under 128 rows).
    wide = _td((256, 128, 64), (2, 1, 1), "ScheduleAuto", "ScheduleAuto")
    assert kernels.choose_tile([tds[0], tds[1], wide], 90, "small") is wide
    assert kernels.choose_tile(tds[:2], 90, "small") is None
    # the preferred schedules exist only with another cluster: one is re-clustered
    narrow = kernels.choose_tile(tds, 90, "small-n32")
    assert kernels.cta_tile(narrow) == (64, 32, 128)
    assert tuple(narrow.cluster_shape) == (1, 1, 1)
    ampere = [_td((256, 128, 64), (1, 1, 1), stages=4), _td((256, 128, 64), (1, 1, 1), stages=3)]
    assert kernels.choose_tile(ampere, 80, "large") is ampere[1]
    assert kernels.kernel_arch((9, 0)) == 90 and kernels.kernel_arch((8, 9)) == 80
    assert kernels.tile_class(16) == "small" and kernels.tile_class(4096) == "large"
    assert kernels.tile_class(kernels.SMALL_MAX_M) == "small"
    # Llama-8B at M=512 on 132 SMs: o and down (N=4096) have 4 x 16 = 64 tiles of 128x256,
    # at most half the SMs; qkv (N=6144) has 96 tiles
    assert kernels.tile_class(512, 4096, 132) == "few"
    assert kernels.tile_class(512, 6144, 132) == "large"
    assert kernels.tile_class(4096, 4096, 132) == "large"
    # decode-like M: 64x128 CTAs while they fill half of the SMs (gate_up, 224 CTAs), then
    # 64 wide (qkv: 96 CTAs) and 32 wide (o and down: 128 CTAs)
    assert kernels.tile_class(16, 28672, 132) == "small"
    assert kernels.tile_class(64, 6144, 132) == "small-n64"
    assert kernels.tile_class(16, 4096, 132) == "small-n32"
    assert kernels.tile_class(64, 64, 132) == "small-n32"
    assert kernels.tile_class(128, 4096, 132) == "small-n64"  # 2 x 64 CTAs
    assert kernels.tile_class(129, 4096, 132) == "few"
    assert {m for a, m in kernels.TILES if a == 90} == {
        "large", "few", "small", "small-n64", "small-n32"}
    assert {m for a, m in kernels.TILES if a == 80} == {"large", "small"}


def test_kernel_key_classes_by_architecture(monkeypatch):
    # Hopper keeps the CTA-count classes; CUTLASS 2 GPUs fold them into their two classes
    a, b = torch.empty(16, 64), torch.empty(64, 4096)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(kernels, "_device", lambda index: ("GPU", (9, 0), 132))
    assert kernels.kernel_key(a, b, torch.bfloat16).m_class == "small-n32"
    monkeypatch.setattr(kernels, "_device", lambda index: ("GPU", (8, 9), 132))
    assert kernels.kernel_key(a, b, torch.bfloat16).m_class == "small"
    assert kernels.kernel_key(torch.empty(512, 64), b, torch.bfloat16).m_class == "large"


def test_cache_directory_per_device(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path))
    d = runtime.device_cache_dir("NVIDIA H100 80GB HBM3", (9, 0))
    assert d == tmp_path / "nvidia-h100-80gb-hbm3-sm90"
    monkeypatch.delenv(runtime.CACHE_ENV)
    assert runtime.cache_dir().parts[-3:] == (".cache", "infercore", "cutlass")


# Each case is its own kernel (dtype, layout of b, tile class): compiled once, then cached.
@pytest.mark.cuda
@pytest.mark.parametrize(
    ("dtype", "b_kmajor", "m", "n", "k"),
    [
        (torch.bfloat16, True, 1000, 1032, 520),
        (torch.bfloat16, False, 1000, 1032, 520),
        (torch.bfloat16, True, 16, 4096, 4096),
        (torch.float16, True, 300, 264, 136),
    ],
    ids=str,
)
def test_cutlass_gemm_matches_reference(dtype, b_kmajor, m, n, k):
    if _cutlass().environment_reasons():
        pytest.skip("; ".join(_cutlass().environment_reasons()))
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(n, k, device="cuda", dtype=dtype)
    b = w.t() if b_kmajor else w.t().contiguous()
    bias = torch.randn(n, device="cuda", dtype=dtype)
    out = infercore.ops.gemm(a, b, bias=bias, backend="cutlass")
    ref = a.double() @ b.double() + bias.double()
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < 1e-2, err


@pytest.mark.cuda
def test_later_launches_write_new_operand_addresses():
    """A problem shape's launch is prepared once; later calls with other tensors (new
    addresses, new values) must compute with those, also inside a CUDA graph."""
    if _cutlass().environment_reasons():
        pytest.skip("; ".join(_cutlass().environment_reasons()))
    m, n, k = 16, 4096, 4096  # the decode-like tile class of the reference test above
    cases = []
    for seed in range(3):
        torch.manual_seed(seed)
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16).t()
        out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
        cases.append((a, b, out))

    def check(a, b, out):
        ref = a.double() @ b.double()
        err = ((out.double() - ref).norm() / ref.norm()).item()
        assert err < 1e-2, err

    for a, b, out in cases:
        infercore.ops.gemm(a, b, out=out, backend="cutlass")
    for case in cases:
        check(*case)
    a, b, out = cases[0]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        infercore.ops.gemm(a, b, out=out, backend="cutlass")
    a.copy_(torch.randn_like(a))
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    check(a, b, out)


@pytest.mark.cuda
def test_compiled_kernels_are_cached_in_memory_and_on_disk():
    if _cutlass().environment_reasons():
        pytest.skip("; ".join(_cutlass().environment_reasons()))
    a = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(512, 256, device="cuda", dtype=torch.bfloat16)
    key = kernels.kernel_key(a, b, torch.bfloat16)
    first = infercore.ops.gemm(a, b, backend="cutlass")
    op = kernels.get_kernel(key)
    second = infercore.ops.gemm(a, b, backend="cutlass")
    assert kernels.get_kernel(key) is op and torch.equal(first, second)
    db = runtime.device_cache_dir(key.device, key.cc) / "compiled_cache.db"
    with sqlite3.connect(db) as con:
        names = [r[0] for r in con.execute("SELECT op_name FROM compiled_operations")]
    assert op.procedural_name() in names


def test_point_cache_at_prepares_the_kernel_table(tmp_path, monkeypatch):
    import sqlite3
    import types

    from infercore_cutlass.runtime import point_cache_at

    compiler = types.SimpleNamespace(CACHE_FILE=None)
    monkeypatch.setitem(sys.modules, "cutlass_cppgen.backend.compiler", compiler)
    point_cache_at(tmp_path / "dev-sm90")
    assert str(tmp_path / "dev-sm90" / "compiled_cache.db") == compiler.CACHE_FILE
    with sqlite3.connect(compiler.CACHE_FILE) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
    assert ("compiled_operations",) in tables
