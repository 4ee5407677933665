"""Built-in plugin: the ``comm.backend`` component family and its backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    from infercore.comm.interface import Communicator

    registry.add_family(
        Family(
            "comm.backend",
            "component",
            "collectives over a process group: infercore.comm.init_communicator",
            protocol=Communicator,
        )
    )
    from infercore.comm.torch_backend import TorchCommBackend

    registry.register(TorchCommBackend)
    from infercore.comm.pynccl.backend import PyNcclCommBackend

    registry.register(PyNcclCommBackend)
