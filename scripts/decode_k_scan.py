"""Time of the int4 M=1 GEMV as K grows, with and without K splits, against the read floor.

N = 14336 output rows (Llama-3-8B gate/up), int4 groups of 128, one bfloat16 activation
row, K in {512, 1024, 2048, 4096}; the GEMV over words with the default tile (128 rows,
256-value steps, 2 warps) and splits planned (``None``) or fixed at 1, 2, 4. Each row is
timed as CUDA-graph replays of 20 calls over 8 weight copies and over 1 (weights in L2
where they fit). The slope in K is what each weight byte costs; the intercept, what
every call costs whatever its size (launch, first loads, the splits' reduction).

Run on a CUDA machine from the project root:

    PYTHONPATH=src python scripts/decode_k_scan.py
"""

from __future__ import annotations

import torch

from infercore.bench.floor import read_floor
from infercore.bench.graphs import replay_us
from infercore.ops.quant import quantize_weight
from infercore.ops.quant.triton_wo_splitk import DecodeConfig, splitk_linear

N = 14336
KS = (512, 1024, 2048, 4096)
SPLITS = (None, 1, 2, 4)
COPIES = (8, 1)
CALLS = 20


def scan(k: int, device: torch.device) -> None:
    ws = [torch.randn(N, k, device=device, dtype=torch.bfloat16) * 0.02 for _ in range(8)]
    qws = [quantize_weight(w, "int4", group_size=128, symmetric=True) for w in ws]
    xs = [torch.randn(1, k, device=device, dtype=torch.bfloat16) for _ in ws]
    outs = [torch.empty(1, N, device=device, dtype=torch.bfloat16) for _ in ws]
    for splits in SPLITS:
        cfg = DecodeConfig(128, 256, num_warps=2, num_stages=1, splits=splits, path="gemv")
        times = [replay_us([lambda j=i % c, cfg=cfg: splitk_linear(xs[j], qws[j], None,
                                                                   outs[j], config=cfg)
                            for i in range(CALLS)])
                 for c in COPIES]
        print(f"K={k} splits={splits}: {times[0]:.2f} us (8 copies) {times[1]:.2f} us (1 copy)",
              flush=True)
    nbytes = qws[0].qweight.numel()
    rot, _ = read_floor(nbytes, device, copies=8)
    print(f"  read floor {nbytes / 1e6:.1f} MB (8 copies): {replay_us(rot.sequence()):.2f} us",
          flush=True)


def main() -> None:
    torch.manual_seed(0)
    for k in KS:
        scan(k, torch.device("cuda"))
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
