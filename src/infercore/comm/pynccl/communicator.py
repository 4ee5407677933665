"""``comm.backend`` ``pynccl``: a communicator that calls libnccl directly through ctypes.

- Synchronous calls run on the **current CUDA stream** (pick another with
  ``with torch.cuda.stream(s):``), so they can be captured in a CUDA graph; run each
  kind of collective once before capturing (NCCL connects peers lazily).
- ``async_op=True`` runs on the communicator's own stream after the current one;
  ``handle.wait()`` makes the current stream wait for it (no host block).
- The ``ncclUniqueId`` goes from group rank 0 to the others through the torch process
  group: over gloo on the CPU when the group has a CPU backend, else over the group's
  own CUDA backend.
- :meth:`PyNcclCommunicator.barrier` waits at most ``timeout_s`` (600 s by default), then
  aborts the NCCL communicator and raises
  :class:`~infercore.comm.CollectiveTimeoutError`. Other calls only enqueue work: a
  missing peer shows up as a hang at the next host synchronization, so synchronize
  through ``barrier()`` where a peer may be missing.
"""

from __future__ import annotations

import ctypes
import math
import time
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from infercore.comm.base import BaseCommunicator
from infercore.comm.env import DEFAULT_TIMEOUT_S, backend_map, disable_nvls
from infercore.comm.interface import CommError
from infercore.comm.pynccl.library import NCCL_DTYPES, NCCL_OPS, NcclLibrary, NcclUniqueId

__all__ = ["PyNcclCommunicator"]


class _StreamWork:
    """Completion of work on the side stream: an event the current stream waits on."""

    __slots__ = ("_device", "_event")

    def __init__(self, event: torch.cuda.Event, device: torch.device) -> None:
        self._event = event
        self._device = device

    def wait(self) -> None:
        torch.cuda.current_stream(self._device).wait_event(self._event)

    def is_completed(self) -> bool:
        return self._event.query()


class PyNcclCommunicator(BaseCommunicator):
    """:class:`~infercore.comm.Communicator` on its own NCCL communicator (ctypes).

    Parameters
    ----------
    group : ProcessGroup
        The torch group whose ranks take part (used once, to send the unique id).
    device : torch.device
        The CUDA device of this rank.
    library : str, optional
        libnccl to load; see :func:`~infercore.comm.pynccl.find_nccl_library`.
    timeout_s : float, optional
        Longest wait of :meth:`barrier`.
    check_shapes : bool
        See :class:`~infercore.comm.CommConfig`.
    """

    backend_name: ClassVar[str] = "pynccl"
    native_avg: ClassVar[bool] = True

    def __init__(
        self,
        group: dist.ProcessGroup,
        *,
        device: torch.device,
        library: str | None = None,
        timeout_s: float | None = None,
        check_shapes: bool = False,
    ) -> None:
        if device.type != "cuda":
            raise ValueError(f"the pynccl backend needs a CUDA device, got device={device}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        disable_nvls()
        super().__init__(
            rank=dist.get_rank(group),
            world_size=dist.get_world_size(group),
            device=device,
            group_ranks=dist.get_process_group_ranks(group),
            timeout_s=timeout_s,
            check_shapes=check_shapes,
        )
        self._comm: ctypes.c_void_p | None = None
        self.lib = NcclLibrary.load(library)
        self.nccl_version = self.lib.version()
        uid = self._share_unique_id(group)
        comm = ctypes.c_void_p()
        with torch.cuda.device(device):
            self._guarded("ncclCommInitRank",
                          lambda: self.lib.CommInitRank(ctypes.byref(comm), self.world_size,
                                                        uid, self.rank))
            self._comm = comm
            self._side_stream = torch.cuda.Stream(device)
            self._one = torch.ones(1, device=device)
            # A first collective connects the ring before any graph capture.
            self.all_reduce(self._one.clone())
            torch.cuda.current_stream(device).synchronize()

    def _share_unique_id(self, group: dist.ProcessGroup) -> NcclUniqueId:
        uid = self.lib.unique_id() if self.rank == 0 else NcclUniqueId()
        payload = torch.tensor(list(bytes(uid.internal)), dtype=torch.uint8)
        on_cpu = "cpu" in backend_map(group)
        wire = payload if on_cpu else payload.to(self.device)
        dist.broadcast(wire, group=group, group_src=0)
        ctypes.memmove(uid.internal, bytes(wire.cpu().tolist()), ctypes.sizeof(uid.internal))
        return uid

    # -- helpers ---------------------------------------------------------------------------

    def _handle(self) -> ctypes.c_void_p:
        if self._comm is None:
            raise CommError("the NCCL communicator was closed or aborted; create a new one")
        return self._comm

    def _check_device(self, t: torch.Tensor, op: str) -> None:
        if t.device != self.device:
            raise ValueError(f"{op}: t is on {t.device}; this communicator runs on {self.device}")
        if t.dtype not in NCCL_DTYPES:
            allowed = ", ".join(str(d).removeprefix("torch.") for d in NCCL_DTYPES)
            raise TypeError(f"{op}: dtype {t.dtype} is not supported by NCCL (supports {allowed})")

    def _launch(self, async_op: bool, tensors: tuple[torch.Tensor, ...], call: Any) -> Any:
        """Run ``call(comm, stream)`` on the current stream, or on the side stream if async."""
        comm = self._handle()
        current = torch.cuda.current_stream(self.device)
        if not async_op:
            call(comm, current.cuda_stream)
            return None
        side = self._side_stream
        side.wait_stream(current)
        call(comm, side.cuda_stream)
        for t in tensors:
            t.record_stream(side)
        event = torch.cuda.Event()
        event.record(side)
        return _StreamWork(event, self.device)

    # -- primitives ------------------------------------------------------------------------

    def _all_reduce(self, t: torch.Tensor, op: str, async_op: bool) -> Any:
        def call(comm: ctypes.c_void_p, stream: int) -> None:
            self.lib.AllReduce(t.data_ptr(), t.data_ptr(), t.numel(), NCCL_DTYPES[t.dtype],
                               NCCL_OPS[op], comm, stream)

        return self._launch(async_op, (t,), call)

    def _all_gather(self, out: torch.Tensor, inp: torch.Tensor, async_op: bool) -> Any:
        def call(comm: ctypes.c_void_p, stream: int) -> None:
            self.lib.AllGather(inp.data_ptr(), out.data_ptr(), inp.numel(),
                               NCCL_DTYPES[inp.dtype], comm, stream)

        return self._launch(async_op, (out, inp), call)

    def _reduce_scatter(
        self, out: torch.Tensor, inp: torch.Tensor, op: str, async_op: bool
    ) -> Any:
        def call(comm: ctypes.c_void_p, stream: int) -> None:
            self.lib.ReduceScatter(inp.data_ptr(), out.data_ptr(), out.numel(),
                                   NCCL_DTYPES[inp.dtype], NCCL_OPS[op], comm, stream)

        return self._launch(async_op, (out, inp), call)

    def _broadcast(self, t: torch.Tensor, src: int, async_op: bool) -> Any:
        def call(comm: ctypes.c_void_p, stream: int) -> None:
            self.lib.Broadcast(t.data_ptr(), t.data_ptr(), t.numel(), NCCL_DTYPES[t.dtype], src,
                               comm, stream)

        return self._launch(async_op, (t,), call)

    def _all_to_all(
        self,
        out: torch.Tensor,
        inp: torch.Tensor,
        output_splits: list[int] | None,
        input_splits: list[int] | None,
        async_op: bool,
    ) -> Any:
        world = self.world_size
        ins = input_splits or [inp.shape[0] // world] * world
        outs = output_splits or [out.shape[0] // world] * world
        row = math.prod(inp.shape[1:])
        nbytes = row * inp.element_size()
        dtype = NCCL_DTYPES[inp.dtype]

        def call(comm: ctypes.c_void_p, stream: int) -> None:
            in_off = out_off = 0
            self.lib.GroupStart()
            try:
                for peer in range(world):
                    self.lib.Send(inp.data_ptr() + in_off * nbytes, ins[peer] * row, dtype, peer,
                                  comm, stream)
                    self.lib.Recv(out.data_ptr() + out_off * nbytes, outs[peer] * row, dtype,
                                  peer, comm, stream)
                    in_off += ins[peer]
                    out_off += outs[peer]
            finally:
                self.lib.GroupEnd()

        return self._launch(async_op, (out, inp), call)

    def _send(self, t: torch.Tensor, dst: int, async_op: bool) -> Any:
        def call(comm: ctypes.c_void_p, stream: int) -> None:
            self.lib.Send(t.data_ptr(), t.numel(), NCCL_DTYPES[t.dtype], dst, comm, stream)

        return self._launch(async_op, (t,), call)

    def _recv(self, t: torch.Tensor, src: int, async_op: bool) -> Any:
        def call(comm: ctypes.c_void_p, stream: int) -> None:
            self.lib.Recv(t.data_ptr(), t.numel(), NCCL_DTYPES[t.dtype], src, comm, stream)

        return self._launch(async_op, (t,), call)

    def _barrier(self) -> None:
        if torch.cuda.is_current_stream_capturing():
            raise CommError("barrier() blocks the host and cannot run in CUDA-graph capture")
        token = self._one.clone()
        self._all_reduce(token, "sum", False)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        limit = self.timeout_s or DEFAULT_TIMEOUT_S
        deadline = time.monotonic() + limit
        while not done.query():
            if time.monotonic() > deadline:
                self.abort()
                raise TimeoutError(f"barrier waited {limit:g} s; the NCCL communicator is aborted")
            time.sleep(1e-4)

    # -- lifetime --------------------------------------------------------------------------

    def abort(self) -> None:
        """Abort the NCCL communicator: pending work is dropped, peers see an error."""
        if self._comm is not None:
            comm, self._comm = self._comm, None
            self.lib.CommAbort(comm)

    def close(self) -> None:
        """Destroy the NCCL communicator (after its pending work); idempotent."""
        if self._comm is not None:
            comm, self._comm = self._comm, None
            torch.cuda.synchronize(self.device)
            self.lib.CommDestroy(comm)
