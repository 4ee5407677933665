"""The ``infercore`` command: inspect the registry and run benchmarks.

Run ``infercore --help`` or ``infercore COMMAND --help`` for the details.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="infercore",
    help="infercore: composable LLM-inference components. Inspect which kernels and "
    "components are available here, and benchmark them against their peers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _info() -> dict[str, Any]:
    import torch

    from infercore import __version__, plugins, registry

    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append({
                "index": i,
                "name": p.name,
                "compute_capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "multiprocessors": p.multi_processor_count,
            })
    return {
        "infercore": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            name: _version(name)
            for name in ("torch", "triton", "pydantic", "pluggy", "transformers", "nvidia-cutlass")
        },
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "devices": devices,
        "triton_interpret": registry.triton_interpret(),
        "plugins": [
            {"name": s.name, "status": s.status, "error": s.error, "builtin": s.builtin}
            for s in plugins.statuses()
        ],
    }


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Versions, devices (name, compute capability, memory), Triton interpreter mode, plugins."""
    data = _info()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(f"[bold]infercore[/bold] {data['infercore']}  (Python {data['python']})")
    for name, version in data["packages"].items():
        console.print(f"  {name:<15} {version or '[dim]not installed[/dim]'}")
    if data["devices"]:
        console.print(f"CUDA {data['cuda_version']}:")
        for d in data["devices"]:
            console.print(
                f"  cuda:{d['index']} {d['name']}  cc {d['compute_capability']}  "
                f"{d['memory_gib']} GiB  {d['multiprocessors']} SMs"
            )
    else:
        console.print("CUDA: no device visible")
    mode = "on (Triton kernels run on CPU tensors)" if data["triton_interpret"] else "off"
    console.print(f"TRITON_INTERPRET: {mode}")
    console.print("plugins:")
    for p in data["plugins"]:
        extra = f"  {p['error']}" if p["error"] else ""
        console.print(f"  {p['name']:<32} {p['status']}{extra}")


def _listing(family_filter: str | None) -> dict[str, Any]:
    from infercore import plugins, registry

    reg = registry.get_registry()
    fams = reg.families()
    if family_filter is not None and family_filter not in fams:
        raise typer.BadParameter(
            f"unknown family {family_filter!r}; known: {', '.join(sorted(fams))}",
            param_hint="--family",
        )
    out: dict[str, Any] = {"families": {}, "plugins": []}
    for name in sorted(fams):
        if family_filter is not None and name != family_filter:
            continue
        out["families"][name] = [
            {
                "name": b.name,
                "available": not (reasons := b.environment_reasons()),
                "reasons": reasons,
                "plugin": b.plugin,
                "graph_safe": b.graph_safe,
            }
            for b in reg.backends(name)
        ]
    out["plugins"] = [
        {"name": s.name, "status": s.status, "error": s.error} for s in plugins.statuses()
    ]
    return out


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    family: Annotated[str | None, typer.Option(help="Show one family only, e.g. norm.rms.")] = None,
) -> None:
    """Every family and backend: available here, or the reasons why not; which plugin added it.

    Backends are listed in dispatch order (highest priority first); "no CUDA graphs"
    marks those that cannot be captured in a CUDA graph (the engine then decodes
    eagerly). Plugins that failed to load are listed with their error. JSON schema:
    {"families": {FAMILY: [{"name", "available", "reasons", "plugin", "graph_safe"}]},
    "plugins": [{"name", "status", "error"}]}.
    """
    data = _listing(family)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title="infercore backends (dispatch order)")
    for col in ("family", "backend", "available", "plugin"):
        table.add_column(col)
    for fam, entries in data["families"].items():
        for i, b in enumerate(entries):
            reasons = "; ".join(b["reasons"])
            avail = "[green]yes[/green]" if b["available"] else f"[red]no[/red]: {reasons}"
            if not b["graph_safe"]:
                avail += " [yellow](no CUDA graphs)[/yellow]"
            table.add_row(fam if i == 0 else "", b["name"], avail, b["plugin"] or "")
    console.print(table)
    bad = [p for p in data["plugins"] if p["status"] != "loaded"]
    for p in bad:
        color = "red" if p["status"] == "failed" else "yellow"
        console.print(f"[{color}]plugin {p['name']}: {p['status']}[/{color}]: {p['error']}")


@app.command()
def bench(
    suites: Annotated[list[str] | None, typer.Argument(
        help="Suites to run (see --list); none: every suite that runs on the device.")] = None,
    list_suites: Annotated[bool, typer.Option("--list", help="List the suites and exit.")] = False,
    quick: Annotated[bool, typer.Option(help="Run the suites' short case lists.")] = False,
    device: Annotated[str | None, typer.Option(
        help="Device to run on (default: cuda when visible, else cpu).")] = None,
    rep_ms: Annotated[float, typer.Option(help="Milliseconds of repetitions per timing.")] = 100.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON to this file.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Draw a roofline PNG (needs matplotlib: infercore[plot]).")] = None,
) -> None:
    """Benchmark suites against their peers, measured in the same run.

    Measures the device's copy bandwidth and matmul rate first, then for each case: median
    time, achieved GB/s or TFLOP/s, the fraction of the measured ceiling and the speed
    ratio to the peer (>1 means infercore is faster). Correctness is checked first. On
    CPU, --quick runs the suites that support it at tiny shapes (harness check).
    """
    import torch

    from infercore import bench as harness
    from infercore.bench.report import results_table

    all_suites = harness.list_suites()
    if list_suites:
        table = Table(title="benchmark suites")
        table.add_column("suite")
        table.add_column("devices")
        table.add_column("what")
        for s in all_suites.values():
            table.add_row(s.name, ",".join(s.devices), s.description)
        console.print(table)
        return
    unknown = [s for s in suites or [] if s not in all_suites]
    if unknown:
        raise typer.BadParameter(
            f"unknown suite(s) {', '.join(unknown)}; available: {', '.join(all_suites)}",
            param_hint="SUITES",
        )
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible", param_hint="--device")
    for name in suites or []:
        if dev.type not in all_suites[name].devices:
            raise typer.BadParameter(
                f"suite {name!r} runs on {', '.join(all_suites[name].devices)}, not {dev.type}",
                param_hint="--device",
            )
    with console.status(f"measuring ceilings on {dev}...") as status:
        ceilings, results = harness.run_suites(
            suites or None, dev, quick=quick, rep_ms=rep_ms, progress=status.update)
    notes = harness.peer_notes(dev)
    console.print(results_table(ceilings, results, notes))
    data = harness.as_dict(ceilings, results, notes)
    if json_out is not None:
        json_out.write_text(json.dumps(data, indent=2))
        console.print(f"wrote {json_out}")
    if plot is not None:
        from infercore.bench.plot import roofline

        try:
            roofline(data, plot)
        except RuntimeError as err:
            err_console.print(f"[red]error:[/red] {escape(str(err))}")
            raise typer.Exit(1) from None
        console.print(f"wrote {plot}")


@app.command()
def tune(
    families: Annotated[
        list[str] | None, typer.Argument(help="Families to tune: gemm, attention.decode.")
    ] = None,
    shapes: Annotated[list[str] | None, typer.Option(
        "--shapes", help="Shapes (repeat the option, or separate by spaces): M,N,K for gemm; "
        "BATCH,CONTEXT[,HEADS,KV_HEADS,HEAD_DIM] for attention.decode; prefix FAMILY: to "
        "aim one at a single family.")] = None,
    model_config: Annotated[str | None, typer.Option(
        "--model-config", help="llama-8b, or a Hugging Face config.json/.yaml: tune its "
        "layer shapes.")] = None,
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32.")] = "bf16",
    budget: Annotated[float, typer.Option(help="Seconds for the whole run.")] = 600.0,
    output: Annotated[Path | None, typer.Option(
        help="Write the winners to this file instead of the tuning cache.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the cache and exit.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Delete the cache and exit.")] = False,
    device: Annotated[str, typer.Option(help="cuda, or cpu (tiny shapes, interpreter).")] = "cuda",
) -> None:
    """Time each backend and launch configuration of FAMILY at the given shapes, check it
    against the reference, and keep the fastest in the tuning cache
    ($INFERCORE_TUNING_CACHE or ~/.cache/infercore/tuning.json), which dispatch follows.
    Prints the tuned vs default speedup of every key.
    """
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from infercore import tune as tuning
    from infercore.config import ConfigError
    from infercore.tune.report import cache_table, results_table
    from infercore.tune.run import check_device, plan_workloads, run_tuning

    cache = tuning.TuningCache(output)
    if show or clear:
        if clear:
            removed = cache.clear()
            tuning.reset()
            console.print(f"{'removed' if removed else 'no cache at'} {cache.path}")
        if show:
            console.print(cache_table(cache.read(), {} if output else tuning.shipped_entries(),
                                      f"tuning cache {cache.path}"))
        return
    if not families:
        raise typer.BadParameter("name at least one family (or use --show / --clear)",
                                 param_hint="FAMILY")
    specs = [part for s in shapes or [] for part in s.replace(";", " ").split()]
    try:
        config = tuning.TuneConfig(families=families, shapes=specs, model=model_config,
                                   dtype=dtype, budget_s=budget, device=device, output=output)
        check_device(torch.device(config.device))
        total = len(plan_workloads(config))
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("tuning", total=total)

            def progress(index: int, text: str) -> None:
                bar.update(task, completed=index, description=text[:70])

            report = run_tuning(config, progress=progress)
            bar.update(task, completed=total, description="done")
    except (ConfigError, ValueError) as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    console.print(results_table(report.results))
    console.print(f"wrote {report.path}")


@app.command()
def generate(
    model: Annotated[str, typer.Option(help="Local HF model directory, or tiny-random.")] = (
        "tiny-random"
    ),
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="A prompt (repeatable).")
    ] = None,
    prompts_file: Annotated[
        Path | None, typer.Option(help="A file with one prompt per line.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate per prompt.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="Keep the k most likely tokens; 0 disables.")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus mass; 1 disables.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed of every request's sampling.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="EngineConfig as a JSON or YAML file.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cuda, cuda:1, cpu (default: CUDA if any).")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, float16, bfloat16.")] = None,
) -> None:
    """Generate text with the reference engine, streaming a single prompt to the terminal.

    With several prompts (or --prompts-file) a progress bar runs and each output is
    printed when all are done. Ends with a throughput summary (tokens, seconds, tok/s).
    """
    import time

    from rich.progress import Progress

    from infercore.config import ConfigError
    from infercore.engine import LLM, EngineConfig, SamplingParams

    prompts = list(prompt or [])
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise typer.BadParameter(f"{prompts_file} is not a file", param_hint="--prompts-file")
        prompts += [line for line in prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise typer.BadParameter("give --prompt or --prompts-file", param_hint="--prompt")
    try:
        cfg = EngineConfig.from_file(config) if config is not None else EngineConfig()
        overrides = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        cfg = EngineConfig(**{**cfg.model_dump(), **overrides})
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p,
                                max_tokens=max_tokens, seed=seed)
        llm = LLM(model, config=cfg)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    start = time.perf_counter()
    if len(prompts) == 1 and prompts_file is None:
        console.print(prompts[0], end="", style="bold", markup=False, highlight=False)
        outputs = []
        for chunk in llm.stream(prompts, params):
            console.print(chunk.text, end="", markup=False, highlight=False)
            if chunk.finish_reason is not None:
                outputs.append(chunk.output)
        console.print()
    else:
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("generating", total=len(prompts))
            outputs = llm.generate(prompts, params,
                                   on_finish=lambda _: bar.advance(task))
        for out in outputs:
            console.rule(f"prompt {out.index}", style="dim")
            console.print(out.prompt, end="", style="bold", markup=False, highlight=False)
            console.print(out.text, markup=False, highlight=False)
    seconds = time.perf_counter() - start
    for out in outputs:
        if out.error:
            err_console.print(f"[red]prompt {out.index}: {out.finish_reason}:[/red] {out.error}")
    tokens = sum(len(o.token_ids) for o in outputs)
    console.print(f"{len(outputs)} outputs, {tokens} tokens in {seconds:.2f} s: "
                  f"{tokens / seconds:.1f} tok/s", style="dim")
    if any(o.error for o in outputs):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
