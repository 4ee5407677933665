"""Rich tables of tuning results and of the cache (used by ``infercore tune``)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from rich.table import Table

from infercore.tune.cache import TunedEntry
from infercore.tune.tuner import KeyResult

__all__ = ["cache_table", "results_table"]


def _ms(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.4f}"


def _config(config: dict | None) -> str:
    return "default" if config is None else json.dumps(config, separators=(",", ":"))


def results_table(results: list[KeyResult]) -> Table:
    """Per key: the untuned default, the winner, their times and the speedup."""
    devices = sorted({r.key.split("|", 1)[0] for r in results})
    table = Table(title=f"tuned vs default on {', '.join(devices)} (median ms; "
                        "speedup = default / tuned)")
    for col in ("family", "shape", "default", "ms", "tuned", "ms ", "speedup", "tried"):
        table.add_column(col, justify="right" if col.strip() in ("ms", "speedup") else "left")
    for r in results:
        _, family, shape = r.key.split("|", 2)
        best = r.best
        tried = f"{len(r.times)} ok"
        if r.rejected:
            tried += f", {len(r.rejected)} rejected"
        if r.skipped:
            tried += f", {r.skipped} over budget"
        table.add_row(
            family, f"{r.label}\n[dim]{shape}[/dim]", r.default.backend, _ms(r.default_ms),
            "[red]none passed[/red]" if best is None else f"{best.backend} {_config(best.config)}",
            _ms(r.best_ms), f"{r.speedup:.2f}x" if r.speedup else "", tried,
        )
    return table


def cache_table(user: Mapping[str, TunedEntry], shipped: Mapping[str, TunedEntry],
                title: str) -> Table:
    """Every entry, the user's over the shipped ones, with where it comes from."""
    table = Table(title=title)
    for col in ("key", "backend", "config", "ms", "default", "source"):
        table.add_column(col)
    for key in sorted({**shipped, **user}):
        entry = user.get(key) or shipped[key]
        default = ""
        if entry.default_backend:
            default = f"{entry.default_backend} {_ms(entry.default_ms)}"
        table.add_row(key, entry.backend, _config(entry.config), _ms(entry.ms), default,
                      "cache" if key in user else "shipped")
    return table
