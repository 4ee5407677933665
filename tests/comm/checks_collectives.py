"""Collective checks run inside every rank (see dist_worker.py).

Each check builds every rank's input from (check, rank) seeds, so each rank computes the
single-process reference for the whole group locally and compares its own output.
"""

from __future__ import annotations

import time

import torch

from infercore.comm import CollectiveTimeoutError, Handle, init_communicator
from tests.helpers import REL_TOL

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64]
SHAPES = [(1,), (7,), (13, 5), (3, 1001)]


class Skip(Exception):
    """Raised by a check that does not apply (reported as skipped)."""


def make(rank: int, shape: tuple[int, ...], dtype: torch.dtype, salt: int,
         device: torch.device) -> torch.Tensor:
    """A deterministic, never-zero input of ``rank``."""
    g = torch.Generator().manual_seed(1000 * salt + rank)
    if dtype.is_floating_point:
        x = torch.randn(shape, generator=g, dtype=torch.float32) * 3 + 0.25
    else:
        x = torch.randint(-50, 50, shape, generator=g) * 2 + 1
    return x.to(dtype).to(device)


def inputs(ctx, shape, dtype, salt):
    return [make(r, shape, dtype, salt, ctx.device) for r in range(ctx.world)]


def magnitude(xs: list[torch.Tensor], op: str) -> torch.Tensor | None:
    """The scale of a sum's rounding error: the reduction of ``|x|`` (None: use ``ref``)."""
    return reduce_ref([x.abs() for x in xs], op) if op in ("sum", "avg") else None


def reduce_ref(xs: list[torch.Tensor], op: str) -> torch.Tensor:
    stack = torch.stack([x.double() for x in xs])
    if op == "sum":
        return stack.sum(0)
    if op == "avg":
        return stack.mean(0)
    if op == "prod":
        return stack.prod(0)
    return stack.amax(0) if op == "max" else stack.amin(0)


def same(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype,
         scale: torch.Tensor | None = None) -> None:
    """Exact for integers; for floats a per-dtype bound on ``||out - ref|| / ||scale||``.

    ``scale`` defaults to ``ref``; sums pass the sum of magnitudes, the size rounding
    errors of a sum scale with (cancellation can make ``ref`` itself tiny).
    """
    assert out.dtype == dtype, f"dtype {out.dtype} != {dtype}"
    if dtype.is_floating_point:
        assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
        assert torch.isfinite(out).all(), "result has NaN/Inf"
        denom = (ref if scale is None else scale).double().norm().item() or 1.0
        err = (out.double() - ref.double()).norm().item() / denom
        assert err <= REL_TOL[dtype], f"relative error {err:.3e} > {REL_TOL[dtype]:.1e}"
    else:
        assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
        assert torch.equal(out.cpu().long(), ref.cpu().long()), "integer result differs"


def check_all_reduce(ctx):
    salt = 0
    for dtype in DTYPES:
        ops = ["sum", "max", "min"] + (["avg"] if dtype.is_floating_point else [])
        for shape in SHAPES:
            for op in ops:
                salt += 1
                xs = inputs(ctx, shape, dtype, salt)
                x = xs[ctx.rank].clone()
                out = ctx.comm.all_reduce(x, op=op)
                assert out is x, "all_reduce must work in place and return its tensor"
                same(out, reduce_ref(xs, op), dtype, magnitude(xs, op))
    xs = [(x.abs() % 1 + 0.5) for x in inputs(ctx, (5, 3), torch.float32, 999)]
    same(ctx.comm.all_reduce(xs[ctx.rank].clone(), op="prod"), reduce_ref(xs, "prod"),
         torch.float32)


def check_all_reduce_non_contiguous(ctx):
    xs = inputs(ctx, (6, 10), torch.float32, 77)
    base = xs[ctx.rank].clone()
    view = base[:, ::2]
    out = ctx.comm.all_reduce(view)
    assert out is view
    cols = [x[:, ::2] for x in xs]
    same(base[:, ::2], reduce_ref(cols, "sum"), torch.float32, magnitude(cols, "sum"))
    same(base[:, 1::2], xs[ctx.rank][:, 1::2].double(), torch.float32)  # untouched columns


def check_all_gather(ctx):
    salt = 100
    for dtype in DTYPES:
        for shape, dim in [((7,), 0), ((3, 5), 0), ((3, 5), 1), ((2, 3, 7), -1), ((2, 3, 7), 1)]:
            salt += 1
            xs = inputs(ctx, shape, dtype, salt)
            out = ctx.comm.all_gather(xs[ctx.rank], dim=dim)
            ref = torch.cat(xs, dim=dim)
            assert out.is_contiguous()
            assert torch.equal(out, ref), f"all_gather {dtype} {shape} dim={dim} differs"


def check_reduce_scatter(ctx):
    w, salt = ctx.world, 200
    for dtype in DTYPES:
        for shape, dim in [((w * 3, 5), 0), ((w,), 0), ((4, w * 2 + 0, 3), 1), ((3, w * 5), -1)]:
            for op in ["sum", "max"]:
                salt += 1
                xs = inputs(ctx, shape, dtype, salt)
                out = ctx.comm.reduce_scatter(xs[ctx.rank], dim=dim, op=op)
                ref = reduce_ref(xs, op).chunk(w, dim=dim)[ctx.rank]
                scale = magnitude(xs, op)
                same(out, ref, dtype, None if scale is None else scale.chunk(w, dim=dim)[ctx.rank])
    xs = inputs(ctx, (w * 2, 3), torch.float32, 299)
    same(ctx.comm.reduce_scatter(xs[ctx.rank], op="avg"),
         reduce_ref(xs, "avg").chunk(w)[ctx.rank], torch.float32,
         magnitude(xs, "avg").chunk(w)[ctx.rank])


def check_broadcast(ctx):
    salt = 300
    for src in sorted({0, ctx.world - 1}):
        for dtype in DTYPES:
            for shape in SHAPES:
                salt += 1
                xs = inputs(ctx, shape, dtype, salt)
                x = xs[ctx.rank].clone()
                assert ctx.comm.broadcast(x, src) is x
                assert torch.equal(x, xs[src]), f"broadcast from {src} {dtype} {shape} differs"
    xs = inputs(ctx, (4, 6), torch.float16, 399)
    base = xs[ctx.rank].clone()
    ctx.comm.broadcast(base.t(), ctx.world - 1)  # non-contiguous view, in place
    assert torch.equal(base, xs[ctx.world - 1])


def check_all_to_all(ctx):
    w, r = ctx.world, ctx.rank
    for dtype in DTYPES:
        xs = inputs(ctx, (w * 3, 5), dtype, 400)
        out = ctx.comm.all_to_all(xs[r])
        ref = torch.cat([x.chunk(w)[r] for x in xs])
        assert torch.equal(out, ref), f"equal-split all_to_all {dtype} differs"
    # Unequal splits, some empty: rank i sends (i + j) % 3 rows to rank j.
    splits = [[(i + j) % 3 for j in range(w)] for i in range(w)]
    xs = [make(i, (sum(splits[i]), 4), torch.float32, 401 + i, ctx.device) for i in range(w)]
    blocks = [list(x.split(s)) for x, s in zip(xs, splits, strict=True)]
    ref = torch.cat([blocks[i][r] for i in range(w)])
    out_splits = [splits[i][r] for i in range(w)]
    exchanged = ctx.comm.all_to_all(xs[r], input_splits=splits[r])
    explicit = ctx.comm.all_to_all(xs[r], input_splits=splits[r], output_splits=out_splits)
    assert torch.equal(exchanged, ref) and torch.equal(explicit, ref), "uneven all_to_all"


def check_send_recv(ctx):
    """Ring exchange and pairs; even ranks send first, odd ranks receive first."""
    w, r = ctx.world, ctx.rank
    if w % 2:
        raise Skip("the exchange pattern needs an even number of ranks")
    nxt, prv = (r + 1) % w, (r - 1) % w
    for dtype in DTYPES:
        xs = inputs(ctx, (17, 3), dtype, 500)
        got = torch.empty_like(xs[r])
        if r % 2 == 0:
            handle = ctx.comm.send(xs[r], nxt, async_op=True)
            assert ctx.comm.recv(got, prv) is got
            assert handle.wait() is None
        else:
            handle = ctx.comm.recv(got, prv, async_op=True)
            ctx.comm.send(xs[r], nxt)
            assert handle.wait() is got
        assert torch.equal(got, xs[prv]), f"ring send/recv {dtype} differs"
    peer = r + 1 if r % 2 == 0 else r - 1
    xs = inputs(ctx, (9, 4), torch.float32, 501)
    got = torch.empty(4, 9, device=ctx.device).t()  # non-contiguous receive buffer
    if r % 2 == 0:
        ctx.comm.send(xs[r], peer)
        ctx.comm.recv(got, peer)
    else:
        ctx.comm.recv(got, peer)
        ctx.comm.send(xs[r], peer)
    assert torch.equal(got, xs[peer])


def check_async_handles(ctx):
    xs = inputs(ctx, (33, 65), torch.float32, 600)
    ys = inputs(ctx, (5, 7), torch.float32, 601)
    x = xs[ctx.rank].clone()
    h_reduce = ctx.comm.all_reduce(x, async_op=True)
    h_gather = ctx.comm.all_gather(ys[ctx.rank], dim=1, async_op=True)
    assert isinstance(h_reduce, Handle) and isinstance(h_gather, Handle)
    busy = make(ctx.rank, (128, 128), torch.float32, 602, ctx.device)
    busy = busy @ busy  # compute while the collectives run
    assert h_reduce.wait() is x
    gathered = h_gather.wait()
    assert h_gather.wait() is gathered and h_reduce.is_completed()
    same(x, reduce_ref(xs, "sum"), torch.float32, magnitude(xs, "sum"))
    assert torch.equal(gathered, torch.cat(ys, dim=1))
    assert torch.isfinite(busy).all()
    z = ys[ctx.rank].clone()
    h = ctx.comm.broadcast(z, 0, async_op=True)
    assert h.wait() is z and torch.equal(z, ys[0])
    rows = [t[: ctx.world * 4] for t in xs]
    parts = ctx.comm.reduce_scatter(rows[ctx.rank], async_op=True).wait()
    same(parts, reduce_ref(rows, "sum").chunk(ctx.world)[ctx.rank], torch.float32,
         magnitude(rows, "sum").chunk(ctx.world)[ctx.rank])
    ctx.comm.barrier()


def check_shape_mismatch_reported(ctx):
    if ctx.world == 1:
        raise Skip("one rank cannot disagree with itself")
    comm = init_communicator(ctx.backend, check_shapes=True, device=ctx.device)
    cols = 7 if ctx.rank == 1 else 8
    try:
        comm.all_gather(torch.ones(4, cols, device=ctx.device))
    except ValueError as err:
        text = str(err)
        assert "rank 0: float32[4, 8]" in text and "rank 1: float32[4, 7]" in text, text
        assert "all_gather" in text, text
    else:
        raise AssertionError("a shape mismatch across ranks was not reported")
    dtype = torch.float16 if ctx.rank == 0 else torch.float32
    try:
        comm.all_reduce(torch.ones(3, device=ctx.device, dtype=dtype))
    except ValueError as err:
        assert "rank 0: float16[3]" in str(err), str(err)
    else:
        raise AssertionError("a dtype mismatch across ranks was not reported")
    x = torch.full((3,), float(ctx.rank + 1), device=ctx.device)
    comm.all_reduce(x)  # still usable after reporting
    assert x.tolist() == [ctx.world * (ctx.world + 1) / 2] * 3
    comm.close()


def check_argument_errors(ctx):
    comm, w = ctx.comm, ctx.world
    cases = [
        (lambda: comm.all_reduce(torch.ones(2, device=ctx.device), op="mean"), "op='mean'"),
        (lambda: comm.all_reduce(torch.ones(2, dtype=torch.int64, device=ctx.device),
                                 op="avg"), "floating-point"),
        (lambda: comm.all_reduce([1.0]), "must be a torch.Tensor"),
        (lambda: comm.all_gather(torch.ones(2, device=ctx.device), dim=3), "dim=3"),
        (lambda: comm.broadcast(torch.ones(2, device=ctx.device), w), f"src={w}"),
        (lambda: comm.send(torch.ones(2, device=ctx.device), ctx.rank), "own rank"),
        (lambda: comm.all_to_all(torch.ones(w, device=ctx.device), input_splits=[1] * (w + 1)),
         "input_splits"),
    ]
    if w > 1:
        cases.append((lambda: comm.reduce_scatter(torch.ones(w + 1, device=ctx.device)),
                       "divisible by the world size"))
    for fn, needle in cases:
        try:
            fn()
        except (ValueError, TypeError) as err:
            assert needle in str(err), f"{needle!r} not in {err}"
        else:
            raise AssertionError(f"no error for the case expecting {needle!r}")


def run_timeout(ctx, timeout_s: float) -> dict[str, str]:
    """Rank 1 skips a collective; rank 0 must raise within the timeout, not hang.

    The ``pynccl`` backend enforces its timeout in ``barrier()`` (its other calls only
    enqueue GPU work), so that is the call rank 0 makes there; else an ``all_reduce``.
    """
    if ctx.rank != 0:
        time.sleep(timeout_s + 3)
        return {"skipped_collective": "ok"}
    if ctx.backend == "pynccl":
        name, call = "barrier", ctx.comm.barrier
    else:
        name, call = "all_reduce", lambda: ctx.comm.all_reduce(torch.ones(11, device=ctx.device))
    start = time.monotonic()
    try:
        call()
    except CollectiveTimeoutError as err:
        elapsed = time.monotonic() - start
        text = str(err)
        for needle in (name, "timed out", "rank 0 of 2", "[0, 1]"):
            assert needle in text, f"{needle!r} not in {text}"
        assert timeout_s - 0.5 <= elapsed <= timeout_s + 10, f"raised after {elapsed:.1f} s"
        return {"timeout_raised": "ok", "elapsed_s": f"{elapsed:.2f}", "message": text}
    raise AssertionError(f"{name} without its peer returned")


def check_cuda_graph(ctx):
    """all_reduce and all_gather captured in a CUDA graph, replayed on new inputs."""
    if ctx.device.type != "cuda":
        raise Skip("CUDA graphs need a GPU")
    r = ctx.rank
    x = make(r, (4099,), torch.float32, 700, ctx.device)
    y = make(r, (3, 5), torch.bfloat16, 700, ctx.device)
    ctx.comm.all_reduce(x.clone())  # connect before capture
    ctx.comm.all_gather(y)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ctx.comm.all_reduce(x)
        gathered = ctx.comm.all_gather(y, dim=1)
    for salt in (701, 702, 703):
        xs = inputs(ctx, (4099,), torch.float32, salt)
        ys = inputs(ctx, (3, 5), torch.bfloat16, salt)
        x.copy_(xs[r])
        y.copy_(ys[r])
        graph.replay()
        torch.cuda.synchronize()
        same(x, reduce_ref(xs, "sum"), torch.float32, magnitude(xs, "sum"))
        assert torch.equal(gathered, torch.cat(ys, dim=1)), "replayed all_gather differs"
    del graph
    torch.cuda.synchronize()


def check_side_stream(ctx):
    """A synchronous collective issued on a non-default stream runs on that stream."""
    if ctx.device.type != "cuda":
        raise Skip("streams need a GPU")
    xs = inputs(ctx, (1 << 20,), torch.bfloat16, 800)
    x = xs[ctx.rank].clone()
    side = torch.cuda.Stream(ctx.device)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ctx.comm.all_reduce(x)
    torch.cuda.current_stream().wait_stream(side)
    same(x, reduce_ref(xs, "sum"), torch.bfloat16, magnitude(xs, "sum"))


CHECKS = {
    "all_reduce": check_all_reduce,
    "all_reduce_non_contiguous": check_all_reduce_non_contiguous,
    "all_gather": check_all_gather,
    "reduce_scatter": check_reduce_scatter,
    "broadcast": check_broadcast,
    "all_to_all": check_all_to_all,
    "send_recv": check_send_recv,
    "async_handles": check_async_handles,
    "shape_mismatch_reported": check_shape_mismatch_reported,
    "argument_errors": check_argument_errors,
    "cuda_graph": check_cuda_graph,
    "side_stream": check_side_stream,
}
