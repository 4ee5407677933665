"""Families, backends and dispatch.

Every op family (``norm.rms``, ``attention.paged``, ...) and component family
(``cache.allocator``, ``scheduler``, ...) has an entry here with a list of backends.
A backend states what it supports as data (devices, dtypes, minimum compute
capability, required packages) and may add input-dependent reasons by extending
:meth:`Backend.not_supported_reasons`. Dispatch picks, in this order:

1. the ``backend=`` argument of the call, when it is not ``"auto"``;
2. a backend forced for the family by :func:`use_backend` (innermost block wins);
3. a backend forced by the environment, ``INFERCORE_BACKEND_<FAMILY>`` with dots
   as underscores (``INFERCORE_BACKEND_NORM_RMS=reference``);
4. the choice of an ``infercore_select_backend`` plugin hook;
5. the tuned choice for the inputs' key in the tuning cache (:mod:`infercore.tune`): a
   backend and, for backends that take one, its launch configuration;
6. the first backend, by descending priority, that has no reasons against the inputs.

A backend chosen by 1-3 that does not fit raises ``ValueError`` with its reasons; when
nothing fits in 6, :class:`NoBackendError` lists every backend and its reasons.

Built-in and third-party backends enter through the same plugin hook
(``infercore_register``); the registry loads plugins lazily on first use.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from infercore import backend as backend_module
from infercore.backend import Backend, ComponentBackend, compute_capability, triton_interpret

__all__ = [
    "Backend",
    "ComponentBackend",
    "Family",
    "NoBackendError",
    "Registry",
    "backends",
    "compute_capability",
    "create",
    "describe_inputs",
    "families",
    "get_registry",
    "record_resolutions",
    "resolve",
    "triton_interpret",
    "use_backend",
]

log = logging.getLogger(__name__)

#: The lists :func:`record_resolutions` blocks collect resolved backends in.
_RECORDS: contextvars.ContextVar[tuple[list[Backend], ...]] = contextvars.ContextVar(
    "infercore_resolution_records", default=()
)
_NOTHING_FORCED: Mapping[str, str] = types.MappingProxyType({})
_FORCED: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "infercore_forced_backends", default=_NOTHING_FORCED
)


class NoBackendError(RuntimeError):
    """No backend of a family supports the given inputs.

    ``reasons`` maps each backend name to the list of reasons it declined.
    """

    def __init__(self, family: str, inputs: Any, reasons: dict[str, list[str]]):
        self.family = family
        self.reasons = reasons
        lines = [f"no backend of {family!r} supports these inputs ({describe_inputs(inputs)}):"]
        if not reasons:
            lines.append("  (the family has no backends registered)")
        for name, why in reasons.items():
            lines.append(f"  - {name}: " + "; ".join(why))
        super().__init__("\n".join(lines))


def describe_inputs(inputs: Any) -> str:
    """A one-line summary of a dataclass of inputs: tensors as ``dtype[shape]@device``."""
    if inputs is None:
        return "no inputs"
    if not dataclasses.is_dataclass(inputs):
        return repr(inputs)
    parts = []
    for f in dataclasses.fields(inputs):
        value = getattr(inputs, f.name)
        if isinstance(value, torch.Tensor):
            dtype = str(value.dtype).removeprefix("torch.")
            value = f"{dtype}{list(value.shape)}@{value.device}"
        elif value is None:
            continue
        parts.append(f"{f.name}={value}")
    return ", ".join(parts)


def env_var(family: str) -> str:
    """The environment variable that forces a backend for ``family``."""
    return "INFERCORE_BACKEND_" + family.upper().replace(".", "_")


@dataclass(frozen=True)
class Family:
    """A family of interchangeable implementations.

    ``kind`` is ``"op"`` (a kernel behind a public function) or ``"component"``
    (an object built by :func:`create`); ``protocol`` is the interface every
    component backend's product satisfies.
    """

    name: str
    kind: str = "op"
    doc: str = ""
    protocol: type | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("op", "component"):
            raise ValueError(f"Family.kind must be 'op' or 'component', got {self.kind!r}")

    @property
    def env_var(self) -> str:
        return env_var(self.name)


class Registry:
    """Holds families and backends. The process-wide instance is :func:`get_registry`."""

    def __init__(self, *, autoload: bool = True) -> None:
        self._families: dict[str, Family] = {}
        self._backends: dict[str, list[Backend]] = {}
        self._family_owner: dict[str, str | None] = {}
        self._autoload = autoload
        self._loaded = not autoload
        self.current_plugin: str | None = None

    # -- registration -------------------------------------------------------------------------

    def add_family(self, family: Family) -> Family:
        """Declare a family. Declaring the same family twice is a no-op when it is equal."""
        existing = self._families.get(family.name)
        if existing is not None:
            if existing != family:
                raise ValueError(f"family {family.name!r} is already declared differently")
            return existing
        self._families[family.name] = family
        self._backends[family.name] = []
        self._family_owner[family.name] = self.current_plugin
        return family

    def register(self, backend: Backend | type[Backend]) -> Backend:
        """Add a backend (an instance, or a class that is instantiated) to its family."""
        if isinstance(backend, type):
            backend = backend()
        family = backend.family
        if family not in self._families:
            known = ", ".join(sorted(self._families)) or "none"
            raise ValueError(
                f"backend {backend.name!r}: unknown family {family!r} (known: {known})"
            )
        entries = self._backends[family]
        for other in entries:
            if other.name == backend.name:
                raise ValueError(
                    f"backend {backend.name!r} of {family!r} is already registered "
                    f"by plugin {other.plugin!r}"
                )
        backend.plugin = self.current_plugin
        entries.append(backend)
        # Stable sort: equal priorities keep registration order.
        entries.sort(key=lambda b: -b.priority)
        return backend

    def remove_plugin(self, plugin: str) -> None:
        """Drop every backend and family a plugin registered (used when it fails)."""
        for name in list(self._backends):
            self._backends[name] = [b for b in self._backends[name] if b.plugin != plugin]
        for name, owner in list(self._family_owner.items()):
            if owner == plugin and not self._backends[name]:
                del self._families[name], self._backends[name], self._family_owner[name]

    # -- queries ------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            from infercore import plugins

            plugins.load(self)

    def families(self) -> dict[str, Family]:
        self._ensure_loaded()
        return dict(self._families)

    def family(self, name: str) -> Family:
        self._ensure_loaded()
        try:
            return self._families[name]
        except KeyError:
            known = ", ".join(sorted(self._families))
            raise ValueError(f"unknown family {name!r}; known families: {known}") from None

    def backends(self, family: str) -> list[Backend]:
        """Backends of ``family`` in dispatch order (highest priority first)."""
        self.family(family)
        return list(self._backends[family])

    def get(self, family: str, name: str) -> Backend:
        for b in self.backends(family):
            if b.name == name:
                return b
        names = ", ".join(repr(b.name) for b in self._backends[family]) or "none"
        raise ValueError(f"backend={name!r} is not a backend of {family!r}; registered: {names}")

    # -- dispatch -----------------------------------------------------------------------------

    def _named(self, family: str, name: str, inputs: Any, source: str) -> Backend:
        chosen = self.get(family, name)
        reasons = chosen.not_supported_reasons(inputs)
        if reasons:
            raise ValueError(
                f"{source} selects backend {name!r} of {family!r}, which cannot run these "
                f"inputs ({describe_inputs(inputs)}): " + "; ".join(reasons)
            )
        return chosen

    def resolve(self, family: str, inputs: Any, backend: str = "auto") -> Backend:
        """The backend that runs ``inputs``; see the module docstring for the order.

        The result is callable: keep it to skip dispatch on a hot path.
        """
        chosen = self._resolve(family, inputs, backend)
        for record in _RECORDS.get():
            record.append(chosen)
        return chosen

    def _resolve(self, family: str, inputs: Any, backend: str) -> Backend:
        self._ensure_loaded()
        if backend != "auto":
            return self._named(family, backend, inputs, f"backend={backend!r}")
        forced = _FORCED.get().get(family)
        if forced is not None:
            return self._named(family, forced, inputs, f"use_backend({family!r}, {forced!r})")
        fam = self.family(family)
        forced = os.environ.get(fam.env_var)
        if forced:
            return self._named(family, forced, inputs, f"{fam.env_var}={forced}")

        from infercore import plugins

        picked = plugins.select_backend(family, inputs)
        if picked is not None:
            for b in self._backends[family]:
                if b.name == picked:
                    reasons = b.not_supported_reasons(inputs)
                    if not reasons:
                        return b
                    log.warning(
                        "plugin policy picked %s:%s, which cannot run the inputs (%s); "
                        "using the default order",
                        family, picked, "; ".join(reasons),
                    )
                    break
            else:
                log.warning("plugin policy picked unknown backend %r of %s", picked, family)

        from infercore.tune import dispatch as tuning

        tuned = tuning.tuned_backend(self, family, inputs)
        if tuned is not None:
            return tuned

        all_reasons: dict[str, list[str]] = {}
        for b in self._backends[family]:
            reasons = b.not_supported_reasons(inputs)
            if not reasons:
                if all_reasons and log.isEnabledFor(logging.DEBUG):
                    log.debug("%s: using %r; passed over: %s", family, b.name, all_reasons)
                return b
            all_reasons[b.name] = reasons
        raise NoBackendError(family, inputs, all_reasons)

    def create(self, family: str, name: str = "auto", config: Any = None) -> Any:
        """Build a component of ``family`` with backend ``name`` from ``config``.

        ``config`` may be an instance of the backend's ``config_class``, a dict of its
        fields, or ``None`` for its defaults.
        """
        fam = self.family(family)
        if fam.kind != "component":
            raise ValueError(f"create() builds components; {family!r} is an op family")
        chosen = self.resolve(family, None, name)
        assert isinstance(chosen, ComponentBackend), chosen
        cls = chosen.config_class
        if cls is not None:
            if config is None:
                config = cls()
            elif isinstance(config, Mapping):
                config = cls.from_dict(dict(config)) if hasattr(cls, "from_dict") else cls(**config)
            elif not isinstance(config, cls):
                raise TypeError(
                    f"config for {family}:{chosen.name} must be a {cls.__name__} or a dict, "
                    f"got {type(config).__name__}"
                )
        return chosen.build(config)

    def clear_caches(self) -> None:
        """Forget cached environment checks (after changing the environment)."""
        for entries in self._backends.values():
            for b in entries:
                b._env_reasons = b._devices = None
        backend_module._compute_capability.cache_clear()


_REGISTRY = Registry()


def get_registry() -> Registry:
    """The process-wide registry (plugins load on its first use)."""
    return _REGISTRY


def families() -> dict[str, Family]:
    return _REGISTRY.families()


def backends(family: str) -> list[Backend]:
    return _REGISTRY.backends(family)


def resolve(family: str, inputs: Any, backend: str = "auto") -> Backend:
    return _REGISTRY.resolve(family, inputs, backend)


def create(family: str, name: str = "auto", config: Any = None) -> Any:
    """Build a component; see :meth:`Registry.create`."""
    return _REGISTRY.create(family, name, config)


@contextlib.contextmanager
def use_backend(
    family: str | Mapping[str, str], name: str | None = None
) -> Iterator[None]:
    """Force backends for a block of code.

    Examples
    --------
    >>> with use_backend("norm.rms", "reference"):
    ...     y = infercore.ops.rms_norm(x, w)
    >>> with use_backend({"norm.rms": "triton", "attention.paged": "reference"}):
    ...     ...
    """
    if isinstance(family, str):
        if name is None:
            raise TypeError("use_backend(family, name): name is required with a family string")
        mapping = {family: name}
    else:
        if name is not None:
            raise TypeError("use_backend(mapping): pass no name with a mapping")
        mapping = dict(family)
    for fam, backend_name in mapping.items():
        _REGISTRY.get(fam, backend_name)  # fail early on typos
    token = _FORCED.set({**_FORCED.get(), **mapping})
    try:
        yield
    finally:
        _FORCED.reset(token)


@contextlib.contextmanager
def record_resolutions() -> Iterator[list[Backend]]:
    """Collect every backend dispatch chooses inside the block, in order (repeats kept).

    A caller about to capture a CUDA graph runs the code once eagerly inside the block
    and checks :attr:`Backend.graph_safe` of what was chosen. Blocks nest: each sees the
    resolutions made while it is open.

    Examples
    --------
    >>> with record_resolutions() as used:
    ...     y = infercore.ops.rms_norm(x, w)
    >>> [f"{b.family}:{b.name}" for b in used if not b.graph_safe]
    []
    """
    record: list[Backend] = []
    token = _RECORDS.set((*_RECORDS.get(), record))
    try:
        yield record
    finally:
        _RECORDS.reset(token)


def component_backend(
    family: str,
    name: str,
    factory: Callable[[Any], Any],
    *,
    config_class: type | None = None,
    priority: int = 0,
    description: str = "",
) -> ComponentBackend:
    """Make a :class:`ComponentBackend` from a factory ``factory(config) -> component``."""
    attrs = {
        "family": family,
        "name": name,
        "priority": priority,
        "config_class": config_class,
        "description": description,
        "build": lambda self, config: factory(config),
    }
    cls = type(f"{name.title().replace('_', '')}Component", (ComponentBackend,), attrs)
    return cls()
