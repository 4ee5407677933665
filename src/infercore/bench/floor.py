"""Read floor: the least time this GPU takes to read a given number of bytes.

The copy ceiling (:func:`infercore.bench.measure_ceilings`) is measured on 1 GiB; reads
of a few tens of MB per call reach less (on an H200, 29 MB at 3.3 TB/s and 59 MB at
3.8 TB/s against a 4.2 TB/s copy ceiling), so a decode kernel's fraction of the copy
ceiling understates how close it is to what the hardware allows at its size.
:func:`read_floor` gives a suite row that reads the same number of bytes, from as many
rotating copies and timed the same way (CUDA-graph replays, see
:mod:`infercore.bench.graphs`), with the fastest of a few plain streaming read kernels
(:data:`READ_CONFIGS`): the time a kernel moving those bytes could reach. Its ratio to a
peer is the most any implementation that must read those bytes could gain over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from infercore.bench.graphs import COPIES, Rotation, replay_us

__all__ = ["READ_CONFIGS", "ReadConfig", "read_floor", "read_out_size", "read_words"]


@dataclass(frozen=True)
class ReadConfig:
    """One launch of the read kernel: ``block`` 32-bit words per program and step,
    ``num_warps``, and ``programs_per_sm`` resident programs looping over the buffer
    (``None``: one program per block, no loop)."""

    block: int
    num_warps: int
    programs_per_sm: int | None


#: Candidate launches; the floor is the fastest of them. On an H200 (29 and 59 MB, graphs
#: over 8 copies) one block per program ran fastest (1024 and 2048 words within 2%), 4
#: resident programs per SM of 4096 words within 5%; 2 per SM (4096 or 8192 words) ran
#: 18-55% slower and are left out.
READ_CONFIGS = (
    ReadConfig(1024, 4, None),
    ReadConfig(2048, 4, None),
    ReadConfig(4096, 8, 4),
)


@triton.jit
def _read_kernel(src, out, n_words, BLOCK: tl.constexpr):
    """Each program xors every ``BLOCK``-word block ``pid + i * programs`` of ``src`` into
    one word, written to ``out[pid]`` (so no load can be dropped)."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(pid * BLOCK, n_words, programs * BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc ^= tl.load(src + offs, mask=offs < n_words, other=0)
    tl.store(out + pid, tl.xor_sum(acc, axis=0))


def read_out_size(n_words: int, config: ReadConfig, device: torch.device) -> int:
    """Words of ``out`` (programs launched) that :func:`read_words` writes for
    ``n_words`` under ``config``."""
    blocks = triton.cdiv(n_words, config.block)
    if config.programs_per_sm is None:
        return blocks
    # Off CUDA (the interpreter) one "SM": the programs loop as they do on a GPU.
    sms = (torch.cuda.get_device_properties(device).multi_processor_count
           if device.type == "cuda" else 1)
    return min(blocks, sms * config.programs_per_sm)


def read_words(src: torch.Tensor, out: torch.Tensor | None = None,
               config: ReadConfig = READ_CONFIGS[0]) -> torch.Tensor:
    """Read every word of ``src`` (int32, contiguous, any shape) once.

    Returns ``out`` (int32 ``[programs]``): program ``p``'s xor of the blocks it read;
    the xor of all of ``out`` is the xor of every word of ``src``. ``out`` is allocated
    when not given (pass one of :func:`read_out_size` words to capture in a graph).
    """
    if src.dtype != torch.int32 or not src.is_contiguous():
        raise ValueError(f"src: expected a contiguous int32 tensor, got {src.dtype} "
                         f"{'contiguous' if src.is_contiguous() else 'strided'}")
    n_words = src.numel()
    if n_words == 0:
        raise ValueError("src: expected at least one word, got an empty tensor")
    programs = read_out_size(n_words, config, src.device)
    if out is None:
        out = torch.empty(programs, dtype=torch.int32, device=src.device)
    elif out.dtype != torch.int32 or out.numel() < programs:
        raise ValueError(f"out: expected int32 with at least {programs} words, got "
                         f"{out.dtype} with {out.numel()}")
    _read_kernel[(programs,)](src, out, n_words, BLOCK=config.block,
                              num_warps=config.num_warps)
    return out[:programs]


def _rotation(buffers: list[torch.Tensor], config: ReadConfig) -> Rotation:
    size = read_out_size(buffers[0].numel(), config, buffers[0].device)
    outs = [torch.empty(size, dtype=torch.int32, device=b.device) for b in buffers]
    return Rotation([lambda b=b, o=o: read_words(b, o, config)
                     for b, o in zip(buffers, outs, strict=True)])


def read_floor(nbytes: int, device: torch.device, *, copies: int = COPIES,
               configs: tuple[ReadConfig, ...] = READ_CONFIGS) -> tuple[Rotation, ReadConfig]:
    """A rotation that reads ``nbytes`` (rounded up to whole words) from each of
    ``copies`` distinct buffers in turn, with the fastest of ``configs``.

    On CUDA every config is timed as :func:`~infercore.bench.graphs.replay_us` of the
    rotation and the fastest is returned with its config; elsewhere the first config.
    """
    if nbytes <= 0:
        raise ValueError(f"nbytes: expected a positive byte count, got {nbytes}")
    if not configs:
        raise ValueError("configs: expected at least one ReadConfig, got none")
    words = triton.cdiv(nbytes, 4)
    buffers = [torch.randint(-2**31, 2**31 - 1, (words,), dtype=torch.int32, device=device)
               for _ in range(copies)]
    best, best_us = configs[0], None
    if device.type == "cuda" and len(configs) > 1:
        for config in configs:
            rot = _rotation(buffers, config)
            us = replay_us(rot.sequence())
            if best_us is None or us < best_us:
                best, best_us = config, us
    return _rotation(buffers, best), best
