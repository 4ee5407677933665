"""Plugin hooks and loading.

Backends enter the registry through plugins: the built-in ones listed in
:data:`DEFAULT_PLUGINS`, then the objects exposed under the ``infercore``
entry-point group by installed distributions::

    # pyproject.toml of a third-party package
    [project.entry-points.infercore]
    mykernels = "mykernels.infercore_plugin"

    # mykernels/infercore_plugin.py
    import infercore

    @infercore.hookimpl
    def infercore_register(registry):
        registry.register(MyFastRMSNorm)

Environment switches:

- ``INFERCORE_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugins (built-ins still load).
- ``INFERCORE_DISABLED_PLUGINS=a,b``: skip these plugins (entry-point names or built-in
  module names).

A plugin that fails to import, or raises in its hook, is dropped with a warning that
names it, its registrations are rolled back, and it is listed as ``failed`` by
``infercore list``; ``import infercore`` never fails because of a plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from infercore.registry import Registry

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginStatus",
    "hookimpl",
    "hookspec",
    "load",
    "plugin_manager",
    "register_plugin",
    "statuses",
]

log = logging.getLogger(__name__)

PROJECT = "infercore"
ENTRY_POINT_GROUP = "infercore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Built-in plugins: modules registering the library's own backends, loaded first.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "infercore.ops.norm.plugin",
    "infercore.ops.rope.plugin",
    "infercore.ops.activation.plugin",
    "infercore.comm.plugin",
    "infercore.ops.gemm.plugin",
    "infercore.ops.attention.plugin",
    "infercore.ops.quant.plugin",
    "infercore.spec.plugin",
    "infercore.ops.sampling.plugin",
    "infercore.cache.plugin",
    "infercore.sched.plugin",
)


class HookSpecs:
    """Every hook a plugin may implement."""

    @hookspec(historic=True)
    def infercore_register(self, registry: Registry) -> None:
        """Add families and backends to ``registry``.

        Fires once per plugin, when the registry is first used (or, for a plugin
        registered later, at its registration: the call is historic). Use
        ``registry.add_family(Family(...))`` and ``registry.register(BackendClass)``.
        """

    @hookspec(firstresult=True)
    def infercore_select_backend(self, family: str, inputs: Any) -> str | None:
        """Choose the backend for one dispatch of ``family`` under ``backend="auto"``.

        Fires on every automatic dispatch that no ``backend=`` argument, ``use_backend``
        block or ``INFERCORE_BACKEND_*`` variable decided. Return a backend name to pick
        it (it must support ``inputs``, else the default order applies and a warning is
        logged) or ``None`` to leave the choice to the next plugin and then to priority
        order. The first non-``None`` answer wins.
        """


@dataclass
class PluginStatus:
    """What happened to one plugin: ``loaded``, ``failed`` (with the error) or ``blocked``."""

    name: str
    status: str
    error: str | None = None
    builtin: bool = False


_pm: pluggy.PluginManager | None = None
_statuses: dict[str, PluginStatus] = {}
_has_select_hook = False


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide pluggy manager (created on first call)."""
    global _pm
    if _pm is None:
        _pm = pluggy.PluginManager(PROJECT)
        _pm.add_hookspecs(HookSpecs)
    return _pm


def _disabled() -> set[str]:
    raw = os.environ.get("INFERCORE_DISABLED_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get("INFERCORE_DISABLE_PLUGIN_AUTOLOAD", "0") not in ("", "0")


def _fail(name: str, exc: BaseException, builtin: bool) -> None:
    error = f"{type(exc).__name__}: {exc}"
    _statuses[name] = PluginStatus(name, "failed", error, builtin)
    warnings.warn(f"infercore plugin {name!r} failed and was skipped: {error}", stacklevel=3)
    log.debug("plugin %s failed", name, exc_info=exc)


def register_plugin(plugin: Any, name: str, registry: Registry | None = None) -> bool:
    """Register a plugin object (module or instance with hook implementations).

    Its ``infercore_register`` hook fires at once. On any error the plugin is rolled
    back, reported as failed, and ``False`` is returned.
    """
    from infercore.registry import get_registry

    registry = registry if registry is not None else get_registry()
    registry._ensure_loaded()
    return _register(plugin, name, registry, builtin=False)


def _register(plugin: Any, name: str, registry: Registry, *, builtin: bool) -> bool:
    global _has_select_hook
    pm = plugin_manager()
    if name in _disabled():
        _statuses[name] = PluginStatus(
            name, "blocked", "listed in INFERCORE_DISABLED_PLUGINS", builtin
        )
        return False
    previous = registry.current_plugin
    registry.current_plugin = name
    try:
        pm.register(plugin, name=name)  # fires the historic infercore_register for it
        pm.check_pending()
    except Exception as exc:
        registry.remove_plugin(name)
        if pm.is_registered(plugin) or pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        _fail(name, exc, builtin)
        return False
    finally:
        registry.current_plugin = previous
    _statuses[name] = PluginStatus(name, "loaded", None, builtin)
    _has_select_hook = bool(pm.hook.infercore_select_backend.get_hookimpls())
    return True


def load(registry: Registry) -> None:
    """Load built-in and entry-point plugins into ``registry`` (called once, lazily)."""
    pm = plugin_manager()
    pm.hook.infercore_register.call_historic(kwargs={"registry": registry})
    for module_name in DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            _fail(module_name, exc, builtin=True)
            continue
        _register(module, module_name, registry, builtin=True)

    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for ep in sorted(eps, key=lambda e: e.name):
        if _autoload_disabled():
            _statuses[ep.name] = PluginStatus(
                ep.name, "blocked", "INFERCORE_DISABLE_PLUGIN_AUTOLOAD is set"
            )
            continue
        if ep.name in _disabled():
            _statuses[ep.name] = PluginStatus(
                ep.name, "blocked", "listed in INFERCORE_DISABLED_PLUGINS"
            )
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            _fail(ep.name, exc, builtin=False)
            continue
        _register(obj, ep.name, registry, builtin=False)


def select_backend(family: str, inputs: Any) -> str | None:
    """Ask ``infercore_select_backend`` hooks; ``None`` when there are none or all pass."""
    if not _has_select_hook:
        return None
    try:
        return plugin_manager().hook.infercore_select_backend(family=family, inputs=inputs)
    except Exception as exc:
        log.warning("infercore_select_backend raised %s: %s; using the default order",
                    type(exc).__name__, exc)
        return None


def statuses() -> list[PluginStatus]:
    """Every plugin seen so far, loaded, failed or blocked (loads plugins if needed)."""
    from infercore.registry import get_registry

    get_registry()._ensure_loaded()
    return list(_statuses.values())


def _reset() -> None:
    """Forget every plugin and start a fresh registry (for tests)."""
    global _pm, _has_select_hook
    from infercore import registry as registry_module

    _pm = None
    _has_select_hook = False
    _statuses.clear()
    registry_module._REGISTRY = registry_module.Registry()
