"""Single-process tests: registry entries, configs, libnccl discovery, sharding, launcher."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from infercore import ConfigError
from infercore.comm import (
    CommConfig,
    Handle,
    RowParallelLinear,
    apply_tensor_parallel,
    init_communicator,
    register_linear_sharder,
    shard_linear,
)
from infercore.comm.env import disable_nvls
from infercore.comm.launch import launch, main
from infercore.comm.pynccl import NcclLibrary, find_nccl_library
from infercore.comm.tp.sharding import kv_head_rows, local_kv_heads
from infercore.comm.tp.vocab import vocab_range
from infercore.registry import backends, families, get_registry


def test_comm_family_is_registered_with_both_backends():
    fam = families()["comm.backend"]
    assert fam.kind == "component" and fam.protocol is not None
    assert [b.name for b in backends("comm.backend")] == ["torch", "pynccl"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reasons given without CUDA")
def test_pynccl_explains_why_it_cannot_run_here():
    pynccl = get_registry().get("comm.backend", "pynccl")
    reasons = " | ".join(pynccl.not_supported_reasons(None))
    assert "CUDA" in reasons and "world size is 1" in reasons
    with pytest.raises(ValueError, match=r"pynccl.*needs a CUDA GPU"):
        init_communicator("pynccl")


def test_nccl_library_env_var_is_honoured(monkeypatch):
    monkeypatch.setenv("INFERCORE_NCCL_LIBRARY", "/nonexistent/libnccl.so.2")
    path, why = find_nccl_library()
    assert path is None and "/nonexistent/libnccl.so.2 does not exist" in why
    pynccl = get_registry().get("comm.backend", "pynccl")
    get_registry().clear_caches()
    try:
        assert any("does not exist" in r for r in pynccl.not_supported_reasons(None))
    finally:
        monkeypatch.delenv("INFERCORE_NCCL_LIBRARY")
        get_registry().clear_caches()


@pytest.mark.skipif(find_nccl_library()[0] is None, reason="no libnccl here")
def test_nccl_bindings_load_and_make_a_unique_id():
    lib = NcclLibrary.load()
    major, minor, _ = lib.version()
    assert (major, minor) >= (2, 10)
    uid = lib.unique_id()
    assert len(bytes(uid.internal)) == 128 and any(bytes(uid.internal))
    assert "invalid argument" in lib.error_string(4)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="timeout_s"):
        CommConfig(timeout_s=0)
    with pytest.raises(ConfigError, match="colour"):
        init_communicator("torch", colour="blue")


def test_config_takes_a_torch_device_as_its_string():
    assert CommConfig(device=torch.device("cuda", 1)).device == "cuda:1"
    assert CommConfig(device="cpu").device == "cpu"
    with pytest.raises(ConfigError, match="device"):
        CommConfig(device=3)


def test_disable_nvls_sets_both_variables(monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    monkeypatch.delenv("TORCH_SYMM_MEM_DISABLE_MULTICAST", raising=False)
    disable_nvls()
    assert os.environ["NCCL_NVLS_ENABLE"] == "0"
    assert os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"


def test_handle_finalizes_once():
    calls = []
    h = Handle(lambda: calls.append("wait"), lambda: calls.append("final") or 42)
    assert not h.is_completed()
    assert h.wait() == 42 and h.wait() == 42
    assert calls == ["wait", "final"] and h.is_completed()


def test_dense_sharder_copies_rows_and_columns():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    rows = shard_linear(lin, 0, [(0, 2), (4, 5)])
    assert torch.equal(rows.weight, torch.cat([lin.weight[:2], lin.weight[4:]]))
    assert torch.equal(rows.bias, torch.cat([lin.bias[:2], lin.bias[4:]]))
    assert rows.weight.untyped_storage().data_ptr() != lin.weight.untyped_storage().data_ptr()
    cols = shard_linear(lin, 1, [(3, 6)])
    assert cols.bias is None and (cols.in_features, cols.out_features) == (3, 5)
    assert torch.equal(cols.weight, lin.weight[:, 3:])


class _PackedLinear(nn.Module):
    """A stand-in quantized linear: int8 weight, per-row scale, columns in groups of 4."""

    group = 4

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.qweight, self.scale = qweight, scale
        self.out_features, self.in_features = qweight.shape

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> _PackedLinear:
        scale = weight.abs().amax(1, keepdim=True) / 127
        return cls(torch.round(weight / scale).to(torch.int8), scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.qweight.float() * self.scale).t()


@register_linear_sharder(_PackedLinear)
def _shard_packed(module: _PackedLinear, dim: int, ranges) -> _PackedLinear:
    for a, b in ranges:
        if dim == 1 and (a % module.group or b % module.group):
            raise ValueError(f"columns {a}:{b} do not start and end on a group of {module.group}")
    q, scale = module.qweight, module.scale
    if dim == 1:
        return _PackedLinear(torch.cat([q[:, a:b] for a, b in ranges], 1), scale)
    return _PackedLinear(torch.cat([q[a:b] for a, b in ranges]),
                         torch.cat([scale[a:b] for a, b in ranges]))


def test_registered_sharder_makes_a_new_linear_type_shardable():
    torch.manual_seed(1)
    full = _PackedLinear.quantize(torch.randn(3, 16))
    x = torch.randn(2, 16)
    parts = []
    for rank in range(2):
        comm = SimpleNamespace(rank=rank, world_size=2)
        layer = RowParallelLinear.from_linear(full, comm)
        assert isinstance(layer.linear, _PackedLinear) and layer.linear.in_features == 8
        parts.append(layer.linear(x[:, 8 * rank : 8 * rank + 8]))
    torch.testing.assert_close(parts[0] + parts[1], full(x))
    with pytest.raises(ValueError, match="group of 4"):
        RowParallelLinear.from_linear(_PackedLinear.quantize(torch.randn(3, 12)), SimpleNamespace(
            rank=0, world_size=2))


def test_unknown_linear_type_names_the_registration_hook():
    with pytest.raises(TypeError, match=r"register_linear_sharder\(Bilinear\)"):
        shard_linear(nn.Bilinear(2, 2, 2), 0, [(0, 1)])


def test_kv_heads_split_replicate_or_refuse():
    assert [kv_head_rows(8, 2, 4, r) for r in range(4)] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert [kv_head_rows(2, 3, 4, r) for r in range(4)] == [(0, 3), (0, 3), (3, 6), (3, 6)]
    assert local_kv_heads(2, 8) == 1 and local_kv_heads(8, 2) == 4
    with pytest.raises(ValueError, match="num_key_value_heads = 3"):
        local_kv_heads(3, 2)


def test_vocab_blocks_cover_the_vocabulary_once():
    assert [vocab_range(5, 4, r) for r in range(4)] == [(0, 2, 2), (2, 4, 2), (4, 5, 2),
                                                        (5, 5, 2)]
    spans = [vocab_range(101, 3, r)[:2] for r in range(3)]
    assert spans == [(0, 34), (34, 68), (68, 101)]


def test_apply_tensor_parallel_on_one_rank_and_bad_models():
    model = nn.Sequential(nn.Linear(4, 4))
    one = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))
    assert apply_tensor_parallel(model, one) is model
    assert isinstance(model[0], nn.Linear)
    two = SimpleNamespace(rank=0, world_size=2, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="found no attention module"):
        apply_tensor_parallel(model, two)
    gpu = SimpleNamespace(rank=0, world_size=2, device=torch.device("cuda", 0))
    with pytest.raises(ValueError, match="move the model first"):
        apply_tensor_parallel(model, gpu)


def test_launcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="command is empty"):
        launch([], 2)
    with pytest.raises(ValueError, match="nprocs"):
        launch(["x.py"], 0)
    with pytest.raises(SystemExit):
        main(["-n", "2"])


def test_group_created_here_is_destroyed_at_exit(tmp_path):
    """The default group ``ensure_process_group`` made is gone before the interpreter
    shuts down (a checker registered first runs last), and one the program destroyed
    itself is left alone."""
    import subprocess
    import sys

    script = tmp_path / "exit_check.py"
    script.write_text(
        "import atexit, sys\n"
        "import torch.distributed as dist\n"
        "from infercore.comm.env import ensure_process_group\n"
        "atexit.register(lambda: print('initialized at exit:', dist.is_initialized()))\n"
        "assert ensure_process_group()\n"
        "if sys.argv[1] == 'own':\n"
        "    dist.destroy_process_group()\n"
        "    print('destroyed by the program')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    for mode in ("atexit", "own"):
        run = subprocess.run([sys.executable, str(script), mode], env=env, text=True,
                             capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "initialized at exit: False" in run.stdout, run.stdout
