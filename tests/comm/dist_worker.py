"""Entry point of the multi-process tests: run under ``python -m infercore.comm.launch``.

``python dist_worker.py SCENARIO OUTDIR [--groups G,...] [--backend B] [--device D]
[--large]`` writes ``OUTDIR/rank<R>.json``. Scenario ``checks`` runs the check groups
(``collectives``, ``tp_layers``, ``tp_models``) and maps each check to ``"ok"``,
``"skip: ..."`` or its traceback; ``timeout`` and ``fail`` are described at their
functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: Group timeout of the timeout scenario, and of the others (a rank whose check failed
#: halfway leaves its peers waiting: they raise instead of hanging).
TIMEOUT_S = 2.0
CHECKS_TIMEOUT_S = 60.0
GROUPS = ("collectives", "tp_layers", "tp_models")


@dataclass
class Ctx:
    comm: object
    rank: int
    world: int
    device: object
    backend: str
    large: bool


def _write(outdir: Path, rank: int, results: dict) -> None:
    tmp = outdir / f".rank{rank}.json"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.rename(outdir / f"rank{rank}.json")


def _fail_scenario(outdir: Path) -> None:
    """Rank 1 fails with exit code 3 once every rank has written its report; the others
    would run for a minute."""
    rank = int(os.environ["RANK"])
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST")
    _write(outdir, rank, {"pid": os.getpid(), "env": {k: os.environ.get(k) for k in keys}})
    if rank == 1:
        world = int(os.environ["WORLD_SIZE"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                (outdir / f"rank{r}.json").exists() for r in range(world)):
            time.sleep(0.05)
        sys.exit(3)
    time.sleep(60)
    (outdir / f"rank{rank}.finished").write_text("not stopped")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["checks", "timeout", "fail"])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--large", action="store_true")
    args = parser.parse_args()
    if args.scenario == "fail":
        _fail_scenario(args.outdir)
        return

    import torch

    from infercore.comm import init_communicator
    from tests.comm import checks_collectives, checks_tp

    torch.set_num_threads(1)
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = TIMEOUT_S if args.scenario == "timeout" else CHECKS_TIMEOUT_S
    comm = init_communicator(args.backend, timeout_s=timeout, device=args.device)
    device = comm.device
    ctx = Ctx(comm, comm.rank, comm.world_size, device, args.backend, args.large)
    if args.scenario == "timeout":
        _write(args.outdir, ctx.rank, checks_collectives.run_timeout(ctx, TIMEOUT_S))
        os._exit(0)  # the group is broken after a timeout: skip its teardown
    groups = {"collectives": checks_collectives.CHECKS, "tp_layers": checks_tp.LAYER_CHECKS,
              "tp_models": checks_tp.MODEL_CHECKS}
    checks = {}
    for group in args.groups.split(","):
        checks.update(groups[group])
    results = {}
    for name, fn in checks.items():
        start = time.monotonic()
        try:
            fn(ctx)
            results[name] = "ok"
        except checks_collectives.Skip as why:
            results[name] = f"skip: {why}"
        except Exception:
            results[name] = traceback.format_exc()
        results[f"{name}.seconds"] = round(time.monotonic() - start, 3)
    _write(args.outdir, ctx.rank, results)
    if device.type == "cuda":
        # Destroying NCCL communicators that took part in CUDA-graph capture can hang
        # (pytorch/pytorch#115388); the results are written, so leave without teardown.
        os._exit(0)
    comm.close()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
