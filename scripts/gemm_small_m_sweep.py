"""Sweep the Triton GEMM's tiles, warps, stages and split-K at small M against cuBLAS.

The linear layers of Llama-3-8B (``b = weight.t()`` of a bfloat16 ``[N, K]`` weight):
qkv [6144, 4096], o [4096, 4096], gate_up [28672, 4096], down [4096, 14336]; M in
{16, 64, 512}. Every timing replays a CUDA graph of 20 calls that rotate over 8 distinct
weight copies (and activations and outputs), so no weight is in L2 when it is read (8
copies: 0.27-1.9 GB per layer against 50-60 MB of L2); the time per call is the median of
5 replays divided by 20. cuBLAS (``torch.mm`` into the same outputs) and the table's
default configuration (``pick_config``) are timed the same way in the same run. Each
configuration is first run twice into NaN-poisoned outputs and checked against the
float32 ``torch.matmul`` (the second call checks that split-K left its counters at zero);
configurations that fail or raise are skipped, with the reason printed. TB/s counts the
weight, activation and output bytes once; TFLOP/s is 2*M*N*K over the time.

The budget is shared evenly by the M values; within one M, configurations run in grid
order (split-K innermost) until its share is spent. Printed: per layer and M, cuBLAS,
the default and the best few configurations with their ratio to cuBLAS; per M, the
configurations with the best geometric-mean ratio over the four layers (one table entry
serves every layer of an M class).

Run on a CUDA machine from the project root:

    PYTHONPATH=src python scripts/gemm_small_m_sweep.py --out gemm_small_m_sweep.json \\
        --budget-s 540
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import time

import torch

from infercore.bench.graphs import replay_us
from infercore.ops.gemm.triton_configs import GemmConfig, device_class, pick_config
from infercore.ops.gemm.triton_launch import launch_matmul

#: (name, N, K) of Llama-3-8B's projections.
LAYERS = [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096),
          ("down", 4096, 14336)]
ROWS = [16, 64, 512]
DEVICE = "cuda"
DTYPE = torch.bfloat16
COPIES = 8  # distinct weights rotated through a graph
CALLS = 20  # calls captured per graph
REPLAYS = 5
TOLERANCE = 1e-2  # relative-norm bound of bfloat16 outputs (tests/helpers.py REL_TOL)

#: Candidate grid per M: block_m, block_n, block_k, stages, persistent. Warps follow the
#: tile (8 from 128x128 up, else 4) unless --warps is given.
GRIDS: dict[int, dict[str, tuple]] = {
    16: dict(block_m=(16,), block_n=(32, 64, 128), block_k=(128, 256), stages=(3, 4),
             persistent=(False,), split_k=(1, 2, 4, 8, None)),
    64: dict(block_m=(32, 64), block_n=(64, 128), block_k=(64, 128), stages=(3, 4),
             persistent=(False,), split_k=(1, 2, 4, None)),
    512: dict(block_m=(64, 128), block_n=(128, 256), block_k=(64,), stages=(3, 4),
              persistent=(False, True), split_k=(1, 2, 3, 4)),
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _splits(text: str) -> tuple[int | None, ...]:
    return tuple(None if v == "auto" else int(v) for v in text.split(","))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write the results to")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="stop starting new configurations after this many seconds")
    p.add_argument("--m", type=_ints, default=tuple(ROWS), help="comma list of M values")
    p.add_argument("--layers", default=",".join(name for name, _, _ in LAYERS),
                   help="comma list of layers among " + ", ".join(n for n, _, _ in LAYERS))
    p.add_argument("--block-m", type=_ints, help="override the grid's block_m values")
    p.add_argument("--block-n", type=_ints, help="override the grid's block_n values")
    p.add_argument("--block-k", type=_ints, help="override the grid's block_k values")
    p.add_argument("--stages", type=_ints, help="override the grid's stage counts")
    p.add_argument("--warps", type=_ints, help="warp counts (default: by tile size)")
    p.add_argument("--split-k", type=_splits,
                   help="comma list of K splits; 'auto' plans them from the SM count")
    p.add_argument("--pointer", action="store_true",
                   help="the pointer kernel only (default: TMA on Hopper)")
    p.add_argument("--top", type=int, default=6, help="configurations printed per case")
    return p.parse_args()


class Case:
    """One layer at one M: activations, outputs and the float32 reference."""

    def __init__(self, layer: str, n: int, k: int, m: int, weights: list) -> None:
        self.layer, self.n, self.k, self.m = layer, n, k, m
        self.weights = weights
        self.xs = [torch.randn(m, k, device=DEVICE, dtype=DTYPE) for _ in weights]
        self.outs = [torch.empty(m, n, device=DEVICE, dtype=DTYPE) for _ in weights]
        self.ref = self.xs[0].float() @ weights[0].float().t()
        self.bytes = 2 * (n * k + m * k + m * n)
        self.flops = 2.0 * m * n * k
        self.label = f"{layer} M={m} N={n} K={k}"

    def check(self, config: GemmConfig | None) -> None:
        for _ in range(2):  # the second call also checks the counters were reset
            out = self.outs[0].fill_(float("nan"))
            launch_matmul(self.xs[0], self.weights[0].t(), out, config=config)
            err = ((out.float() - self.ref).norm() / self.ref.norm()).item()
            if not err <= TOLERANCE:  # also false for NaN
                raise AssertionError(f"relative error {err:.2e} > {TOLERANCE:.0e}")

    def kernel_calls(self, config: GemmConfig | None) -> list:
        def call(j: int) -> None:
            launch_matmul(self.xs[j], self.weights[j].t(), self.outs[j], config=config)

        return [lambda j=i % COPIES: call(j) for i in range(CALLS)]

    def cublas_calls(self) -> list:
        return [lambda j=i % COPIES: torch.mm(self.xs[j], self.weights[j].t(), out=self.outs[j])
                for i in range(CALLS)]


def grid(m: int, args: argparse.Namespace, tma: bool) -> list[GemmConfig]:
    """The candidate configurations for ``m`` rows (split-K innermost)."""
    g = dict(GRIDS[m] if m in GRIDS else GRIDS[min(GRIDS, key=lambda r: abs(r - m))])
    for name in ("block_m", "block_n", "block_k", "stages", "split_k"):
        if getattr(args, name) is not None:
            g[name] = getattr(args, name)
    found = []
    for bm, bn, bk, stages, persistent, split_k in itertools.product(
            g["block_m"], g["block_n"], g["block_k"], g["stages"], g["persistent"],
            g["split_k"]):
        for warps in args.warps or (8 if bm * bn >= 128 * 128 else 4,):
            found.append(GemmConfig(bm, bn, bk, num_warps=warps, num_stages=stages,
                                    persistent=persistent, tma=tma, split_k=split_k))
    return found


def config_label(cfg: dict) -> str:
    split = "auto" if cfg["split_k"] is None else cfg["split_k"]
    return (f"{cfg['block_m']}x{cfg['block_n']}x{cfg['block_k']} w{cfg['num_warps']} "
            f"s{cfg['num_stages']} split={split}{' persistent' if cfg['persistent'] else ''}"
            f"{' tma' if cfg['tma'] else ''}")


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    layers = [spec for spec in LAYERS if spec[0] in args.layers.split(",")]
    if not layers:
        raise SystemExit(f"--layers {args.layers!r}: none of {[n for n, _, _ in LAYERS]}")
    started = time.perf_counter()
    torch.manual_seed(0)
    tma = device_class(torch.device(DEVICE)) == "sm90" and not args.pointer
    results: list[dict] = []
    skipped: list[dict] = []

    def record(case: Case, name: str, cfg: GemmConfig | None, us: float) -> None:
        results.append({"layer": case.layer, "m": case.m, "n": case.n, "k": case.k,
                        "name": name, "config": None if cfg is None else dataclasses.asdict(cfg),
                        "us": us, "tbps": case.bytes / us * 1e-6,
                        "tflops": case.flops / us * 1e-6})

    cases: dict[int, list[Case]] = {m: [] for m in args.m}
    for layer, n, k in layers:
        weights = [torch.randn(n, k, device=DEVICE, dtype=DTYPE) * 0.02
                   for _ in range(COPIES)]
        for m in args.m:
            cases[m].append(Case(layer, n, k, m, weights))
    baseline: dict[str, float] = {}
    for m in args.m:
        for case in cases[m]:
            baseline[case.label] = replay_us(case.cublas_calls(), REPLAYS)
            record(case, "cublas", None, baseline[case.label])
            case.check(None)
            default = pick_config(m, DTYPE.itemsize * 8, torch.device(DEVICE), case.n)
            record(case, "default", default, replay_us(case.kernel_calls(None), REPLAYS))
    setup_s = time.perf_counter() - started
    runs: dict[int, tuple[int, int]] = {}
    for i, m in enumerate(args.m):
        deadline = started + setup_s + (args.budget_s - setup_s) * (i + 1) / len(args.m)
        configs = grid(m, args, tma)
        done = 0
        for cfg in configs:
            if time.perf_counter() > deadline:
                print(f"M={m}: budget spent, {len(configs) - done} of {len(configs)} "
                      "configurations not run")
                break
            done += 1
            for case in cases[m]:
                try:
                    case.check(cfg)
                    us = replay_us(case.kernel_calls(cfg), REPLAYS)
                except Exception as exc:  # a failing configuration is reported and skipped
                    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    print(f"skip {config_label(dataclasses.asdict(cfg))} {case.label}: "
                          f"{reason}")
                    skipped.append({"layer": case.layer, "m": m,
                                    "config": dataclasses.asdict(cfg), "reason": reason})
                    continue
                record(case, "config", cfg, us)
        runs[m] = (done, len(configs))
    for row in results:
        label = f"{row['layer']} M={row['m']} N={row['n']} K={row['k']}"
        row["ratio_vs_cublas"] = baseline[label] / row["us"]
    print_cases(cases, results, args.top)
    best = print_best_per_m(cases, results, args.top)
    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "tma": tma, "copies": COPIES, "calls_per_graph": CALLS, "replays": REPLAYS,
               "configs_run": {str(m): {"run": r, "in_grid": g} for m, (r, g) in runs.items()},
               "seconds": time.perf_counter() - started, "best_per_m": best,
               "results": results, "skipped": skipped}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out}")


def print_cases(cases: dict[int, list[Case]], results: list[dict], top: int) -> None:
    for m, group in cases.items():
        for case in group:
            rows = [r for r in results if (r["layer"], r["m"]) == (case.layer, m)]
            fixed = [r for r in rows if r["name"] != "config"]
            swept = sorted((r for r in rows if r["name"] == "config"), key=lambda r: r["us"])
            print(f"\n{case.label}")
            print(f"  {'configuration':<52} {'us':>8} {'TB/s':>6} {'TFLOP/s':>8} "
                  f"{'vs cuBLAS':>9}")
            for r in fixed + swept[:top]:
                label = r["name"]
                if r["config"] is not None:
                    label += ": " + config_label(r["config"])
                print(f"  {label:<52} {r['us']:8.1f} {r['tbps']:6.2f} {r['tflops']:8.1f} "
                      f"{r['ratio_vs_cublas']:8.2f}x")


def print_best_per_m(cases: dict[int, list[Case]], results: list[dict],
                     top: int) -> dict[str, list[dict]]:
    """Configurations measured on every layer of an M, by geometric-mean ratio to cuBLAS."""
    best: dict[str, list[dict]] = {}
    for m, group in cases.items():
        ratios: dict[str, list[float]] = {}
        configs: dict[str, dict] = {}
        for r in results:
            if r["m"] == m and r["name"] == "config":
                key = json.dumps(r["config"], sort_keys=True)
                ratios.setdefault(key, []).append(r["ratio_vs_cublas"])
                configs[key] = r["config"]
        ranked = sorted(
            ((math.exp(statistics.fmean(math.log(x) for x in v)), min(v), key)
             for key, v in ratios.items() if len(v) == len(group)), reverse=True)
        defaults = [r["ratio_vs_cublas"] for r in results if r["m"] == m and r["name"] ==
                    "default"]
        print(f"\nM={m}: geometric mean of the ratio to cuBLAS over {len(group)} layers "
              f"(default: {math.exp(statistics.fmean(math.log(x) for x in defaults)):.2f}x)")
        best[str(m)] = []
        for geo, worst, key in ranked[:top]:
            print(f"  {config_label(configs[key]):<52} {geo:6.2f}x (worst layer {worst:.2f}x)")
            best[str(m)].append({"config": configs[key], "geomean_ratio": geo,
                                 "worst_ratio": worst})
    return best


if __name__ == "__main__":
    main()
