"""Sweep launch configurations of the weight-only decode kernel against cuBLAS bf16.

Weights ``[N, K]`` in {(14336, 4096), (4096, 14336)} (the Llama-3-8B MLP), quantized
with ``--method`` (int4, int8 or fp8) and ``--group`` (0: one scale per output channel),
symmetric; bfloat16 activations of M rows (``--rows``). Every timing replays a CUDA graph
of 20 calls rotating over 8 distinct weight copies (and activations and outputs), so no
weight is in L2 when it is read (8 copies of a bf16 weight: 940 MB, against 50-60 MB of
L2); the time per call is the median of 5 replays divided by 20. Each config is first
checked against the float32 matmul with the dequantized weight; configs that fail the
check or raise are skipped, with the reason printed. GB/s is the quantized kernel's bytes
(packed weight, scales, x, out) over each row's time, cuBLAS's row included.

Run on a CUDA machine from the project root, for example:

    PYTHONPATH=src python scripts/wo_decode_sweep.py --out gemv.json --path gemv --rows 1,4
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from infercore.bench.graphs import replay_us
from infercore.ops.quant import quantize_weight
from infercore.ops.quant.triton_wo_splitk import DecodeConfig, default_config, splitk_linear
from infercore.ops.quant.weights import dequantize_weight

SHAPES = [(14336, 4096), (4096, 14336)]  # [N, K]
DEVICE = "cuda"
COPIES = 8  # distinct weights rotated through a graph
CALLS = 20  # calls captured per graph
REPLAYS = 5
TOLERANCE = 1e-2  # relative-norm bound of bfloat16 outputs (tests/helpers.py REL_TOL)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _splits(text: str) -> list[int | None]:
    return [None if v == "none" else int(v) for v in text.split(",")]


def _bools(text: str) -> list[bool]:
    return [v in ("1", "true", "yes") for v in text.split(",")]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write the results to")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="stop starting new configs after this many seconds")
    p.add_argument("--method", choices=("int4", "int8", "fp8"), default="int4")
    p.add_argument("--group", type=int, default=128, help="group size; 0 = per channel")
    p.add_argument("--rows", type=_ints, default=[1, 4, 16], help="activation rows M")
    p.add_argument("--path", choices=("gemv", "dot", "magic"), default="gemv")
    p.add_argument("--block-n", type=_ints, default=[16, 32, 64])
    p.add_argument("--block-k", type=_ints, default=[256, 512, 1024])
    p.add_argument("--warps", type=_ints, default=[4, 8])
    p.add_argument("--stages", type=_ints, default=[1])
    p.add_argument("--splits", type=_splits, default=[None, 1, 2, 4])
    p.add_argument("--prefetch", type=_bools, default=[True, False],
                   help="comma list of 0/1 (GEMV over words only)")
    p.add_argument("--top", type=int, default=6, help="configs printed per case")
    return p.parse_args()


class Case:
    """One (shape, M): weight copies, activations, outputs and the float32 reference."""

    def __init__(self, n: int, k: int, m: int, weights: list, qws: list) -> None:
        self.n, self.k, self.m = n, k, m
        self.weights, self.qws = weights, qws
        self.xs = [torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16) for _ in qws]
        self.outs = [torch.empty(m, n, device=DEVICE, dtype=torch.bfloat16) for _ in qws]
        self.ref = self.xs[0].float() @ dequantize_weight(qws[0], torch.float32).t()
        self.bytes = qws[0].nbytes + 2 * (m * k + m * n)
        self.label = f"M={m} [{n}, {k}]"

    def check(self, config: DecodeConfig | None) -> None:
        out = self.outs[0].fill_(float("nan"))
        if not splitk_linear(self.xs[0], self.qws[0], None, out, config=config):
            raise ValueError("splitk_linear declined the layout")
        err = ((out.float() - self.ref).norm() / self.ref.norm()).item()
        if not err <= TOLERANCE:  # also false for NaN
            raise AssertionError(f"relative error {err:.2e} > {TOLERANCE:.0e}")

    def kernel_calls(self, config: DecodeConfig | None) -> list:
        def call(j: int) -> None:
            splitk_linear(self.xs[j], self.qws[j], None, self.outs[j], config=config)

        return [lambda j=i % COPIES: call(j) for i in range(CALLS)]

    def cublas_calls(self) -> list:
        return [lambda j=i % COPIES: self.xs[j] @ self.weights[j].t() for i in range(CALLS)]


def config_dict(cfg: DecodeConfig) -> dict:
    return {"block_n": cfg.block_n, "block_k": cfg.block_k, "num_warps": cfg.num_warps,
            "num_stages": cfg.num_stages, "splits": cfg.splits, "path": cfg.path,
            "prefetch": cfg.prefetch}


def config_label(cfg: DecodeConfig) -> str:
    return (f"{cfg.path or 'auto'} n{cfg.block_n} k{cfg.block_k} w{cfg.num_warps} "
            f"s{cfg.num_stages} splits={cfg.splits or 'auto'}"
            + (" pf" if cfg.prefetch and cfg.path == "gemv" else ""))


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    started = time.perf_counter()
    torch.manual_seed(0)
    results: list[dict] = []
    cases: list[Case] = []
    for n, k in SHAPES:
        weights = [torch.randn(n, k, device=DEVICE, dtype=torch.bfloat16) * 0.02
                   for _ in range(COPIES)]
        group = args.group or k
        qws = [quantize_weight(w, args.method, group_size=group, symmetric=True)
               for w in weights]
        cases += [Case(n, k, m, weights, qws) for m in args.rows]

    def record(case: Case, name: str, cfg: DecodeConfig | None, us: float) -> None:
        results.append({"n": case.n, "k": case.k, "m": case.m, "name": name,
                        "config": config_dict(cfg) if cfg is not None else None, "us": us,
                        "gbps": case.bytes / us * 1e-3})

    baseline: dict[str, float] = {}
    for case in cases:
        baseline[case.label] = replay_us(case.cublas_calls(), REPLAYS)
        record(case, "cublas.bf16", None, baseline[case.label])
        case.check(None)
        record(case, "default", default_config(case.m, case.qws[0], torch.bfloat16),
               replay_us(case.kernel_calls(None), REPLAYS))
    prefetch = args.prefetch if args.path == "gemv" else [True]
    grid = [DecodeConfig(bn, bk, num_warps=w, num_stages=s, splits=sp, path=args.path,
                         prefetch=pf)
            for bn, bk, w, s, sp, pf in itertools.product(
                args.block_n, args.block_k, args.warps, args.stages, args.splits, prefetch)]
    skipped: list[dict] = []
    done = 0
    for cfg in grid:
        if time.perf_counter() - started > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: {len(grid) - done} configs not run")
            break
        done += 1
        for case in cases:
            try:
                case.check(cfg)
                us = replay_us(case.kernel_calls(cfg), REPLAYS)
            except Exception as exc:  # a failing config is reported and skipped
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                print(f"skip {config_label(cfg)} {case.label}: {reason}")
                skipped.append({"n": case.n, "k": case.k, "m": case.m,
                                "config": config_dict(cfg), "reason": reason})
                continue
            record(case, args.path, cfg, us)
    for row in results:
        row["speedup_vs_cublas"] = baseline[f"M={row['m']} [{row['n']}, {row['k']}]"] / row["us"]
    print_table(cases, results, args.top)
    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "method": args.method, "group_size": args.group, "path": args.path,
               "copies": COPIES, "calls_per_graph": CALLS, "replays": REPLAYS,
               "configs_run": done, "configs_in_grid": len(grid),
               "seconds": time.perf_counter() - started, "results": results,
               "skipped": skipped}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out}")


def print_table(cases: list[Case], results: list[dict], top: int) -> None:
    for case in cases:
        rows = [r for r in results if (r["n"], r["k"], r["m"]) == (case.n, case.k, case.m)]
        fixed = [r for r in rows if r["config"] is None or r["name"] == "default"]
        swept = sorted((r for r in rows if r not in fixed), key=lambda r: r["us"])
        print(f"\n{case.label}")
        print(f"  {'config':<48} {'us':>8} {'GB/s':>7} {'vs cuBLAS':>9}")
        for r in fixed + swept[:top]:
            cfg = r["config"]
            label = r["name"] if cfg is None else f"{r['name']}: {label_of(cfg)}"
            print(f"  {label:<48} {r['us']:8.1f} {r['gbps']:7.0f} "
                  f"{r['speedup_vs_cublas']:8.2f}x")


def label_of(cfg: dict) -> str:
    return config_label(DecodeConfig(**cfg))


if __name__ == "__main__":
    main()
