"""Configuration base: pydantic models that validate with readable messages.

Every config of the library (``KVCacheConfig``, ``SchedulerConfig``, ...) derives
from :class:`Config`: unknown fields are errors and assignments are validated.
Construction, ``from_dict`` and ``from_file`` (JSON or YAML) raise :class:`ConfigError`
(a ``ValueError``) with one line per bad field, its value, and the file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import pydantic

__all__ = ["Config", "ConfigError"]


class ConfigError(ValueError):
    """A config failed validation; the message names each bad field and what is allowed."""


def _format(cls: type, err: pydantic.ValidationError, source: str | None) -> str:
    where = f" (from {source})" if source else ""
    lines = [f"invalid {cls.__name__}{where}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(root)"
        got = f" (got {e['input']!r})" if "input" in e and e["type"] != "missing" else ""
        lines.append(f"  {field}: {e['msg']}{got}")
    return "\n".join(lines)


class Config(pydantic.BaseModel):
    """Base of every infercore config."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as err:
            raise ConfigError(_format(type(self), err, None)) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None) -> Self:
        if not isinstance(data, dict):
            raise ConfigError(
                f"{cls.__name__}{f' (from {source})' if source else ''} must be a mapping "
                f"of field names to values, got {type(data).__name__}"
            )
        try:
            return cls(**data)
        except ConfigError as err:
            if source is None:
                raise
            head = f"invalid {cls.__name__}"
            raise ConfigError(str(err).replace(head, f"{head} (from {source})", 1)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Load from ``.json``, ``.yaml`` or ``.yml``."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".yaml", ".yml"):
            raise ConfigError(f"{path}: config files must end in .json, .yaml or .yml")
        text = path.read_text()
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: not valid JSON: {err}") from None
        else:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML: {err}") from None
        return cls.from_dict(data if data is not None else {}, source=str(path))

    def to_file(self, path: str | Path) -> None:
        path = Path(path)
        data = self.model_dump(mode="json")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
