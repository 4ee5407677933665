"""Read a decode-sized weight sequentially and in the decode kernels' tiled pattern.

For each packed weight of the Llama-3-8B MLP (``[N, K]`` in {(14336, 4096), (4096, 14336)},
int4 and int8: ``K * bits / 32`` 32-bit words per row) it times

- ``seq``: the read floor's kernels (:data:`infercore.bench.floor.READ_CONFIGS`), a
  stream over the whole buffer;
- ``tile``: programs over ``(N / BN, splits)``, each reading its ``[BN, words / splits]``
  block of the weight in steps of ``[BN, SW]`` words, the grid and steps of the decode
  kernels (one contiguous run of ``4 * SW`` bytes per row and step),

every timing a CUDA graph of 20 calls over 8 distinct copies (median of 5 replays per
call). If the tiled pattern reads as fast as the stream, the layout of the packed weight
is not what keeps a decode kernel off the floor.

    PYTHONPATH=src python scripts/read_pattern_sweep.py --out reads.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from functools import partial

import torch
import triton
import triton.language as tl

from infercore.bench.floor import READ_CONFIGS, read_floor
from infercore.bench.graphs import COPIES, Rotation, replay_us

SHAPES = [(14336, 4096), (4096, 14336)]  # [N, K]


@triton.jit
def _tile_read(src, out, N, KW, words_per_split, BN: tl.constexpr, SW: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * BN + tl.arange(0, BN)
    ptrs = src + rows.to(tl.int64)[:, None] * KW + tl.arange(0, SW)[None, :]
    acc = tl.zeros([BN, SW], dtype=tl.int32)
    k0 = pid_k * words_per_split
    for kw in range(k0, k0 + words_per_split, SW):
        acc ^= tl.load(ptrs + kw, mask=(rows < N)[:, None], other=0)
    tl.store(out + pid_n * tl.num_programs(1) + pid_k, tl.xor_sum(tl.xor_sum(acc, 1), 0))


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write the results to")
    p.add_argument("--block-n", type=_ints, default=[64, 128], help="rows per program")
    p.add_argument("--step-words", type=_ints, default=[32, 64, 128],
                   help="words per row and step")
    p.add_argument("--splits", type=_ints, default=[1, 2, 4, 8])
    p.add_argument("--warps", type=_ints, default=[4, 8])
    p.add_argument("--top", type=int, default=8, help="tiled configs printed per weight")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    device = torch.device("cuda")
    results: list[dict] = []
    for (n, k), bits in itertools.product(SHAPES, (4, 8)):
        kw = k * bits // 32
        case = {"n": n, "k": k, "bits": bits}
        for config in READ_CONFIGS:
            rot, _ = read_floor(n * kw * 4, device, configs=(config,))
            results.append({**case, "kind": "seq", "config": repr(config),
                            "us": replay_us(rot.sequence())})
        bufs = [torch.randint(-2**31, 2**31 - 1, (n, kw), dtype=torch.int32, device=device)
                for _ in range(COPIES)]
        grid = itertools.product(args.block_n, args.step_words, args.splits, args.warps)
        for bn, sw, splits, warps in grid:
            if kw % splits or (kw // splits) % sw:
                continue
            outs = [torch.empty(triton.cdiv(n, bn) * splits, dtype=torch.int32, device=device)
                    for _ in bufs]
            launch = partial(_tile_read[(triton.cdiv(n, bn), splits)], N=n, KW=kw,
                             words_per_split=kw // splits, BN=bn, SW=sw, num_warps=warps)
            rot = Rotation([partial(launch, b, o) for b, o in zip(bufs, outs, strict=True)])
            results.append({**case, "kind": "tile", "block_n": bn, "step_words": sw,
                            "splits": splits, "warps": warps, "us": replay_us(rot.sequence())})
        mine = [r for r in results if all(r[key] == v for key, v in case.items())]
        print(f"[{n}, {k}] int{bits}: {n * kw * 4 / 1e6:.1f} MB")
        for r in sorted(mine, key=lambda r: r["us"])[:args.top]:
            print(f"  {r['us']:6.1f} us  " + ", ".join(f"{key}={v}" for key, v in r.items()
                                                       if key not in case and key != "us"))
        del bufs
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "copies": COPIES,
                   "results": results}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
