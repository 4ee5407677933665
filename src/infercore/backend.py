"""The :class:`Backend` base class: one implementation of a family, its capabilities
declared as data, and the environment checks behind its reasons.

:mod:`infercore.registry` re-exports everything here; import from either.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, ClassVar

import torch

__all__ = ["Backend", "ComponentBackend", "compute_capability", "triton_interpret"]


@functools.cache
def _compute_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def compute_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device, ``None`` for other devices. Cached per device."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _compute_capability(index)


def triton_interpret() -> bool:
    """Whether Triton kernels run in the interpreter (``TRITON_INTERPRET=1``), on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Backend:
    """One implementation of a family, with its capabilities declared as data.

    Subclasses set the class attributes and implement ``run`` (ops) or ``build``
    (components, see :class:`ComponentBackend`). Inputs are a family-specific
    dataclass; for op families it has ``device`` and ``dtype`` attributes.

    Attributes
    ----------
    family, name : str
        The family this backend serves and its name within it (``"triton"``).
    priority : int
        Higher runs first under ``backend="auto"``. Reference backends use 0.
    devices : tuple of str
        Device types it runs on (``"cpu"``, ``"cuda"``).
    dtypes : tuple of torch.dtype or None
        Input dtypes it accepts; ``None`` means any.
    min_compute_capability : (int, int) or None
        Lowest CUDA compute capability it needs.
    requires : tuple of str
        Importable modules it needs (``"triton"``, ``"cutlass_cppgen"``).
    tune_config_class : type or None
        For tunable backends: the launch configuration ``run(..., config=...)`` accepts,
        built from a stored dict as ``tune_config_class(**dict)``; see :meth:`tune_space`.
    graph_safe : bool
        Whether ``run`` may be captured in a CUDA graph: ``False`` for a backend that reads
        device values on the host (``.tolist()``) or makes shapes from them (boolean
        indexing). Callers that capture graphs check it (:func:`record_resolutions`).
    plugin : str or None
        Set by the registry: the plugin that registered it.
    """

    family: ClassVar[str]
    name: ClassVar[str]
    priority: ClassVar[int] = 0
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...] | None] = None
    min_compute_capability: ClassVar[tuple[int, int] | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    tune_config_class: ClassVar[type | None] = None
    graph_safe: ClassVar[bool] = True

    def __init__(self) -> None:
        self.plugin: str | None = None
        self._env_reasons: list[str] | None = None
        self._devices: tuple[str, ...] | None = None

    def supported_devices(self) -> tuple[str, ...]:
        """Device types usable now; a subclass may depend on the environment."""
        return self.devices

    def environment_reasons(self) -> list[str]:
        """Reasons, independent of inputs, why this backend cannot run here. Cached."""
        if self._env_reasons is None:
            self._devices = self.supported_devices()
            self._env_reasons = self._compute_environment_reasons()
        return list(self._env_reasons)

    def _compute_environment_reasons(self) -> list[str]:
        reasons = [
            f"needs the Python package providing {mod!r}, which is not installed"
            for mod in self.requires
            if importlib.util.find_spec(mod) is None
        ]
        devices = self.supported_devices()
        if devices and "cpu" not in devices and not torch.cuda.is_available():
            reasons.append(f"needs a {'/'.join(devices)} device; none is visible")
        return reasons

    def not_supported_reasons(self, inputs: Any) -> list[str]:
        """Every reason this backend cannot handle ``inputs``; empty when it can.

        Subclasses extend this (``reasons = super().not_supported_reasons(inputs)``)
        with input-dependent checks: head dims, alignment, layouts.
        """
        reasons = self.environment_reasons()  # also caches the usable device types
        device = getattr(inputs, "device", None)
        if device is not None:
            devices = self._devices
            if device.type not in devices:
                reasons.append(f"device {device.type!r} not supported (supports {devices})")
            elif self.min_compute_capability is not None and device.type == "cuda":
                cc = compute_capability(device)
                if cc < self.min_compute_capability:
                    need = "{}.{}".format(*self.min_compute_capability)
                    reasons.append(
                        f"needs compute capability >= {need}, device has {cc[0]}.{cc[1]}"
                    )
        dtype = getattr(inputs, "dtype", None)
        if dtype is not None and self.dtypes is not None and dtype not in self.dtypes:
            allowed = ", ".join(_dtype_name(d) for d in self.dtypes)
            reasons.append(f"dtype {_dtype_name(dtype)} not supported (supports {allowed})")
        return reasons

    def supports(self, inputs: Any) -> bool:
        return not self.not_supported_reasons(inputs)

    def tune_space(self, inputs: Any) -> list[dict[str, Any]]:
        """Candidate launch configurations for ``inputs`` (dicts of ``tune_config_class``
        fields) that the tuner times besides the default; empty: nothing to tune."""
        return []

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family}:{self.name} priority={self.priority}>"


class ComponentBackend(Backend):
    """A backend of a component family: ``build(config)`` returns the component.

    ``config_class`` (a pydantic model, optional) validates dicts passed to
    :func:`create`.
    """

    config_class: ClassVar[type | None] = None
    devices: ClassVar[tuple[str, ...]] = ()

    def build(self, config: Any) -> Any:
        raise NotImplementedError
