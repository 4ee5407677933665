"""Configs of the ``comm.backend`` components."""

from __future__ import annotations

from typing import Any

import pydantic
import torch

from infercore.config import Config

__all__ = ["CommConfig", "PyNcclConfig"]


class CommConfig(Config):
    """What every communicator backend accepts.

    Attributes
    ----------
    group : torch.distributed.ProcessGroup or None
        The group to communicate over; ``None`` means the default group, created from
        the ``torchrun`` environment (or as a one-process group) when it does not exist.
    timeout_s : float or None
        Seconds a collective waits for its peers before it raises
        :class:`~infercore.comm.CollectiveTimeoutError`. Applies to the group that
        ``init_communicator`` creates; an existing group keeps the timeout it was created
        with, so passing both is an error. ``None``: 600 s.
    check_shapes : bool
        Before each collective, all-gather every rank's dtype, shape and arguments (16
        int64 per rank) and raise ``ValueError`` listing them when they disagree. Costs
        one extra small collective and a device-to-host copy per call (a host sync on
        CUDA); skipped during CUDA-graph capture. For debugging.
    device : str, torch.device or None
        Device of the tensors the communicator moves (``"cuda:1"``, ``"cpu"``; a
        ``torch.device`` is kept as its string); ``None`` picks the current CUDA device
        when the group runs NCCL, else the CPU.
    """

    model_config = pydantic.ConfigDict(
        extra="forbid", validate_assignment=True, arbitrary_types_allowed=True
    )

    group: Any = None
    timeout_s: float | None = pydantic.Field(default=None, gt=0)
    check_shapes: bool = False
    device: str | None = None

    @pydantic.field_validator("device", mode="before")
    @classmethod
    def _device_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, torch.device) else value


class PyNcclConfig(CommConfig):
    """:class:`CommConfig` plus the NCCL library to load.

    Attributes
    ----------
    library : str or None
        Path of ``libnccl.so``; ``None`` uses ``INFERCORE_NCCL_LIBRARY`` or the library
        torch uses (see :func:`infercore.comm.pynccl.find_nccl_library`).
    """

    library: str | None = None
