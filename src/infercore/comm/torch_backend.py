"""``comm.backend`` ``torch``: collectives through ``torch.distributed``.

NCCL for CUDA tensors, gloo for CPU tensors (whichever the group has for the device).
Timeouts: gloo raises after the group's timeout, reported as
:class:`~infercore.comm.CollectiveTimeoutError`; with NCCL, torch's watchdog aborts the
communicator after the timeout and ends the process with a message naming the
collective (``TORCH_NCCL_ASYNC_ERROR_HANDLING``), so a missing peer never hangs it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.distributed as dist

from infercore.comm.base import BaseCommunicator
from infercore.comm.config import CommConfig
from infercore.comm.env import backend_map, ensure_process_group
from infercore.registry import ComponentBackend

__all__ = ["TorchCommBackend", "TorchCommunicator", "resolve_group"]

_OPS = {
    "sum": dist.ReduceOp.SUM,
    "prod": dist.ReduceOp.PRODUCT,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
    "avg": dist.ReduceOp.AVG,
}
# Newer torch names the tensor forms ``*_single``; older releases only have the others.
_all_gather_tensor = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_tensor = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def resolve_group(config: CommConfig) -> tuple[dist.ProcessGroup, torch.device]:
    """The group and device a communicator built from ``config`` uses.

    Creates the default group (see :func:`~infercore.comm.env.ensure_process_group`) when
    no group exists; raises ``ValueError`` for a ``timeout_s`` that cannot apply.
    """
    created = ensure_process_group(config.timeout_s)
    if config.timeout_s is not None and not created:
        raise ValueError(
            f"timeout_s={config.timeout_s} applies only to a process group that "
            "init_communicator creates, but one exists already; pass timeout= to "
            "torch.distributed.init_process_group / new_group instead"
        )
    group = config.group if config.group is not None else dist.group.WORLD
    if config.device is not None:
        device = torch.device(config.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif backend_map(group).get("cuda") == "nccl" and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return group, device


class TorchCommunicator(BaseCommunicator):
    """:class:`~infercore.comm.Communicator` over a ``torch.distributed`` process group."""

    backend_name: ClassVar[str] = "torch"

    def __init__(
        self,
        group: dist.ProcessGroup,
        *,
        device: torch.device,
        timeout_s: float | None = None,
        check_shapes: bool = False,
    ) -> None:
        self.group = group
        backends = backend_map(group)
        self._backends = backends
        super().__init__(
            rank=dist.get_rank(group),
            world_size=dist.get_world_size(group),
            device=device,
            group_ranks=dist.get_process_group_ranks(group),
            timeout_s=timeout_s,
            check_shapes=check_shapes,
        )
        # gloo has no AVG on every torch version: it runs as a sum, divided afterwards.
        self.native_avg = backends.get(device.type) == "nccl"  # type: ignore[misc]

    def _check_device(self, t: torch.Tensor, op: str) -> None:
        if t.device.type not in self._backends:
            raise ValueError(
                f"{op}: t is on {t.device}, but the process group has no backend for "
                f"{t.device.type} (it has {self._backends})"
            )

    def _all_reduce(self, t: torch.Tensor, op: str, async_op: bool) -> Any:
        return dist.all_reduce(t, op=_OPS[op], group=self.group, async_op=async_op)

    def _all_gather(self, out: torch.Tensor, inp: torch.Tensor, async_op: bool) -> Any:
        return _all_gather_tensor(out, inp, group=self.group, async_op=async_op)

    def _reduce_scatter(
        self, out: torch.Tensor, inp: torch.Tensor, op: str, async_op: bool
    ) -> Any:
        return _reduce_scatter_tensor(out, inp, op=_OPS[op], group=self.group,
                                      async_op=async_op)

    def _broadcast(self, t: torch.Tensor, src: int, async_op: bool) -> Any:
        return dist.broadcast(t, group=self.group, group_src=src, async_op=async_op)

    def _all_to_all(
        self,
        out: torch.Tensor,
        inp: torch.Tensor,
        output_splits: list[int] | None,
        input_splits: list[int] | None,
        async_op: bool,
    ) -> Any:
        return dist.all_to_all_single(
            out, inp, output_split_sizes=output_splits, input_split_sizes=input_splits,
            group=self.group, async_op=async_op,
        )

    def _send(self, t: torch.Tensor, dst: int, async_op: bool) -> Any:
        if async_op:
            return dist.isend(t, group=self.group, group_dst=dst)
        dist.send(t, group=self.group, group_dst=dst)
        return None

    def _recv(self, t: torch.Tensor, src: int, async_op: bool) -> Any:
        if async_op:
            return dist.irecv(t, group=self.group, group_src=src)
        dist.recv(t, group=self.group, group_src=src)
        return None

    def _barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(group=self.group, device_ids=[self.device.index])
        else:
            dist.barrier(group=self.group)


class TorchCommBackend(ComponentBackend):
    """Builds a :class:`TorchCommunicator` from a :class:`~infercore.comm.CommConfig`."""

    family: ClassVar[str] = "comm.backend"
    name: ClassVar[str] = "torch"
    # Above pynccl: torch's NCCL path also captures in CUDA graphs and shares the group's
    # communicator; initial choice, to be tuned with benchmarks/comm_bandwidth.py.
    priority: ClassVar[int] = 10
    config_class: ClassVar[type | None] = CommConfig
    description: ClassVar[str] = "torch.distributed: NCCL on CUDA, gloo on CPU"

    def _compute_environment_reasons(self) -> list[str]:
        reasons = super()._compute_environment_reasons()
        if not dist.is_available():
            reasons.append("this torch build has no torch.distributed")
        return reasons

    def build(self, config: CommConfig) -> TorchCommunicator:
        group, device = resolve_group(config)
        return TorchCommunicator(group, device=device, timeout_s=config.timeout_s,
                                 check_shapes=config.check_shapes)
