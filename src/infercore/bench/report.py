"""The combined results table of ``infercore bench`` (rich)."""

from __future__ import annotations

from rich.table import Table

from infercore.bench import Ceilings, Result

__all__ = ["results_table"]


def _rate(x: float | None) -> str:
    """Three significant digits below 100, whole numbers above."""
    if not x:
        return ""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def results_table(ceilings: Ceilings, results: list[Result], notes: list[str]) -> Table:
    """One row per (suite, case, implementation): time and how it was taken (eager calls
    or CUDA-graph replays), rate, fraction of the measured ceiling and the ratio to the
    case's peer (>1: faster than the peer)."""
    title = (f"infercore bench on {ceilings.device} (measured: copy "
             f"{_rate(ceilings.copy_gbps)} GB/s, matmul {_rate(ceilings.matmul_tflops)} TFLOP/s)")
    footer = [*ceilings.notes, *notes]
    table = Table(title=title, caption="\n".join(footer) or None, caption_justify="left")
    for col in ("suite", "case", "impl", "peer", "ms", "timing", "GB/s", "TFLOP/s",
                "of ceiling", "vs peer"):
        text = col in ("suite", "case", "impl", "peer", "timing")
        table.add_column(col, justify="left" if text else "right", no_wrap=col == "case")
    last = None
    for r in results:
        head = (r.suite, r.case) if (r.suite, r.case) != last else ("", "")
        last = (r.suite, r.case)
        if r.error:
            table.add_row(*head, r.impl, r.peer or "", "[red]error[/red]", "", r.error[:60],
                          "", "", "")
            continue
        table.add_row(
            *head, r.impl, r.peer or "", f"{r.ms:.4f}", r.timing or "",
            _rate(r.gbps), _rate(r.tflops),
            f"{r.fraction_of_ceiling:.1%}" if r.fraction_of_ceiling else "",
            f"{r.vs_peer:.2f}x" if r.vs_peer and r.impl != r.peer else "",
        )
    return table
