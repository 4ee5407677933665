"""The tuning cache: a versioned JSON file of tuned choices, safe for concurrent writers.

The file (``INFERCORE_TUNING_CACHE``, else ``~/.cache/infercore/tuning.json``) holds::

    {"schema": 1, "entries": {KEY: {"backend": ..., "config": {...} | null, "ms": ...,
                                    "default_backend": ..., "default_ms": ...}}}

Writers take an exclusive lock on ``<file>.lock``, merge their entries into what the
file holds then, and replace the file atomically (temporary file + ``os.replace``), so
readers never see a partial file and concurrent writers lose no entry. A file that does
not parse or has another schema version is ignored with a :class:`TuningCacheWarning`
and rewritten by the next save. Entries shipped with the package
(``infercore/tune/defaults/*.json``, same format) apply where the user's file has none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: atomic replace still holds; concurrent merges may race
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CACHE_ENV",
    "SCHEMA_VERSION",
    "TunedEntry",
    "TuningCache",
    "TuningCacheWarning",
    "default_path",
    "shipped_entries",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CACHE_ENV = "INFERCORE_TUNING_CACHE"
#: Set to ``0`` to ignore the tuning results shipped with the package (untuned defaults).
SHIPPED_ENV = "INFERCORE_TUNING_SHIPPED"


class TuningCacheWarning(UserWarning):
    """A tuning cache file was unreadable or of another schema; it is ignored."""


@dataclass
class TunedEntry:
    """The winner for one key: backend name, its configuration (``None``: its built-in
    default) and median milliseconds; ``default_*`` is what dispatch ran before tuning."""

    backend: str
    config: dict[str, Any] | None
    ms: float
    default_backend: str | None = None
    default_ms: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> TunedEntry:
        if not isinstance(data, dict) or not isinstance(data.get("backend"), str):
            raise ValueError(f"entry must be an object with a 'backend' string, got {data!r}")
        if data.get("config") is not None and not isinstance(data["config"], dict):
            raise ValueError(f"entry config must be an object or null, got {data['config']!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"entry has unknown fields {sorted(unknown)}")
        return cls(**data)


def default_path() -> Path:
    """``$INFERCORE_TUNING_CACHE``, else ``~/.cache/infercore/tuning.json``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "infercore" / "tuning.json"


def parse(text: str, source: str) -> dict[str, TunedEntry]:
    """Entries of a cache file's text; ``ValueError`` naming ``source`` when it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{source}: schema {found!r}, expected {SCHEMA_VERSION}")
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise ValueError(f"{source}: 'entries' must be an object")
    try:
        return {str(k): TunedEntry.from_json(v) for k, v in entries.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


def dumps(entries: Mapping[str, TunedEntry]) -> str:
    body = {k: dataclasses.asdict(entries[k]) for k in sorted(entries)}
    return json.dumps({"schema": SCHEMA_VERSION, "entries": body}, indent=1) + "\n"


class TuningCache:
    """One cache file. ``path`` defaults to :func:`default_path` at construction."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def read(self) -> dict[str, TunedEntry]:
        """The file's entries; ``{}`` when it is missing, or unreadable (with a warning)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as err:
            self._warn(f"cannot read {self.path}: {err}")
            return {}
        try:
            return parse(text, str(self.path))
        except ValueError as err:
            self._warn(str(err))
            return {}

    @staticmethod
    def _warn(message: str) -> None:
        message = f"tuning cache ignored: {message}; it is rewritten by the next save"
        log.warning("%s", message)
        warnings.warn(message, TuningCacheWarning, stacklevel=3)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, entries: Mapping[str, TunedEntry]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                   dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(dumps(entries))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def update(self, entries: Mapping[str, TunedEntry]) -> dict[str, TunedEntry]:
        """Merge ``entries`` into the file (they win over stored ones); returns the result."""
        with self._locked():
            merged = {**self.read(), **entries}
            self._write(merged)
        return merged

    def clear(self) -> bool:
        """Delete the file; ``True`` when there was one."""
        with self._locked():
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
        return True


def shipped_entries() -> dict[str, TunedEntry]:
    """Entries shipped in ``infercore/tune/defaults/*.json`` (device-specific keys); none
    when ``$INFERCORE_TUNING_SHIPPED`` is ``0``."""
    entries: dict[str, TunedEntry] = {}
    if os.environ.get(SHIPPED_ENV, "1").strip() == "0":
        return entries
    folder = resources.files("infercore.tune") / "defaults"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".json"):
            continue
        try:
            entries.update(parse(item.read_text(), f"shipped {item.name}"))
        except ValueError as err:
            log.warning("shipped tuning defaults ignored: %s", err)
    return entries
