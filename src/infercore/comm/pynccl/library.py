"""libnccl through ctypes: finding the library and typed bindings of the calls we use."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.metadata
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

from infercore.comm.interface import CommError

__all__ = ["NCCL_DTYPES", "NCCL_OPS", "NcclLibrary", "NcclUniqueId", "find_nccl_library"]

ENV_VAR = "INFERCORE_NCCL_LIBRARY"

#: ncclDataType_t values (nccl.h).
NCCL_DTYPES = {
    torch.int8: 0,
    torch.uint8: 1,
    torch.int32: 2,
    torch.int64: 4,
    torch.float16: 6,
    torch.float32: 7,
    torch.float64: 8,
    torch.bfloat16: 9,
}
#: ncclRedOp_t values (nccl.h); avg needs NCCL >= 2.10.
NCCL_OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}

_DISTRIBUTIONS = ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11")


class NcclUniqueId(ctypes.Structure):
    """``ncclUniqueId``: 128 opaque bytes made by rank 0 and sent to the others."""

    _fields_: ClassVar = [("internal", ctypes.c_ubyte * 128)]


def _loaded_in_process() -> list[str]:
    """libnccl files already mapped into this process (the copy torch linked)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    found = []
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if "libnccl.so" in os.path.basename(path) and path not in found:
            found.append(path)
    return found


def _from_distributions() -> list[str]:
    found = []
    for name in _DISTRIBUTIONS:
        try:
            files = importlib.metadata.files(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files:
            if os.path.basename(str(f)).startswith("libnccl.so"):
                found.append(str(f.locate()))
    return found


def _from_paths() -> list[str]:
    found = []
    for entry in sys.path:
        for pattern in ("nvidia/nccl/lib/libnccl.so*", "nvidia/*/lib/libnccl.so*"):
            found += sorted(glob.glob(os.path.join(entry, pattern)))
    found += sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libnccl.so*")))
    return found


def find_nccl_library() -> tuple[str | None, str]:
    """Locate libnccl.

    Order: ``INFERCORE_NCCL_LIBRARY``; the libnccl torch already loaded; the files of the
    ``nvidia-nccl-cu13``/``-cu12`` distributions; ``nvidia/*/lib`` under ``sys.path`` and
    torch's ``lib`` directory; the system linker path.

    Returns
    -------
    (path or None, explanation)
        The path (or a soname the loader resolves) and where it came from; ``None`` and
        what was searched when nothing was found.
    """
    forced = os.environ.get(ENV_VAR)
    if forced:
        if os.path.exists(forced):
            return forced, f"{ENV_VAR}={forced}"
        return None, f"{ENV_VAR}={forced} does not exist"
    for source, candidates in (
        ("already loaded by torch", _loaded_in_process()),
        ("nvidia-nccl package", _from_distributions()),
        ("sys.path / torch lib", _from_paths()),
    ):
        for path in candidates:
            if os.path.exists(path):
                return path, source
    soname = ctypes.util.find_library("nccl")
    if soname:
        return soname, "system linker path"
    return None, (
        f"libnccl not found: set {ENV_VAR}, or install nvidia-nccl-cu12 / -cu13 (the "
        "`nccl` extra); searched the loaded libraries, those packages, nvidia/*/lib on "
        "sys.path, torch/lib and the system linker path"
    )


_c = ctypes
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "ncclGetErrorString": (_c.c_char_p, [_c.c_int]),
    "ncclGetVersion": (_c.c_int, [_c.POINTER(_c.c_int)]),
    "ncclGetUniqueId": (_c.c_int, [_c.POINTER(NcclUniqueId)]),
    "ncclCommInitRank": (_c.c_int, [_c.POINTER(_c.c_void_p), _c.c_int, NcclUniqueId, _c.c_int]),
    "ncclCommDestroy": (_c.c_int, [_c.c_void_p]),
    "ncclCommAbort": (_c.c_int, [_c.c_void_p]),
    "ncclAllReduce": (_c.c_int, [_c.c_void_p, _c.c_void_p, _c.c_size_t, _c.c_int, _c.c_int,
                                 _c.c_void_p, _c.c_void_p]),
    "ncclAllGather": (_c.c_int, [_c.c_void_p, _c.c_void_p, _c.c_size_t, _c.c_int, _c.c_void_p,
                                 _c.c_void_p]),
    "ncclReduceScatter": (_c.c_int, [_c.c_void_p, _c.c_void_p, _c.c_size_t, _c.c_int,
                                     _c.c_int, _c.c_void_p, _c.c_void_p]),
    "ncclBroadcast": (_c.c_int, [_c.c_void_p, _c.c_void_p, _c.c_size_t, _c.c_int, _c.c_int,
                                 _c.c_void_p, _c.c_void_p]),
    "ncclSend": (_c.c_int, [_c.c_void_p, _c.c_size_t, _c.c_int, _c.c_int, _c.c_void_p,
                            _c.c_void_p]),
    "ncclRecv": (_c.c_int, [_c.c_void_p, _c.c_size_t, _c.c_int, _c.c_int, _c.c_void_p,
                            _c.c_void_p]),
    "ncclGroupStart": (_c.c_int, []),
    "ncclGroupEnd": (_c.c_int, []),
}


class NcclLibrary:
    """Typed ctypes bindings of one libnccl; every call raises :class:`CommError` on failure.

    Each call is an attribute named as in nccl.h without the ``nccl`` prefix
    (``lib.AllReduce(...)``); pointers and ``cudaStream_t`` are passed as ints.
    """

    _cache: ClassVar[dict[str, NcclLibrary]] = {}

    def __init__(self, path: str) -> None:
        self.path = path
        self._lib = ctypes.CDLL(path)
        self._fns: dict[str, Callable[..., int]] = {}
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self._lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
            self._fns[name] = fn
            if restype is _c.c_int:
                setattr(self, name.removeprefix("nccl"), self._checked(name, fn))

    @classmethod
    def load(cls, path: str | None = None) -> NcclLibrary:
        """Load (once per path) ``path`` or the library :func:`find_nccl_library` finds."""
        if path is None:
            path, why = find_nccl_library()
            if path is None:
                raise CommError(why)
        if path not in cls._cache:
            cls._cache[path] = cls(path)
        return cls._cache[path]

    def error_string(self, result: int) -> str:
        return self._fns["ncclGetErrorString"](result).decode(errors="replace")

    def _checked(self, name: str, fn: Callable[..., int]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            result = fn(*args)
            if result != 0:
                raise CommError(f"{name} returned {result}: {self.error_string(result)}")

        call.__name__ = name
        return call

    def version(self) -> tuple[int, int, int]:
        """(major, minor, patch) of the loaded library."""
        code = ctypes.c_int()
        self.GetVersion(ctypes.byref(code))
        major, rest = divmod(code.value, 10000)
        if major < 2:  # codes before 2.9 were X*1000 + Y*100 + Z
            major, rest = divmod(code.value, 1000)
            return major, rest // 100, rest % 100
        return major, rest // 100, rest % 100

    def unique_id(self) -> NcclUniqueId:
        uid = NcclUniqueId()
        self.GetUniqueId(ctypes.byref(uid))
        return uid
