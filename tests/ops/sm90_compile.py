"""Compile the Triton matmul kernels for Hopper (sm90) without a GPU; print one JSON line
per kernel: whether the PTX uses wgmma and TMA, its float32 adds and its shared memory.

Run in a process without ``TRITON_INTERPRET`` (the kernels must be real ``JITFunction``s);
``test_gemm.py`` does that. Triton's bundled ptxas does the assembly.
"""

import json

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from infercore.ops.gemm.triton_configs import CONFIGS, FAST_ACCUM_CONFIGS, fit_shared_memory
from infercore.ops.gemm.triton_kernels import _matmul_tma_kernel
from infercore.ops.gemm.triton_launch import kernel_constexprs

_TL = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
       torch.float8_e4m3fn: "fp8e4nv"}

# (name, M class, split K, operand dtype, output dtype, b K-major, (SA_G, SA_K, SB_G, SB_K),
#  bias, FP8 fast accumulation)
CASES = [
    ("bf16 large, b=w.t()", "large", False, torch.bfloat16, torch.bfloat16, True,
     (-1, False, -1, False), True, False),
    ("fp16 large, b row-major, fp32 out", "large", False, torch.float16, torch.float32, False,
     (-1, False, -1, False), True, False),
    ("fp8 large, 1x128 x 128x128 blocks", "large", False, torch.float8_e4m3fn, torch.bfloat16,
     True, (1, True, 128, True), True, False),
    ("fp8 large, tensor-wise", "large", False, torch.float8_e4m3fn, torch.bfloat16, True,
     (0, False, 0, False), False, False),
    ("fp8 large, tensor-wise, fast accumulation", "large", False, torch.float8_e4m3fn,
     torch.bfloat16, True, (0, False, 0, False), False, True),
    ("bf16 small split-K, b=w.t(), bias", "small", True, torch.bfloat16, torch.bfloat16, True,
     (-1, False, -1, False), True, False),
    ("bf16 medium split-K, b=w.t(), bias", "medium", True, torch.bfloat16, torch.bfloat16, True,
     (-1, False, -1, False), True, False),
]


def compile_case(m_class, split_k, dtype, out_dtype, b_kmajor, scales, bias, fast_accum):
    key = ("sm90", dtype.itemsize * 8, m_class)
    config = (FAST_ACCUM_CONFIGS if fast_accum else CONFIGS)[key]
    config = fit_shared_memory(config, dtype.itemsize, out_dtype.itemsize)
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    b_block = [bn, bk] if b_kmajor else [bk, bn]
    sig = {
        "a_desc": f"tensordesc<{_TL[dtype]}[{bm}, {bk}]>",
        "b_desc": f"tensordesc<{_TL[dtype]}[{b_block[0]}, {b_block[1]}]>",
        "c_desc": f"tensordesc<{_TL[out_dtype]}[{bm}, {bn}]>",
        "bias_ptr": "*bf16", "sa_ptr": "*fp32", "sb_ptr": "*fp32",
        "part_ptr": "*fp32", "count_ptr": "*i32",
        **{name: "i32" for name in ("M", "N", "K", "stride_sam", "stride_sak", "stride_sbk",
                                    "stride_sbn", "num_programs", "splits",
                                    "k_tiles_per_split")},
    }
    consts = kernel_constexprs(config, dtype, torch.device("cuda"), bias, scales,
                               split_k=split_k, fast_accum=fast_accum)
    consts["B_KMAJOR"] = b_kmajor
    sig.update({name: "constexpr" for name in consts})
    kernel = triton.compile(
        ASTSource(_matmul_tma_kernel, sig, consts),
        target=GPUTarget("cuda", 90, 32),
        options=dict(num_warps=config.num_warps, num_stages=config.num_stages),
    )
    ptx = kernel.asm["ptx"]
    return {"wgmma": "wgmma" in ptx, "tma": "cp.async.bulk.tensor" in ptx,
            "atomics": "atom." in ptx, "shared": kernel.metadata.shared,
            "adds": ptx.count("add.f32"), "block_m": config.block_m,
            "block_n": config.block_n, "num_warps": config.num_warps}


if __name__ == "__main__":
    for name, *case in CASES:
        print(json.dumps({"case": name, **compile_case(*case)}), flush=True)
