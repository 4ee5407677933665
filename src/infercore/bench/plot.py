"""Roofline picture of ``infercore bench`` results (needs matplotlib: ``infercore[plot]``).

Cases with both bytes and FLOPs sit on a roofline (arithmetic intensity vs TFLOP/s under
the measured copy-bandwidth and matmul ceilings); cases with one of them are shown as
the fraction of their ceiling. ``python -m infercore.bench.plot RESULTS.json OUT.png``
draws it from a ``bench --json`` file (e.g. on a machine other than the GPU's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["roofline", "roofline_points"]


def roofline_points(data: dict[str, Any]) -> tuple[list[tuple], list[tuple]]:
    """``(roofline, fractions)`` from a ``bench --json`` dict: roofline entries are
    ``(label, flops_per_byte, tflops)``, fractions ``(label, fraction_of_ceiling)``."""
    roof, frac = [], []
    for r in data["results"]:
        if r.get("error") or not r.get("ms") or r["ms"] != r["ms"]:
            continue
        label = f"{r['suite']}: {r['case']} [{r['impl']}]"
        if r.get("gbps") and r.get("tflops"):
            roof.append((label, r["tflops"] * 1e3 / r["gbps"], r["tflops"]))
        elif r.get("fraction_of_ceiling"):
            frac.append((label, r["fraction_of_ceiling"]))
    return roof, frac


def roofline(data: dict[str, Any], path: str | Path) -> None:
    """Write the roofline picture of ``data`` (a ``bench --json`` dict) to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'infercore[plot]' (or draw it "
                           "later: python -m infercore.bench.plot RESULTS.json OUT.png)") from None
    roof, frac = roofline_points(data)
    ceil = data["ceilings"]
    bw_tbs, peak = ceil["copy_gbps"] / 1e3, ceil["matmul_tflops"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(16, max(6, 0.22 * len(frac) + 2)))
    xs = [10 ** (i / 20) for i in range(-40, 100)]
    ax.plot(xs, [min(peak, bw_tbs * x) for x in xs], "k-", label="measured ceiling")
    for label, x, y in roof:
        ax.scatter([x], [y], s=14)
        ax.annotate(label, (x, y), fontsize=5)
    ax.set(xscale="log", yscale="log", xlabel="FLOP / byte", ylabel="TFLOP/s",
           title=f"roofline on {ceil['device']}")
    ax.legend()
    bx.barh([f[0] for f in frac], [f[1] for f in frac])
    bx.set(xlabel="fraction of ceiling", title="cases with bytes or FLOPs only")
    bx.tick_params(axis="y", labelsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m infercore.bench.plot RESULTS.json OUT.png")
    roofline(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
