"""Process-group setup shared by the communicator backends.

:func:`ensure_process_group` creates the default ``torch.distributed`` group from the
``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) or, without it, a single-process group, and :func:`disable_nvls` keeps
NVLink multicast (NVLS) off for every NCCL communicator the process creates.

A group created here is destroyed when the interpreter exits (``atexit``), unless the
program has destroyed it already: gloo's worker threads still alive during interpreter
shutdown can abort the process (SIGABRT, "terminate called without an active exception")
after all of its work is done.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "NO_MULTICAST_ENV",
    "backend_map",
    "disable_nvls",
    "ensure_process_group",
]

log = logging.getLogger(__name__)

#: Timeout of the groups :func:`ensure_process_group` creates (torch's own default).
DEFAULT_TIMEOUT_S = 600.0

#: Variables set in this process and in launched children: NCCL must not use NVLink
#: multicast (NVLS), and torch's symmetric memory must not create multicast objects.
NO_MULTICAST_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def disable_nvls() -> None:
    """Set ``NCCL_NVLS_ENABLE=0`` and ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` in ``os.environ``.

    NCCL reads the variable when it creates a communicator, so this runs before any is
    created (every backend calls it first). A different value already set is replaced,
    with a warning.
    """
    for name, value in NO_MULTICAST_ENV.items():
        old = os.environ.get(name)
        if old is not None and old != value:
            log.warning("%s=%s replaced by %s: NVLink multicast stays off", name, old, value)
        os.environ[name] = value


def backend_map(group: dist.ProcessGroup | None) -> dict[str, str]:
    """Device type -> backend name of a group, e.g. ``{"cpu": "gloo", "cuda": "nccl"}``."""
    config = str(dist.get_backend_config(group))
    mapping = {}
    for part in config.split(","):
        device, _, backend = part.partition(":")
        if backend:
            mapping[device.strip()] = backend.strip()
        else:
            # A bare backend name serves every device type it supports.
            mapping.setdefault("cpu" if device.strip() == "gloo" else "cuda", device.strip())
    return mapping


def _require_env(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun or "
            "`python -m infercore.comm.launch -n N script.py`, which set RANK, WORLD_SIZE, "
            "LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
        )


def ensure_process_group(timeout_s: float | None = None) -> bool:
    """Initialize the default ``torch.distributed`` group unless it exists.

    From the ``torchrun`` variables when ``WORLD_SIZE`` is set: on a machine with CUDA
    the process binds ``cuda:LOCAL_RANK`` and the group is ``cpu:gloo,cuda:nccl``,
    otherwise ``gloo``. Without ``WORLD_SIZE`` a one-process group is created in memory.
    The group is destroyed at interpreter exit unless the program destroys it first.

    Parameters
    ----------
    timeout_s : float, optional
        Seconds a collective of the new group may wait for its peers
        (:data:`DEFAULT_TIMEOUT_S` when ``None``).

    Returns
    -------
    bool
        ``True`` when this call created the group.
    """
    if dist.is_initialized():
        return False
    disable_nvls()
    timeout = datetime.timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S)
    cuda = torch.cuda.is_available()
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    if os.environ.get("WORLD_SIZE"):
        _require_env("RANK", "MASTER_ADDR", "MASTER_PORT")
        if cuda:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group(backend, timeout=timeout)
    else:
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )
    atexit.register(_destroy_at_exit, dist.group.WORLD)
    log.debug("initialized process group %s: rank %d of %d", backend, dist.get_rank(),
              dist.get_world_size())
    return True


def _destroy_at_exit(group: dist.ProcessGroup) -> None:
    """Destroy the default group created by :func:`ensure_process_group` if it still is."""
    if dist.is_initialized() and dist.group.WORLD is group:
        dist.destroy_process_group()
