"""Decode attention over a paged cache against SDPA on contiguous KV.

GQA 32/8, head_dim 128, block 16, bf16, blocks scattered over the cache. Bytes = K and V
of every cached token read once + q read + out written. ``infercore`` and ``sdpa`` are
replays of CUDA graphs (no launch overhead on either side); ``*.eager`` are plain calls.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from infercore.bench import Case, suite
from infercore.bench.suites.attention_common import check_rows, graphed, paged_setup
from infercore.ops.attention import decode

HEADS, KV_HEADS, HEAD_DIM, BLOCK, DTYPE = 32, 8, 128, 16, torch.bfloat16
#: Cases whose paged + contiguous KV copies exceed this many bytes are skipped.
MEMORY_LIMIT = 40e9


def _case(batch: int, context: int, device: torch.device) -> Case:
    setup = paged_setup([context] * batch, [1] * batch, num_heads=HEADS, num_kv_heads=KV_HEADS,
                        head_dim=HEAD_DIM, block_size=BLOCK, dtype=DTYPE, device=device)
    q = setup.q
    out = torch.empty_like(q)
    # The peer's contiguous KV, [batch, kv_heads, context, head_dim].
    k = torch.randn(batch, KV_HEADS, context, HEAD_DIM, device=device, dtype=DTYPE)
    v = torch.randn_like(k)
    q4 = q.view(batch, HEADS, 1, HEAD_DIM)

    def ours() -> None:
        decode(q, *setup.cache_args, out=out, skip_checks=True)

    def sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)

    impls = {"infercore": graphed(ours), "infercore.eager": ours, "sdpa.eager": sdpa}
    try:
        impls["sdpa"] = graphed(sdpa)
    except Exception:  # the harness reports the eager peer's error, if any
        impls["sdpa"] = sdpa
    nbytes = setup.kv_bytes() + 2 * q.numel() * q.element_size()

    def check() -> None:
        out.fill_(float("nan"))
        impls["infercore"]()
        check_rows(f"decode b{batch} ctx{context} (graph)", out, setup, [0, batch - 1])
        decode(q, *setup.cache_args, out=out, skip_checks=True)
        check_rows(f"decode b{batch} ctx{context}", out, setup, [0, batch - 1])

    return Case(f"b{batch} ctx{context}", impls, peer="sdpa", bytes=nbytes, check=check)


@suite("attention_decode",
       "paged decode, GQA 32/8, d128, block 16, bf16: bytes = KV read + q/out; peer SDPA on "
       "contiguous KV")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    grid = [(64, 4096), (1, 32768)] if quick else [
        (b, c) for b in (1, 16, 64, 256) for c in (512, 4096, 32768)]
    for batch, context in grid:
        kv_bytes = batch * context * KV_HEADS * HEAD_DIM * 2 * 2
        if 2 * kv_bytes > MEMORY_LIMIT:
            continue
        yield _case(batch, context, device)
        torch.cuda.empty_cache()
