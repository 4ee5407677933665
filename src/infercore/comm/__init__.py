"""Collectives and tensor parallelism.

>>> # launched as: python -m infercore.comm.launch -n 2 script.py   (or torchrun)
>>> from infercore.comm import init_communicator, apply_tensor_parallel
>>> comm = init_communicator()                # backend "auto": torch; or "pynccl"
>>> x = torch.randn(1024, device=comm.device)
>>> comm.all_reduce(x)                        # in place, returns x
>>> y = comm.all_gather(x)                    # new tensor [2048]
>>> h = comm.all_reduce(x, async_op=True)     # overlap compute, then
>>> h.wait()

The component family is ``comm.backend`` (``infercore.registry.create("comm.backend",
name, config)``); backends: ``torch`` (torch.distributed: NCCL on CUDA, gloo on CPU)
and ``pynccl`` (libnccl through ctypes; CUDA, 2+ ranks). Every NCCL communicator is
created with ``NCCL_NVLS_ENABLE=0`` (NVLink multicast off).
"""

from __future__ import annotations

from typing import Any

from infercore.comm.config import CommConfig, PyNcclConfig
from infercore.comm.interface import (
    REDUCE_OPS,
    CollectiveTimeoutError,
    CommError,
    Communicator,
    Handle,
)
from infercore.comm.tp import (
    ColumnParallelLinear,
    LinearSharder,
    MergedColumnParallelLinear,
    ParallelLMHead,
    QKVParallelLinear,
    RowParallelLinear,
    TensorParallelInfo,
    VocabParallelEmbedding,
    apply_tensor_parallel,
    register_linear_sharder,
    shard_linear,
)

__all__ = [
    "REDUCE_OPS",
    "CollectiveTimeoutError",
    "ColumnParallelLinear",
    "CommConfig",
    "CommError",
    "Communicator",
    "Handle",
    "LinearSharder",
    "MergedColumnParallelLinear",
    "ParallelLMHead",
    "PyNcclConfig",
    "QKVParallelLinear",
    "RowParallelLinear",
    "TensorParallelInfo",
    "VocabParallelEmbedding",
    "apply_tensor_parallel",
    "init_communicator",
    "register_linear_sharder",
    "shard_linear",
]


def init_communicator(
    backend: str = "auto",
    group: Any = None,
    *,
    timeout_s: float | None = None,
    check_shapes: bool = False,
    device: str | None = None,
    **options: Any,
) -> Communicator:
    """A communicator over a ``torch.distributed`` group (collective: every rank calls it).

    Without an initialized process group, creates the default one from the ``torchrun``
    environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``; on CUDA it binds ``cuda:LOCAL_RANK`` and uses
    ``cpu:gloo,cuda:nccl``), or a one-process group when ``WORLD_SIZE`` is unset.

    Parameters
    ----------
    backend : str
        ``"auto"`` (registry dispatch: ``torch`` first), ``"torch"`` or ``"pynccl"``.
    group : torch.distributed.ProcessGroup, optional
        The group; default the world.
    timeout_s : float, optional
        Seconds a collective waits for missing peers before raising
        :class:`CollectiveTimeoutError` (for a group created here; default 600).
    check_shapes : bool
        Verify before each collective that all ranks pass the same dtype and shape (an
        extra small collective and a host sync per call; for debugging).
    device : str, optional
        Device of the tensors; default the current CUDA device with NCCL, else CPU.
    **options
        Backend-specific config fields (``library=`` for ``pynccl``).

    Returns
    -------
    Communicator
        With ``rank``, ``world_size``, ``device`` and the collectives.

    Raises
    ------
    ValueError
        The named backend cannot run here; the message lists its reasons (no CUDA, no
        libnccl, world size 1).
    """
    from infercore.registry import create

    config = {"group": group, "timeout_s": timeout_s, "check_shapes": check_shapes,
              "device": device, **options}
    return create("comm.backend", backend, config)
