"""Tuned choices at dispatch: the table is read once, then each call is a dict lookup.

:func:`tuned_backend` is step 5 of :meth:`infercore.registry.Registry.resolve`. Families
with no tuned entry cost one set lookup; others compute the key of the inputs and, when
the table holds it and the tuned backend accepts the inputs, return that backend, bound
to its tuned configuration when it has one. Any failure here is logged and dispatch
carries on in priority order: tuning never breaks a call.
"""

from __future__ import annotations

import logging
from typing import Any

from infercore.tune.cache import TunedEntry, TuningCache, shipped_entries
from infercore.tune.keys import tune_key

__all__ = ["TunedBackend", "TuningTable", "reset", "table", "tuned_backend"]

log = logging.getLogger(__name__)


class TunedBackend:
    """A backend bound to a tuned configuration: ``run`` passes ``config=`` along; every
    other attribute is the backend's."""

    __slots__ = ("backend", "config")

    def __init__(self, backend: Any, config: Any) -> None:
        self.backend = backend
        self.config = config

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.backend.run(*args, config=self.config, **kwargs)

    __call__ = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def __repr__(self) -> str:
        return f"<tuned {self.backend!r} config={self.config!r}>"


class TuningTable:
    """Tuned entries by key (shipped defaults overridden by the user's cache)."""

    def __init__(self, entries: dict[str, TunedEntry]) -> None:
        self.entries = entries
        self.families = {key.split("|")[1] for key in entries if key.count("|") >= 2}
        # key -> (backend object, what dispatch returns for it)
        self._bound: dict[str, tuple[Any, Any]] = {}

    def bound(self, key: str, backend: Any) -> Any:
        """``backend``, or a :class:`TunedBackend` with the entry's configuration (cached)."""
        hit = self._bound.get(key)
        if hit is not None and hit[0] is backend:
            return hit[1]
        config = self.entries[key].config
        cls = backend.tune_config_class
        result = backend if config is None or cls is None else TunedBackend(backend, cls(**config))
        self._bound[key] = (backend, result)
        return result


_TABLE: TuningTable | None = None


def table() -> TuningTable:
    """The process-wide table, read on first use."""
    global _TABLE
    if _TABLE is None:
        try:
            user = TuningCache().read()
        except Exception as exc:  # e.g. its warning raised under -W error
            log.warning("tuning cache not read: %s", exc)
            user = {}
        merged = {**shipped_entries(), **user}
        # An entry whose winner is the untuned default changes nothing: keeping it out of
        # the table spares its family the key computation on every dispatch.
        _TABLE = TuningTable({key: e for key, e in merged.items()
                              if e.config is not None or e.backend != e.default_backend})
    return _TABLE


def reset() -> None:
    """Forget the table: the next dispatch reads the files again (after tuning, or after
    changing ``INFERCORE_TUNING_CACHE``)."""
    global _TABLE
    _TABLE = None


def tuned_backend(registry: Any, family: str, inputs: Any) -> Any:
    """The tuned backend of ``family`` for ``inputs``, or ``None`` (not tuned, or it
    declines these inputs)."""
    try:
        tab = table()
        if family not in tab.families or inputs is None:
            return None
        key = tune_key(family, inputs)
        entry = tab.entries.get(key) if key is not None else None
        if entry is None:
            return None
        backend = next((b for b in registry.backends(family) if b.name == entry.backend), None)
        if backend is None:
            log.debug("%s: tuned backend %r is not registered; default order", key, entry.backend)
            return None
        reasons = backend.not_supported_reasons(inputs)
        if reasons:
            log.debug("%s: tuned backend %r declines (%s)", key, entry.backend,
                      "; ".join(reasons))
            return None
        return tab.bound(key, backend)
    except Exception as exc:  # a broken table or entry must not break the op
        log.warning("tuning cache lookup failed for %s (%s); default order", family, exc)
        return None
