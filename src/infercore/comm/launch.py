"""Start N processes of a script on this machine, as ``torchrun --standalone`` would.

Usage::

    python -m infercore.comm.launch -n 2 script.py [args ...]
    python -m infercore.comm.launch -n 2 -m package.module [args ...]

Each child gets ``RANK``, ``LOCAL_RANK`` (= rank), ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` (a free port unless ``--master-port``), plus
``NCCL_NVLS_ENABLE=0`` and ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``; ``init_communicator()``
in the script picks them up. When a child fails, the others are terminated (SIGTERM,
then SIGKILL after ``--grace`` seconds) and the launcher exits with the failed child's
code (``128 + signal`` when a signal ended it); it exits 0 when all succeed.

With torchrun instead (set the multicast variables yourself)::

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 \\
        torchrun --standalone --nproc-per-node 2 script.py [args ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from infercore.comm.env import NO_MULTICAST_ENV

__all__ = ["child_env", "free_port", "launch", "main"]

_POLL_S = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_env(rank: int, nprocs: int, master_addr: str, master_port: int) -> dict[str, str]:
    """The environment of child ``rank``: this one plus the rendezvous variables."""
    env = dict(os.environ)
    env.update(NO_MULTICAST_ENV)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nprocs),
        LOCAL_WORLD_SIZE=str(nprocs),
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
    )
    return env


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every running child's process group, then SIGKILL what is left."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in running:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def launch(
    command: Sequence[str],
    nprocs: int,
    *,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    grace_s: float = 5.0,
) -> int:
    """Run ``command`` (argv after the interpreter) in ``nprocs`` processes; return the exit code.

    Parameters
    ----------
    command : list of str
        ``["script.py", *args]`` or ``["-m", "module", *args]``.
    nprocs : int
        Number of ranks, >= 1.
    master_addr, master_port : optional
        Rendezvous address; the port defaults to a free one.
    grace_s : float
        Seconds between SIGTERM and SIGKILL when stopping the other ranks.

    Returns
    -------
    int
        0 when every rank succeeded, else the exit code of the first rank seen failing.
    """
    if not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be a positive int, got {nprocs!r}")
    if not command:
        raise ValueError("command is empty: give a script (or -m module) to run")
    port = master_port or free_port(master_addr)
    procs: list[subprocess.Popen] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def forward(signum: int, frame: object) -> None:
        _stop(procs, grace_s)
        sys.exit(128 + signum)

    for s in previous:
        signal.signal(s, forward)
    try:
        for rank in range(nprocs):
            procs.append(subprocess.Popen(
                [sys.executable, *command],
                env=child_env(rank, nprocs, master_addr, port),
                start_new_session=True,
            ))
        while True:
            codes = [p.poll() for p in procs]
            failed = next((c for c in codes if c not in (None, 0)), None)
            if failed is not None:
                _stop(procs, grace_s)
                return _exit_code(failed)
            if all(c == 0 for c in codes):
                return 0
            time.sleep(_POLL_S)
    finally:
        _stop(procs, grace_s)
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infercore.comm.launch",
        description="Run a script in N local processes with torch.distributed variables set.",
    )
    parser.add_argument("-n", "--nproc", type=int, required=True, help="number of ranks")
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds from SIGTERM to SIGKILL when stopping ranks")
    parser.add_argument("-m", "--module", action="store_true",
                        help="the command is a module name, run as python -m")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="script.py [args ...] (or module [args ...] with -m)")
    args = parser.parse_args(argv)
    command = (["-m"] if args.module else []) + list(args.command)
    if not args.command:
        parser.error("give a script to run (or -m module)")
    if args.nproc < 1:
        parser.error(f"-n must be >= 1, got {args.nproc}")
    return launch(command, args.nproc, master_addr=args.master_addr,
                  master_port=args.master_port, grace_s=args.grace)


if __name__ == "__main__":
    sys.exit(main())
