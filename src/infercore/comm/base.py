"""What every communicator backend shares (semantics: :mod:`infercore.comm.interface`).

Subclasses implement the ``_all_reduce`` ... ``_barrier`` primitives on contiguous
tensors; this module validates arguments, reshapes for ``dim != 0``, runs the optional
cross-rank shape check and turns backend errors into :class:`CommError` /
:class:`CollectiveTimeoutError` messages that name the op and the ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NoReturn

import torch

from infercore.comm.interface import REDUCE_OPS, CollectiveTimeoutError, CommError, Handle

__all__ = ["BaseCommunicator"]

# Per-rank metadata of the shape check: dtype, ndim, op argument, numel, then the shape.
_META_DIMS = 12
_META_LEN = 4 + _META_DIMS
_DTYPES = (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8,
    torch.int16, torch.int32, torch.int64, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2,
)


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


class _What:
    """``"<call> of <dtype>[shape]"`` for messages, formatted only when one is raised."""

    __slots__ = ("call", "t")

    def __init__(self, call: str, t: torch.Tensor) -> None:
        self.call = call
        self.t = t

    def __str__(self) -> str:
        return f"{self.call} of {_describe(self.t)}"


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _norm_dim(t: torch.Tensor, dim: int, op: str) -> int:
    if t.dim() == 0:
        raise ValueError(f"{op}: t must have at least one dimension, got a 0-dim tensor")
    if not isinstance(dim, int) or not -t.dim() <= dim < t.dim():
        raise ValueError(f"{op}: dim={dim!r} is out of range for a tensor of shape {list(t.shape)}")
    return dim % t.dim()


def _format_ranks(ranks: Sequence[int]) -> str:
    ranks = list(ranks)
    if len(ranks) <= 16:
        return str(ranks)
    return f"[{ranks[0]}, {ranks[1]}, ..., {ranks[-1]}] ({len(ranks)} ranks)"


def _is_timeout(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, TimeoutError) or "timed out" in text or "timeout" in text


class BaseCommunicator:
    """Argument handling and error reporting shared by the backends.

    Subclasses set ``backend_name`` and ``native_avg`` and implement the primitives, which
    receive contiguous tensors and return an object with ``wait()`` (and optionally
    ``is_completed()``) when ``async_op`` is true, else ``None``.
    """

    backend_name: ClassVar[str]
    #: Whether the primitives take ``op="avg"``; else it runs as a sum divided afterwards.
    native_avg: ClassVar[bool] = True

    def __init__(
        self,
        *,
        rank: int,
        world_size: int,
        device: torch.device,
        group_ranks: Sequence[int],
        timeout_s: float | None,
        check_shapes: bool,
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.group_ranks = list(group_ranks)
        self.timeout_s = timeout_s
        self.check_shapes = check_shapes

    # -- primitives (subclasses) -----------------------------------------------------------

    def _all_reduce(self, t: torch.Tensor, op: str, async_op: bool) -> Any:
        raise NotImplementedError

    def _all_gather(self, out: torch.Tensor, inp: torch.Tensor, async_op: bool) -> Any:
        raise NotImplementedError

    def _reduce_scatter(
        self, out: torch.Tensor, inp: torch.Tensor, op: str, async_op: bool
    ) -> Any:
        raise NotImplementedError

    def _broadcast(self, t: torch.Tensor, src: int, async_op: bool) -> Any:
        raise NotImplementedError

    def _all_to_all(
        self,
        out: torch.Tensor,
        inp: torch.Tensor,
        output_splits: list[int] | None,
        input_splits: list[int] | None,
        async_op: bool,
    ) -> Any:
        raise NotImplementedError

    def _send(self, t: torch.Tensor, dst: int, async_op: bool) -> Any:
        raise NotImplementedError

    def _recv(self, t: torch.Tensor, src: int, async_op: bool) -> Any:
        raise NotImplementedError

    def _barrier(self) -> None:
        raise NotImplementedError

    def _check_device(self, t: torch.Tensor, op: str) -> None:
        """Raise ``ValueError`` for a tensor this backend cannot move (default: none)."""

    def close(self) -> None:
        """Release the backend's resources (the process group itself is left alone)."""

    def __enter__(self) -> BaseCommunicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} rank={self.rank} world_size={self.world_size} "
            f"device={self.device}>"
        )

    # -- shared machinery ------------------------------------------------------------------

    def _fail(self, what: object, err: BaseException) -> NoReturn:
        lines = str(err).strip().splitlines()
        cause = lines[0] if lines else type(err).__name__
        where = (
            f"on rank {self.rank} of {self.world_size} "
            f"(group ranks {_format_ranks(self.group_ranks)}, backend {self.backend_name})"
        )
        if _is_timeout(err):
            limit = f" after {self.timeout_s:g} s" if self.timeout_s else ""
            raise CollectiveTimeoutError(
                f"{what} timed out{limit} {where}: not every rank joined it; every rank must "
                f"call the same collectives in the same order. Cause: {cause}"
            ) from err
        raise CommError(f"{what} failed {where}: {cause}") from err

    def _guarded(self, what: object, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (RuntimeError, TimeoutError) as err:
            if isinstance(err, CommError) and str(what) in str(err):
                raise
            self._fail(what, err)

    def _run(
        self,
        what: object,
        launch: Callable[[], Any],
        finalize: Callable[[], Any],
        async_op: bool,
    ) -> Any:
        work = self._guarded(what, launch)
        if not async_op:
            return finalize()
        query = getattr(work, "is_completed", None)
        return Handle(lambda: self._guarded(what, work.wait), finalize, query)

    def _reduce_op(self, op: str, t: torch.Tensor, what: str) -> str:
        if op not in REDUCE_OPS:
            raise ValueError(f"{what}: op={op!r} is not a reduction; use one of {REDUCE_OPS}")
        if op == "avg" and not (t.is_floating_point() or t.is_complex()):
            raise ValueError(f"{what}: op='avg' needs a floating-point tensor, got {t.dtype}")
        return op

    def _check_rank(self, name: str, value: int, what: str, *, not_self: bool = False) -> None:
        if not isinstance(value, int) or not 0 <= value < self.world_size:
            raise ValueError(
                f"{what}: {name}={value!r} must be a rank of the group, 0..{self.world_size - 1}"
            )
        if not_self and value == self.rank:
            raise ValueError(f"{what}: {name}={value} is this process's own rank")

    def _prepare(self, name: str, t: object, what: str) -> torch.Tensor:
        t = _check_tensor(name, t)
        self._check_device(t, what)
        return t

    def _check_same(self, what: object, t: torch.Tensor, arg_name: str | None, arg: int,
                    *, leading_may_differ: bool = False) -> None:
        """The optional cross-rank check: every rank's dtype, shape and argument agree."""
        if not self.check_shapes or self.world_size == 1:
            return
        if t.is_cuda and torch.cuda.is_current_stream_capturing():
            return
        meta = [_DTYPES.index(t.dtype) if t.dtype in _DTYPES else -2, t.dim(), arg, t.numel()]
        shape = list(t.shape[:_META_DIMS])
        meta += shape + [-1] * (_META_DIMS - len(shape))
        local = torch.tensor(meta, dtype=torch.int64).to(self.device)
        gathered = torch.empty(self.world_size * _META_LEN, dtype=torch.int64, device=self.device)
        self._guarded(f"{what} (shape check)", lambda: self._all_gather(gathered, local, False))
        rows = gathered.view(self.world_size, _META_LEN).tolist()

        def key(row: list[int]) -> list[int]:
            if leading_may_differ:  # dtype, ndim, argument and trailing dims must agree
                return row[:3] + row[5:]
            return row

        if all(key(row) == key(rows[0]) for row in rows):
            return
        listing = []
        for rank, row in enumerate(rows):
            dtype = str(_DTYPES[row[0]]).removeprefix("torch.") if row[0] >= 0 else "other"
            dims = row[4 : 4 + min(row[1], _META_DIMS)]
            shown = REDUCE_OPS[row[2]] if arg_name == "op" else row[2]
            arg_text = f" {arg_name}={shown}" if arg_name else ""
            listing.append(f"rank {rank}: {dtype}{dims}{arg_text}")
        rule = "dtype and trailing dims" if leading_may_differ else "dtype and shape"
        if arg_name:
            rule += f" and {arg_name}"
        raise ValueError(
            f"{what}: ranks disagree on the input ({'; '.join(listing)}); every rank must "
            f"pass the same {rule}"
        )

    # -- public collectives ----------------------------------------------------------------

    def all_reduce(self, t: torch.Tensor, op: str = "sum", *, async_op: bool = False) -> Any:
        """Reduce ``t`` over all ranks, in place.

        Parameters
        ----------
        t : Tensor, any shape
            Same dtype and shape on every rank; overwritten with the result.
        op : str
            ``"sum"``, ``"prod"``, ``"max"``, ``"min"`` or ``"avg"`` (floating point only).
        async_op : bool
            Return a :class:`Handle` instead of waiting.

        Returns
        -------
        Tensor
            ``t`` itself (or a :class:`Handle` whose ``wait()`` returns it).
        """
        what = f"all_reduce(op={op!r})"
        t = self._prepare("t", t, what)
        op = self._reduce_op(op, t, what)
        what = _What(what, t)
        self._check_same(what, t, "op", REDUCE_OPS.index(op))
        buf = t if t.is_contiguous() else t.contiguous()
        wire_op = op if op != "avg" or self.native_avg else "sum"

        def finalize() -> torch.Tensor:
            if wire_op != op:
                buf.div_(self.world_size)
            return t if buf is t else t.copy_(buf)

        return self._run(what, lambda: self._all_reduce(buf, wire_op, async_op), finalize,
                         async_op)

    def all_gather(self, t: torch.Tensor, dim: int = 0, *, async_op: bool = False) -> Any:
        """Concatenate every rank's ``t`` along ``dim``, in rank order.

        Parameters
        ----------
        t : Tensor ``[..., n, ...]``
            Same dtype and shape on every rank.
        dim : int
            Dimension to concatenate along; ``dim != 0`` costs a copy in and out.

        Returns
        -------
        Tensor ``[..., world_size * n, ...]``, new and contiguous (or a :class:`Handle`).
        """
        what = f"all_gather(dim={dim})"
        t = self._prepare("t", t, what)
        dim = _norm_dim(t, dim, what)
        what = _What(f"all_gather(dim={dim})", t)
        self._check_same(what, t, "dim", dim)
        inp = t.movedim(dim, 0).contiguous()
        out = torch.empty((self.world_size * inp.shape[0], *inp.shape[1:]), dtype=t.dtype,
                          device=t.device)

        def finalize() -> torch.Tensor:
            return out if dim == 0 else out.movedim(0, dim).contiguous()

        return self._run(what, lambda: self._all_gather(out, inp, async_op), finalize, async_op)

    def reduce_scatter(
        self, t: torch.Tensor, dim: int = 0, *, op: str = "sum", async_op: bool = False
    ) -> Any:
        """Reduce ``t`` over all ranks and keep this rank's slice along ``dim``.

        Parameters
        ----------
        t : Tensor ``[..., n, ...]``
            Same dtype and shape on every rank; ``n`` divisible by ``world_size``.
        dim : int
            Dimension to split; rank ``r`` gets rows ``r*n/world .. (r+1)*n/world``.
        op : str
            As in :meth:`all_reduce`.

        Returns
        -------
        Tensor ``[..., n / world_size, ...]``, new and contiguous (or a :class:`Handle`).
        """
        what = f"reduce_scatter(dim={dim}, op={op!r})"
        t = self._prepare("t", t, what)
        dim = _norm_dim(t, dim, what)
        op = self._reduce_op(op, t, what)
        if t.shape[dim] % self.world_size:
            raise ValueError(
                f"{what}: t.shape[{dim}] = {t.shape[dim]} must be divisible by the world "
                f"size {self.world_size}"
            )
        what = _What(f"reduce_scatter(dim={dim}, op={op!r})", t)
        self._check_same(what, t, "op", REDUCE_OPS.index(op))
        inp = t.movedim(dim, 0).contiguous()
        out = torch.empty((inp.shape[0] // self.world_size, *inp.shape[1:]), dtype=t.dtype,
                          device=t.device)
        wire_op = op if op != "avg" or self.native_avg else "sum"

        def finalize() -> torch.Tensor:
            if wire_op != op:
                out.div_(self.world_size)
            return out if dim == 0 else out.movedim(0, dim).contiguous()

        return self._run(what, lambda: self._reduce_scatter(out, inp, wire_op, async_op),
                         finalize, async_op)

    def broadcast(self, t: torch.Tensor, src: int, *, async_op: bool = False) -> Any:
        """Copy rank ``src``'s ``t`` into ``t`` on every rank, in place.

        Parameters
        ----------
        t : Tensor, any shape
            Same dtype and shape on every rank.
        src : int
            Rank within the group whose tensor is sent.

        Returns
        -------
        Tensor
            ``t`` itself (or a :class:`Handle`).
        """
        what = f"broadcast(src={src})"
        t = self._prepare("t", t, what)
        self._check_rank("src", src, what)
        what = _What(f"broadcast(src={src})", t)
        self._check_same(what, t, "src", src)
        buf = t if t.is_contiguous() else t.contiguous()

        def finalize() -> torch.Tensor:
            return t if buf is t else t.copy_(buf)

        return self._run(what, lambda: self._broadcast(buf, src, async_op), finalize, async_op)

    def _splits(self, name: str, splits: Sequence[int], total: int | None, what: str) -> list[int]:
        values = list(splits)
        if len(values) != self.world_size or any(
            not isinstance(v, int) or v < 0 for v in values
        ):
            raise ValueError(
                f"{what}: {name} must be {self.world_size} non-negative ints (one per rank), "
                f"got {values!r}"
            )
        if total is not None and sum(values) != total:
            raise ValueError(f"{what}: {name} sum to {sum(values)}, but t.shape[0] = {total}")
        return values

    def all_to_all(
        self,
        t: torch.Tensor,
        input_splits: Sequence[int] | None = None,
        output_splits: Sequence[int] | None = None,
        *,
        async_op: bool = False,
    ) -> Any:
        """Exchange row blocks along dim 0: block ``j`` of rank ``i`` goes to rank ``j``.

        Parameters
        ----------
        t : Tensor ``[n, ...]``
            Trailing dims and dtype equal on every rank.
        input_splits : list of int, optional
            Rows sent to each rank (sum ``n``); ``None``: ``n / world_size`` each.
        output_splits : list of int, optional
            Rows received from each rank. ``None`` with ``input_splits`` given: learned
            by exchanging the splits first (one more small all-to-all and a host sync;
            not allowed in CUDA-graph capture); ``None`` without: equal splits.

        Returns
        -------
        Tensor ``[sum(output_splits), ...]``, new (or a :class:`Handle`); rows from rank
        ``j`` come ``j``-th.
        """
        what = "all_to_all"
        t = self._prepare("t", t, what)
        if t.dim() == 0:
            raise ValueError(f"{what}: t must have at least one dimension, got a 0-dim tensor")
        n = t.shape[0]
        ins = None if input_splits is None else self._splits("input_splits", input_splits, n, what)
        outs = None if output_splits is None else self._splits("output_splits", output_splits,
                                                               None, what)
        if ins is None and n % self.world_size:
            raise ValueError(
                f"{what}: t.shape[0] = {n} must be divisible by the world size "
                f"{self.world_size} when input_splits is not given"
            )
        what = _What("all_to_all", t)
        self._check_same(what, t, None, 0, leading_may_differ=True)
        inp = t.contiguous()
        if ins is not None and outs is None:
            sent = torch.tensor(ins, dtype=torch.int64).to(self.device)
            got = torch.empty_like(sent)
            self._guarded(f"{what} (split exchange)",
                          lambda: self._all_to_all(got, sent, None, None, False))
            outs = [int(v) for v in got.tolist()]
        if outs is not None and ins is None:
            ins = [n // self.world_size] * self.world_size
        rows = n if outs is None else sum(outs)
        out = torch.empty((rows, *inp.shape[1:]), dtype=t.dtype, device=t.device)
        return self._run(what, lambda: self._all_to_all(out, inp, outs, ins, async_op),
                         lambda: out, async_op)

    def send(self, t: torch.Tensor, dst: int, *, async_op: bool = False) -> Any:
        """Send ``t`` to rank ``dst``, which calls :meth:`recv` with the same shape and dtype.

        Returns ``None`` (or a :class:`Handle` whose ``wait()`` returns ``None``).
        """
        what = f"send(dst={dst})"
        t = self._prepare("t", t, what)
        self._check_rank("dst", dst, what, not_self=True)
        what = _What(f"send(dst={dst})", t)
        buf = t.contiguous()
        return self._run(what, lambda: self._send(buf, dst, async_op), lambda: None, async_op)

    def recv(self, t: torch.Tensor, src: int, *, async_op: bool = False) -> Any:
        """Receive into ``t`` (in place) what rank ``src`` sends with :meth:`send`.

        Returns ``t`` (or a :class:`Handle` whose ``wait()`` returns it).
        """
        what = f"recv(src={src})"
        t = self._prepare("t", t, what)
        self._check_rank("src", src, what, not_self=True)
        what = _What(f"recv(src={src})", t)
        buf = t if t.is_contiguous() else torch.empty_like(t, memory_format=torch.contiguous_format)

        def finalize() -> torch.Tensor:
            return t if buf is t else t.copy_(buf)

        return self._run(what, lambda: self._recv(buf, src, async_op), finalize, async_op)

    def barrier(self) -> None:
        """Block until every rank of the group reaches its barrier."""
        self._guarded("barrier", self._barrier)
