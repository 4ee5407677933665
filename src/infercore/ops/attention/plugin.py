"""Built-in plugin: the attention families and ``kv.write``, with their backends."""

from __future__ import annotations

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry


@hookimpl
def infercore_register(registry: Registry) -> None:
    registry.add_family(Family(
        "attention.varlen", "op", "packed variable-length attention: ops.attention.varlen"))
    registry.add_family(Family(
        "attention.paged", "op",
        "chunked prefill + decode over a paged KV cache: ops.attention.paged"))
    registry.add_family(Family(
        "attention.decode", "op", "split-KV decode over a paged KV cache: ops.attention.decode"))
    registry.add_family(Family(
        "kv.write", "op", "scatter new K/V into paged caches: ops.kv.write"))
    from infercore.ops.attention.reference import ReferenceDecode, ReferencePaged, ReferenceVarlen
    from infercore.ops.kv.reference import ReferenceKVWrite

    for backend in (ReferenceVarlen, ReferencePaged, ReferenceDecode, ReferenceKVWrite):
        registry.register(backend)
    from infercore.ops.attention.triton_decode import TritonDecode
    from infercore.ops.attention.triton_paged import TritonPaged
    from infercore.ops.attention.triton_varlen import TritonVarlen
    from infercore.ops.kv.triton_write import TritonKVWrite

    for backend in (TritonVarlen, TritonPaged, TritonDecode, TritonKVWrite):
        registry.register(backend)
