"""Sweep FP8 GEMM tiles and accumulation modes of the Triton kernel against torch._scaled_mm.

Hopper's FP8 tensor-core instructions accumulate in reduced precision. ``promote`` (the
default) adds each K tile's product into a float32 accumulator (``max_num_imprecise_acc =
BLOCK_K``: the kernel waits for the tile's matrix instructions before the next tile's are
issued); ``fast`` (``fast_accum=True``) accumulates all of K in the instructions' own
accumulator. The peer runs with
``use_fast_accum`` False and True, timed before and after each candidate. Every candidate
is first checked against the float32 product of the dequantized operands; the relative
error is recorded. Ratios printed are against the faster of the two peer timings.

Run on a CUDA machine from the project root, for example:

    PYTHONPATH=src python scripts/gemm_fp8_accum_sweep.py --out fp8.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time

import torch
import triton

from infercore.bench.graphs import replay_us
from infercore.ops.gemm import quantize_fp8
from infercore.ops.gemm.fp8 import GemmFp8Inputs
from infercore.ops.gemm.fp8_triton import gemm_fp8_triton
from infercore.ops.gemm.triton_configs import GemmConfig

SHAPES = {  # name -> (M, N, K)
    "8192^3": (8192, 8192, 8192),
    "qkv M=4096": (4096, 6144, 4096),
    "gate_up M=4096": (4096, 28672, 4096),
    "down M=4096": (4096, 4096, 14336),
    "qkv M=512": (512, 6144, 4096),
    "o M=512": (512, 4096, 4096),
    "gate_up M=512": (512, 28672, 4096),
    "down M=512": (512, 4096, 14336),
}
P = dict(persistent=True, tma=True)
CANDIDATES = {
    "128x128x256 w8 s3": GemmConfig(128, 128, 256, num_warps=8, num_stages=3, **P),
    "128x128x128 w8 s4": GemmConfig(128, 128, 128, num_warps=8, num_stages=4, **P),
    "64x128x128 w4 s4 p2": GemmConfig(64, 128, 128, num_warps=4, num_stages=4,
                                      programs_per_sm=2, **P),
    "64x128x128 w4 s3 p2": GemmConfig(64, 128, 128, num_warps=4, num_stages=3,
                                      programs_per_sm=2, **P),
    "64x256x128 w4 s3": GemmConfig(64, 256, 128, num_warps=4, num_stages=3, **P),
    "128x256x128 w8 s3": GemmConfig(128, 256, 128, num_warps=8, num_stages=3, **P),
}
COPIES = 8


class Operands:
    """``copies`` sets of quantized operands of one shape and recipe, their outputs and
    the float32 product of the first set's dequantized operands."""

    def __init__(self, m: int, n: int, k: int, recipe: str) -> None:
        copies = COPIES if m <= 512 else 1
        ga, gb = ("tensor", "tensor") if recipe == "tensor" else ("token", "channel")
        self.a, self.b, self.outs = [], [], []
        for _ in range(copies):
            self.a.append(quantize_fp8(torch.randn(m, k, device="cuda", dtype=torch.bfloat16), ga))
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            self.b.append(quantize_fp8(w.t(), gb))
            self.outs.append(torch.empty(m, n, device="cuda", dtype=torch.bfloat16))
        (a_q, a_s), (b_q, b_s) = self.a[0], self.b[0]
        self.ref = (a_q.float() * a_s) @ (b_q.float() * b_s)
        self.copies = copies

    def time_us(self, fn) -> float:
        """Graph replays over the copies (M <= 512), else the median of do_bench."""
        calls = [lambda j=j: fn(j) for j in range(self.copies)]
        if self.copies > 1:
            return replay_us(calls * (20 // self.copies + 1))
        return 1e3 * triton.testing.do_bench(calls[0], warmup=50, rep=300, return_mode="median")

    def peer(self, j: int, fast: bool) -> None:
        (a_q, a_s), (b_q, b_s) = self.a[j], self.b[j]
        torch._scaled_mm(a_q, b_q, a_s, b_s, out_dtype=torch.bfloat16, out=self.outs[j],
                         use_fast_accum=fast)

    def peers(self) -> dict:
        return {f"peer_{'fast' if f else 'precise'}_us":
                self.time_us(lambda j, f=f: self.peer(j, f)) for f in (False, True)}

    def ours(self, j: int, cfg: GemmConfig, fast: bool) -> None:
        (a_q, a_s), (b_q, b_s) = self.a[j], self.b[j]
        inputs = GemmFp8Inputs(a_q, b_q, a_s, b_s, None, self.outs[j], fast)
        gemm_fp8_triton(inputs, config=cfg)

    def error(self, cfg: GemmConfig, fast: bool) -> float:
        self.outs[0].fill_(float("nan"))
        self.ours(0, cfg, fast)
        torch.cuda.synchronize()
        return ((self.outs[0].float() - self.ref).norm() / self.ref.norm()).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--modes", default="promote,fast")
    p.add_argument("--recipes", default="tensor,rowwise")
    p.add_argument("--budget-s", type=float, default=500.0)
    args = p.parse_args()
    t0 = time.time()
    results = []
    for shape in args.shapes.split(","):
        m, n, k = SHAPES[shape]
        flops = 2.0 * m * n * k
        for recipe in args.recipes.split(","):
            ops = Operands(m, n, k, recipe)
            before = ops.peers()
            print(f"{shape} {recipe}: peer precise {flops / before['peer_precise_us'] / 1e6:.0f}"
                  f" fast {flops / before['peer_fast_us'] / 1e6:.0f} TFLOP/s", flush=True)
            for name in args.candidates.split(","):
                cfg = CANDIDATES[name]
                for mode in args.modes.split(","):
                    if time.time() - t0 > args.budget_s:
                        print("budget spent")
                        break
                    fast = mode == "fast"
                    try:
                        err = ops.error(cfg, fast)
                        if not err < 2e-2:
                            raise AssertionError(f"relative error {err:.2e}")
                        us = ops.time_us(functools.partial(ops.ours, cfg=cfg, fast=fast))
                    except Exception as e:
                        print(f"  {name} {mode}: {type(e).__name__}: {str(e)[:160]}", flush=True)
                        continue
                    after = ops.peers()
                    results.append(dict(shape=shape, m=m, n=n, k=k, recipe=recipe,
                                        candidate=name, mode=mode,
                                        config=dataclasses.asdict(cfg), us=us, err=err,
                                        tflops=flops / us / 1e6, peer_before=before,
                                        peer_after=after))
                    pp = min(before["peer_precise_us"], after["peer_precise_us"])
                    pf = min(before["peer_fast_us"], after["peer_fast_us"])
                    print(f"  {name:22s} {mode:7s} {flops / us / 1e6:6.0f} TFLOP/s "
                          f"{pp / us:.3f}x precise {pf / us:.3f}x fast (peers now "
                          f"{flops / after['peer_precise_us'] / 1e6:.0f} / "
                          f"{flops / after['peer_fast_us'] / 1e6:.0f}) err {err:.1e}",
                          flush=True)
            del ops
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
