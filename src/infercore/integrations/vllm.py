"""vLLM integration: infercore's ops and paged attention inside vLLM.

:func:`register` is the hook of the ``vllm-infercore`` general plugin. It replaces, through
``CustomOp.register_oot``, vLLM's ``RMSNorm``, ``SiluAndMul`` and rotary embeddings
(``RotaryEmbedding`` and its variants that differ only in their cos/sin cache) with
subclasses that call :func:`infercore.ops.rms_norm`, :func:`~infercore.ops.fused_add_rms_norm`,
:func:`~infercore.ops.silu_and_mul` and :func:`~infercore.ops.rotary`; and it registers an
attention backend (``ops.kv.write`` + ``ops.attention.paged``) as vLLM's ``CUSTOM`` backend,
and on CPU, when ``INFERCORE_VLLM_ATTENTION=1``, in place of ``CPU_ATTN``.

Environment switches:

- ``INFERCORE_VLLM_OPS=0``: keep vLLM's own ops (the attention backend is still registered).
- ``INFERCORE_VLLM_ATTENTION=1``: on CPU, run infercore's attention backend in place of
  ``CPU_ATTN`` (vLLM's CPU platform honours no other backend). On CUDA select it with
  ``attention_config={"backend": "CUSTOM"}``.

Supported vLLM: :data:`SUPPORTED_VLLM` (the V1 attention interface with per-layer
``[num_blocks, num_kv_heads, block_size, 2 * head_size]`` caches and ``KVCacheLayout``).
Other versions are skipped with a log line naming the supported ones.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable

__all__ = ["SUPPORTED_VLLM", "call_counts", "register", "vllm_version_supported"]

#: vLLM versions the integration is written and tested against: ``>= 0.32, < 0.33``.
SUPPORTED_VLLM = ((0, 32), (0, 33))

# A child of vLLM's logger, so lines appear with vLLM's format and level.
log = logging.getLogger("vllm.infercore")

_counts: Counter[str] = Counter()
_registered: dict[str, object] = {}

#: infercore op families each replacement needs, by vLLM op name.
OP_FAMILIES = {
    "RMSNorm": ("norm.rms", "norm.add_rms"),
    "SiluAndMul": ("act.silu_mul",),
    "RotaryEmbedding": ("rope",),
    "attention": ("kv.write", "attention.paged"),
}


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


def supported_range() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = SUPPORTED_VLLM
    return f">={lo_major}.{lo_minor}, <{hi_major}.{hi_minor}"


def vllm_version_supported(version: str) -> bool:
    """Whether a vLLM version string (``"0.32.0"``, ``"0.32.1.dev3+g1a2b"``) is supported."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return False
    major_minor = (int(match.group(1)), int(match.group(2)))
    return SUPPORTED_VLLM[0] <= major_minor < SUPPORTED_VLLM[1]


def call_counts() -> dict[str, int]:
    """Calls that ran infercore in this process, by vLLM op name (``"attention"`` included)."""
    return dict(_counts)


def count(name: str) -> None:
    _counts[name] += 1


def missing_families(name: str) -> list[str]:
    """The op families a replacement needs that have no backend in infercore's registry."""
    from infercore import registry

    known = registry.families()
    return [f for f in OP_FAMILIES[name] if f not in known or not registry.backends(f)]


def _usable(name: str) -> bool:
    missing = missing_families(name)
    if missing:
        log.warning(
            "infercore plugin: not replacing vLLM's %s: infercore has no backend for op "
            "famil%s %s; vLLM's own implementation stays in use",
            name, "y" if len(missing) == 1 else "ies", ", ".join(missing),
        )
    return not missing


def _register_ops(undo: list[Callable[[], None]]) -> list[str]:
    from vllm.model_executor.custom_op import CustomOp, op_registry_oot

    from infercore.integrations import vllm_ops

    replaced = []
    for group, classes in vllm_ops.replacements().items():
        if not _usable(group):
            continue
        for vllm_name, cls in classes.items():
            current = op_registry_oot.get(vllm_name)
            if current is cls:
                continue
            if current is not None:
                log.warning("infercore plugin: vLLM's %s is already replaced by %s; leaving it",
                            vllm_name, current.__qualname__)
                continue
            CustomOp.register_oot(cls, name=vllm_name)
            undo.append(lambda n=vllm_name: op_registry_oot.pop(n, None))
            replaced.append(vllm_name)
    return replaced


def _register_attention(undo: list[Callable[[], None]]) -> list[str]:
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    if not _usable("attention"):
        return []
    module = "infercore.integrations.vllm_attention"
    targets = [(AttentionBackendEnum.CUSTOM, f"{module}.InfercoreAttentionBackend")]
    if current_platform.is_cpu() and _env_flag("INFERCORE_VLLM_ATTENTION", False):
        targets.append((AttentionBackendEnum.CPU_ATTN, f"{module}.InfercoreCPUAttentionBackend"))
    done = []
    for member, path in targets:
        if member.is_overridden() and member.get_path() != path:
            log.warning("infercore plugin: attention backend %s is already overridden by %s; "
                        "leaving it", member.name, member.get_path())
            continue
        register_backend(member, path)
        undo.append(member.clear_override)
        done.append(member.name)
    return done


def register() -> None:
    """Install the replacements and attention backends into vLLM (re-entrant, never raises).

    Skips, with a log line, when vLLM's version is outside :data:`SUPPORTED_VLLM`; drops a
    replacement whose infercore ops are missing; on any other failure undoes what it
    registered, so that vLLM runs with its own implementations.
    """
    try:
        from vllm import __version__ as version
    except ImportError as exc:
        log.warning("infercore plugin inactive: vLLM is not importable (%s)", exc)
        return
    if not vllm_version_supported(version):
        log.warning("infercore plugin inactive: vLLM %s is not supported (supported: %s)",
                    version, supported_range())
        return
    if _registered.get("version") == version:
        return
    undo: list[Callable[[], None]] = []
    try:
        ops = _register_ops(undo) if _env_flag("INFERCORE_VLLM_OPS", True) else []
        attention = _register_attention(undo)
    except Exception:
        for step in reversed(undo):
            step()
        log.exception("infercore plugin failed to register; vLLM's own implementations stay "
                      "in use")
        return
    _registered["version"] = version
    log.info("infercore plugin (vLLM %s): ops replaced: %s; attention backends: %s", version,
             ", ".join(ops) or "none", ", ".join(attention) or "none")
