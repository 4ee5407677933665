"""Weight-only decode kernels with their weights resident in L2 against rotating copies.

For each Llama-3-8B MLP weight ([14336, 4096] and [4096, 14336]) quantized to int4 (groups
of 128) and int8 (one scale per channel), symmetric: the default decode kernel at M = 1
and 4 (and the int4 magic path at M = 1), cuBLAS bf16 and the read floor
(:func:`infercore.bench.floor.read_floor`), each timed as CUDA-graph replays of 20 calls
rotating over 8 weight copies and over 1 copy. One int4 weight (29 MB) fits in an H200's
L2 (50 MB); eight do not. A kernel that is no faster from L2 than from DRAM is bound by
its own work on the SMs, not by reading the weight.

Run on a CUDA machine from the project root:

    PYTHONPATH=src python scripts/decode_l2_probe.py
"""

from __future__ import annotations

import torch

from infercore.bench.floor import read_floor
from infercore.bench.graphs import replay_us
from infercore.ops.quant import quantize_weight
from infercore.ops.quant.triton_wo_splitk import MAGIC_CONFIG, splitk_linear

SHAPES = [(14336, 4096), (4096, 14336)]  # [N, K]
COPIES = (8, 1)
CALLS = 20


def _per_call_us(fn, copies: int) -> float:
    return replay_us([lambda j=i % copies: fn(j) for i in range(CALLS)])


def probe(n: int, k: int, method: str, group: int, device: torch.device) -> None:
    ws = [torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
          for _ in range(max(COPIES))]
    qws = [quantize_weight(w, method, group_size=group, symmetric=True) for w in ws]
    for m in (1, 4):
        xs = [torch.randn(m, k, device=device, dtype=torch.bfloat16) for _ in ws]
        outs = [torch.empty(m, n, device=device, dtype=torch.bfloat16) for _ in ws]
        configs = {"default": None}
        if m == 1 and method == "int4":
            configs["magic"] = MAGIC_CONFIG
        for name, cfg in configs.items():
            def ours(j, cfg=cfg, xs=xs, outs=outs):
                splitk_linear(xs[j], qws[j], None, outs[j], config=cfg)

            def cublas(j, xs=xs):
                return xs[j] @ ws[j].t()

            mine = [_per_call_us(ours, c) for c in COPIES]
            peer = [_per_call_us(cublas, c) for c in COPIES]
            print(f"{method} M={m} [{n}, {k}] {name:8s}: {mine[0]:.1f} us over 8 copies, "
                  f"{mine[1]:.1f} us from 1 copy | cuBLAS {peer[0]:.1f} / {peer[1]:.1f}",
                  flush=True)
    nbytes = qws[0].qweight.numel() * qws[0].qweight.element_size()
    for copies in COPIES:
        rot, cfg = read_floor(nbytes, device, copies=copies)
        print(f"  read floor {nbytes / 1e6:.1f} MB, {copies} copies: "
              f"{replay_us(rot.sequence()):.1f} us ({cfg})", flush=True)


def main() -> None:
    torch.manual_seed(0)
    device = torch.device("cuda")
    for n, k in SHAPES:
        for method, group in (("int4", 128), ("int8", k)):
            probe(n, k, method, group, device)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
