"""Correctness of the quick ``attention_mixed`` case, one implementation per process.

Each implementation (``mixed``: one paged call; ``separate``: prefill paged call plus
decode; ``planned``: the cuda_graph wrapper, plan then run replayed from a CUDA graph)
runs in its own subprocess with ``CUDA_LAUNCH_BLOCKING=1``, so a device fault names the
launch that raised it and does not poison the others. Prints one line per
implementation: ``ok`` (every sequence within the suite's tolerance), or the error text.

Run from the project root: ``PYTHONPATH=src python3 benchmarks/attention_mixed_check.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

IMPLS = ("infercore.mixed", "infercore.separate", "infercore.planned+graph")


def _child(impl: str) -> None:
    import torch

    from infercore.bench.suites import attention_mixed as m
    from infercore.bench.suites.attention_common import check_rows, graphed, paged_setup
    from infercore.ops.attention import PagedAttentionWrapper, decode, paged

    num_prefill, num_decode, device = 4, 64, torch.device("cuda")
    seq = [m.PREFIX + m.CHUNK] * num_prefill + [m.DECODE_CONTEXT] * num_decode
    lq = [m.CHUNK] * num_prefill + [1] * num_decode
    s = paged_setup(seq, lq, num_heads=m.HEADS, num_kv_heads=m.KV_HEADS, head_dim=m.HEAD_DIM,
                    block_size=m.BLOCK, dtype=m.DTYPE, device=device)
    out = torch.empty_like(s.q)
    n_pre = num_prefill * m.CHUNK
    bt, lens = s.block_tables, s.seq_lens
    if impl == "infercore.mixed":
        def fn() -> None:
            paged(s.q, *s.cache_args, s.cu_seqlens_q, m.CHUNK, out=out, skip_checks=True)
    elif impl == "infercore.separate":
        def fn() -> None:
            paged(s.q[:n_pre], s.k_cache, s.v_cache, bt[:num_prefill], lens[:num_prefill],
                  s.cu_seqlens_q[: num_prefill + 1], m.CHUNK, out=out[:n_pre], skip_checks=True)
            decode(s.q[n_pre:], s.k_cache, s.v_cache, bt[num_prefill:], lens[num_prefill:],
                   out=out[n_pre:], skip_checks=True)
    else:
        wrapper = PagedAttentionWrapper(
            m.HEADS, m.KV_HEADS, m.HEAD_DIM, m.BLOCK, max_batch=len(seq),
            max_tokens=s.q.shape[0], max_blocks_per_seq=bt.shape[1], dtype=m.DTYPE,
            device=device, cuda_graph=True)
        wrapper.plan(s.cu_seqlens_q.cpu(), lens.cpu(), bt)
        fn = graphed(lambda: wrapper.run(s.q, s.k_cache, s.v_cache, out=out, skip_checks=True))
    out.fill_(float("nan"))
    fn()
    torch.cuda.synchronize()
    # The suite's check reads three sequences; here every one is compared.
    check_rows(impl, out, s, list(range(len(seq))))
    print(f"{impl}: ok")


def main() -> int:
    if len(sys.argv) == 2:
        _child(sys.argv[1])
        return 0
    env = dict(os.environ, CUDA_LAUNCH_BLOCKING="1")
    failed = 0
    for impl in IMPLS:
        try:
            proc = subprocess.run([sys.executable, __file__, impl], env=env, capture_output=True,
                                  text=True, timeout=300)
        except subprocess.TimeoutExpired:
            print(f"{impl}: error: timed out after 300 s")
            failed += 1
            continue
        if proc.returncode == 0:
            print(proc.stdout.strip().splitlines()[-1])
            continue
        failed += 1
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        where = [ln.strip() for ln in lines if ln.strip().startswith("File ")][-3:]
        print(f"{impl}: error: {lines[-1] if lines else proc.returncode}")
        for ln in where:
            print(f"    {ln}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
