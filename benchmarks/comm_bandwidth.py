"""Bus bandwidth of all_reduce / all_gather: infercore (torch, pynccl) vs raw torch.distributed.

Run on 2+ GPUs of one machine::

    python -m infercore.comm.launch -n 2 benchmarks/comm_bandwidth.py --out comm.json

Sizes go from 1 KiB to 1 GiB in steps of 4x (``--min-bytes`` / ``--max-bytes``); the
size of an all_gather is its output, as in nccl-tests. Per case: a correctness check,
then ``--trials`` timed runs of back-to-back calls between CUDA events; a trial's time
is the slowest rank's, the case's time the median trial. Bandwidths follow nccl-tests:
``algbw = bytes / time``; ``busbw = algbw * 2(n-1)/n`` for all_reduce and
``algbw * (n-1)/n`` for all_gather. ``vs_raw`` is the busbw ratio to raw
``torch.distributed`` on the same group, measured in the same run. Latency: a 4-byte
all_reduce per call, eager and replayed from a CUDA graph of 64 calls.

Rank 0 prints a table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist

from infercore.comm import init_communicator
from infercore.registry import get_registry

GRAPH_CALLS = 64


def _sizes(lo: int, hi: int) -> list[int]:
    sizes, size = [], lo
    while size <= hi:
        sizes.append(size)
        size *= 4
    return sizes


def _time_ms(fn: Callable[[], object], iters: int, trials: int, cpu_group) -> float:
    """Median over trials of the slowest rank's mean milliseconds per call."""
    per_trial = []
    for _ in range(trials):
        dist.barrier(group=cpu_group)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        ms = torch.tensor([start.elapsed_time(end) / iters])
        dist.all_reduce(ms, op=dist.ReduceOp.MAX, group=cpu_group)
        per_trial.append(ms.item())
    return statistics.median(per_trial)


def _iters(nbytes: int) -> int:
    # About 256 MiB moved per trial, 5..200 calls: initial choice, to be tuned.
    return max(5, min(200, (256 << 20) // nbytes))


def _impls(comms: dict, op: str, x: torch.Tensor, out: torch.Tensor) -> dict:
    if op == "all_reduce":
        impls = {"raw": lambda: dist.all_reduce(x)}
        impls.update({name: (lambda c=c: c.all_reduce(x)) for name, c in comms.items()})
    else:
        impls = {"raw": lambda: dist.all_gather_into_tensor(out, x)}
        impls.update({name: (lambda c=c: c.all_gather(x)) for name, c in comms.items()})
    return impls


def _check(op: str, impl: Callable[[], object], x: torch.Tensor, out: torch.Tensor,
           name: str, rank: int, world: int) -> None:
    """Small integers, exact in bfloat16: the result must match exactly."""
    pattern = (torch.arange(x.numel(), device=x.device) % 7 + 1).to(x.dtype)
    x.copy_(pattern * (rank + 1))
    got = impl()
    if op == "all_reduce":
        ok = torch.equal(x, pattern * (world * (world + 1) // 2))
    else:
        got = out if got is None else got
        ok = all(torch.equal(chunk, pattern * (r + 1)) for r, chunk in enumerate(got.chunk(world)))
    if not ok:
        raise AssertionError(f"{name} {op} of {x.numel()} elements gave a wrong result")


def _latency(comms: dict, trials: int, cpu_group, device) -> list[dict]:
    rows = []
    tiny = torch.ones(2, dtype=torch.bfloat16, device=device)
    impls = {"raw": lambda: dist.all_reduce(tiny)}
    impls.update({name: (lambda c=c: c.all_reduce(tiny)) for name, c in comms.items()})
    for name, fn in impls.items():
        rows.append({"impl": name, "mode": "eager",
                     "us": 1e3 * _time_ms(fn, 500, trials, cpu_group)})
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(GRAPH_CALLS):
                    fn()
            us = 1e3 * _time_ms(graph.replay, 20, trials, cpu_group) / GRAPH_CALLS
            rows.append({"impl": name, "mode": "cuda_graph", "us": us})
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
            rows.append({"impl": name, "mode": "cuda_graph", "error": error})
        torch.cuda.synchronize()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file written by rank 0")
    parser.add_argument("--min-bytes", type=int, default=1 << 10)
    parser.add_argument("--max-bytes", type=int, default=1 << 30)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    comm = init_communicator("torch")
    rank, world, device = comm.rank, comm.world_size, comm.device
    if device.type != "cuda" or world < 2:
        raise SystemExit("run on 2+ GPUs: python -m infercore.comm.launch -n 2 ...")
    cpu_group = dist.new_group(backend="gloo")
    comms = {"infercore.torch": comm}
    notes = []
    pynccl = get_registry().get("comm.backend", "pynccl")
    reasons = pynccl.not_supported_reasons(None)
    if reasons:
        notes.append("pynccl skipped: " + "; ".join(reasons))
    else:
        comms["infercore.pynccl"] = init_communicator("pynccl")
    dtype = torch.bfloat16
    results = []
    for op in ("all_reduce", "all_gather"):
        for nbytes in _sizes(args.min_bytes, args.max_bytes):
            numel = nbytes // dtype.itemsize
            in_numel = numel if op == "all_reduce" else numel // world
            x = torch.empty(in_numel, dtype=dtype, device=device)
            out = torch.empty(in_numel * world, dtype=dtype, device=device)
            impls = _impls(comms, op, x, out)
            factor = 2 * (world - 1) / world if op == "all_reduce" else (world - 1) / world
            case = {}
            for name, fn in impls.items():
                _check(op, fn, x, out, name, rank, world)
                ms = _time_ms(fn, _iters(nbytes), args.trials, cpu_group)
                algbw = nbytes / (ms * 1e-3) / 1e9
                case[name] = {"op": op, "bytes": nbytes, "impl": name, "time_us": ms * 1e3,
                              "algbw_GBps": algbw, "busbw_GBps": algbw * factor}
            for row in case.values():
                row["vs_raw"] = row["busbw_GBps"] / case["raw"]["busbw_GBps"]
                results.append(row)
            del x, out
            torch.cuda.empty_cache()
    latency = _latency(comms, args.trials, cpu_group, device)
    if rank == 0:
        _report(results, latency, notes, world, device, args.out, comms)
    dist.barrier(group=cpu_group)
    # No communicator teardown: destroying NCCL communicators that took part in CUDA-graph
    # capture can hang (pytorch/pytorch#115388). Every rank has finished its work.
    sys.stdout.flush()
    os._exit(0)


def _report(results, latency, notes, world, device, path, comms) -> None:
    print(f"{'op':<11}{'bytes':>12}  {'impl':<17}{'time us':>10}{'algbw GB/s':>12}"
          f"{'busbw GB/s':>12}{'vs raw':>8}")
    for r in results:
        print(f"{r['op']:<11}{r['bytes']:>12}  {r['impl']:<17}{r['time_us']:>10.1f}"
              f"{r['algbw_GBps']:>12.2f}{r['busbw_GBps']:>12.2f}{r['vs_raw']:>8.3f}")
    print("\nall_reduce of 4 bytes, per call:")
    for r in latency:
        value = f"{r['us']:.2f} us" if "us" in r else r["error"]
        print(f"  {r['impl']:<17}{r['mode']:<11}{value}")
    for n in notes:
        print(n)
    meta = {
        "world_size": world,
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "torch_nccl_version": ".".join(map(str, torch.cuda.nccl.version())),
        "dtype": "bfloat16",
        "notes": notes,
    }
    if "infercore.pynccl" in comms:
        pyn = comms["infercore.pynccl"]
        meta["pynccl_library"] = pyn.lib.path
        meta["pynccl_nccl_version"] = ".".join(map(str, pyn.nccl_version))
    with open(path, "w") as f:
        json.dump({**meta, "results": results, "latency": latency}, f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
