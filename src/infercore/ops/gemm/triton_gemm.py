"""Triton GEMM backend: tiled, grouped program order; persistent TMA kernel on Hopper;
split-K for grids of few tiles."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch

from infercore.ops.common import TritonBackend
from infercore.ops.gemm.triton_configs import (
    GemmConfig,
    device_class,
    fit_shared_memory,
    m_class,
    pick_config,
    shared_memory_bytes,
)
from infercore.ops.gemm.triton_launch import launch_matmul


def gemm_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: GemmConfig | None = None,
) -> torch.Tensor:
    """``out = a @ b + bias`` through the Triton kernels; ``config`` overrides the table."""
    launch_matmul(a, b, out, bias=bias, config=config)
    return out


def _shared_memory_limit(device: torch.device) -> int:
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "shared_memory_per_block_optin", 99 * 1024))


#: K splits tuned per M class, the outer loop of the candidate list (``None``: planned
#: from the SM count). Initial choice, to be tuned.
TUNE_SPLITS = {"small": (None, 1, 4, 8), "medium": (None, 1, 2, 4), "large": (1, 2, 4)}


def tune_space(m: int, in_bytes: int, out_bytes: int, device: torch.device) -> list[GemmConfig]:
    """Candidate configurations for ``M = m`` rows: K splits, tiles sized to M (16-row
    tiles for decode-like M), K depth, stages, and on Hopper TMA with or without
    persistence. Configurations that do not fit the device's shared memory are left out."""
    cls = device_class(device)
    if cls == "interpreter":
        return [GemmConfig(32, 32, 32, group_m=2), GemmConfig(64, 64, 64, group_m=2,
                                                              persistent=True),
                GemmConfig(32, 32, 32, group_m=2, split_k=2)]
    hopper = cls == "sm90"
    mc = m_class(m)
    if mc == "small":
        tiles = ((16,), (32, 64, 128), (64, 128, 256), (3, 4, 5), (False,))
    elif mc == "medium":
        tiles = ((32, 64, 128), (64, 128, 256), (64, 128), (3, 4), (False,))
    else:
        tiles = ((64, 128), (128, 256), (64, 128), (3, 4), (False, True))
    limit = _shared_memory_limit(device) - 1024
    found: list[GemmConfig] = []
    for split_k, bm, bn, bk, stages, persistent in itertools.product(TUNE_SPLITS[mc], *tiles):
        warps = 8 if bm * bn >= 128 * 128 else 4
        cfg = GemmConfig(bm, bn, bk, num_warps=warps, num_stages=stages,
                         persistent=persistent, tma=hopper, split_k=split_k)
        if hopper:
            cfg = fit_shared_memory(cfg, in_bytes, out_bytes, limit)
        elif shared_memory_bytes(cfg, in_bytes, 0) > limit:  # the pointer kernel
            continue
        if cfg not in found:
            found.append(cfg)
    return found


class TritonGemm(TritonBackend):
    family = "gemm"
    name = "triton"
    priority = 100
    description = (
        "Triton tiles in grouped order; persistent + TMA descriptors on Hopper; "
        "CUDA (CPU under TRITON_INTERPRET=1)"
    )
    tune_config_class = GemmConfig

    def tune_space(self, inputs: Any) -> list[dict[str, Any]]:
        a, out = inputs.a, inputs.out
        default = pick_config(a.shape[0], a.element_size() * 8, a.device, out.shape[1])
        return [dataclasses.asdict(c)
                for c in tune_space(a.shape[0], a.element_size(), out.element_size(), a.device)
                if c != default]

    def run(
        self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
        config: GemmConfig | None = None,
    ) -> None:
        gemm_triton(a, b, bias, out, config)
