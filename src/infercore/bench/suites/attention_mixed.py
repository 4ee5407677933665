"""One paged call over a mixed batch (prefill chunks + decodes) against separate calls.

Prefill sequences hold 1024 cached tokens plus a 512-token chunk (the queries); decodes
hold 2048 tokens. GQA 32/8, d128, block 16, bf16. Bytes = K/V of every cached token +
q/out; FLOPs = 4 * heads * d * (visible keys summed over queries). The measure of this
suite is the ratio to ``separate`` (a prefill ``paged`` call plus a ``decode`` call).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from infercore.bench import Case, suite
from infercore.bench.suites.attention_common import check_rows, graphed, paged_setup
from infercore.ops.attention import PagedAttentionWrapper, decode, paged

HEADS, KV_HEADS, HEAD_DIM, BLOCK, DTYPE = 32, 8, 128, 16, torch.bfloat16
CHUNK, PREFIX, DECODE_CONTEXT = 512, 1024, 2048


def _case(num_prefill: int, num_decode: int, device: torch.device) -> Case:
    seq = [PREFIX + CHUNK] * num_prefill + [DECODE_CONTEXT] * num_decode
    lq = [CHUNK] * num_prefill + [1] * num_decode
    s = paged_setup(seq, lq, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                    block_size=BLOCK, dtype=DTYPE, device=device)
    out = torch.empty_like(s.q)
    n_pre = num_prefill * CHUNK
    q_pre, q_dec = s.q[:n_pre], s.q[n_pre:]
    out_pre, out_dec = out[:n_pre], out[n_pre:]
    cu_pre = s.cu_seqlens_q[: num_prefill + 1]
    bt, lens = s.block_tables, s.seq_lens

    def mixed() -> None:
        paged(s.q, *s.cache_args, s.cu_seqlens_q, CHUNK, out=out, skip_checks=True)

    def separate() -> None:
        paged(q_pre, s.k_cache, s.v_cache, bt[:num_prefill], lens[:num_prefill], cu_pre, CHUNK,
              out=out_pre, skip_checks=True)
        decode(q_dec, s.k_cache, s.v_cache, bt[num_prefill:], lens[num_prefill:], out=out_dec,
               skip_checks=True)

    wrapper = PagedAttentionWrapper(
        HEADS, KV_HEADS, HEAD_DIM, BLOCK, max_batch=len(seq), max_tokens=s.q.shape[0],
        max_blocks_per_seq=bt.shape[1], dtype=DTYPE, device=device, cuda_graph=True)
    wrapper.plan(s.cu_seqlens_q.cpu(), lens.cpu(), bt)

    def planned() -> None:
        wrapper.run(s.q, s.k_cache, s.v_cache, out=out, skip_checks=True)

    impls = {"infercore.mixed": mixed, "infercore.separate": separate,
             "infercore.planned+graph": graphed(planned)}

    def check() -> None:
        rows = [0, num_prefill, len(seq) - 1]
        for name, fn in impls.items():
            out.fill_(float("nan"))
            fn()
            check_rows(f"mixed batch, {name}", out, s, rows)

    chunk_keys = CHUNK * PREFIX + CHUNK * (CHUNK + 1) // 2
    visible = num_prefill * chunk_keys + num_decode * DECODE_CONTEXT
    flops = 4 * HEADS * HEAD_DIM * visible
    nbytes = s.kv_bytes() + 2 * s.q.numel() * s.q.element_size()
    return Case(f"{num_prefill}x{CHUNK} prefill + {num_decode} decodes", impls,
                peer="infercore.separate", bytes=nbytes, flops=flops, check=check)


@suite("attention_mixed",
       "paged attention over prefill chunks + decodes in one call vs separate calls; "
       "GQA 32/8, d128, bf16")
def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    mixes = [(4, 64)] if quick else [(4, 64), (1, 128), (8, 16)]
    for num_prefill, num_decode in mixes:
        yield _case(num_prefill, num_decode, device)
