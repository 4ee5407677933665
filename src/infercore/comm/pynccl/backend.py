"""Registry entry of the ``pynccl`` communicator backend."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from infercore.comm.config import PyNcclConfig
from infercore.comm.pynccl.library import find_nccl_library
from infercore.comm.torch_backend import resolve_group
from infercore.registry import ComponentBackend

__all__ = ["PyNcclCommBackend"]


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


class PyNcclCommBackend(ComponentBackend):
    """Builds a :class:`~infercore.comm.pynccl.PyNcclCommunicator` (CUDA, 2+ ranks)."""

    family: ClassVar[str] = "comm.backend"
    name: ClassVar[str] = "pynccl"
    priority: ClassVar[int] = 5
    config_class: ClassVar[type | None] = PyNcclConfig
    description: ClassVar[str] = "libnccl through ctypes; CUDA-graph capturable, any stream"

    def _compute_environment_reasons(self) -> list[str]:
        reasons = super()._compute_environment_reasons()
        if not dist.is_available():
            reasons.append("this torch build has no torch.distributed")
        if not torch.cuda.is_available():
            reasons.append("needs a CUDA GPU; none is visible")
        path, why = find_nccl_library()
        if path is None:
            reasons.append(why)
        return reasons

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        world = _world_size()
        if world < 2:
            reasons.append(
                f"world size is {world}: NCCL communicators here are for 2+ ranks "
                "(launch with `python -m infercore.comm.launch -n N` or torchrun)"
            )
        return reasons

    def build(self, config: PyNcclConfig) -> Any:
        from infercore.comm.pynccl.communicator import PyNcclCommunicator

        group, device = resolve_group(config)
        if device.type != "cuda" and config.device is None:
            # The group has no NCCL backend: use the current CUDA device.
            device = torch.device("cuda", torch.cuda.current_device())
        if dist.get_world_size(group) < 2:
            raise ValueError("the pynccl backend needs a group of 2+ ranks; this one has 1")
        return PyNcclCommunicator(group, device=device, library=config.library,
                                  timeout_s=config.timeout_s, check_shapes=config.check_shapes)
