"""Loading the CUTLASS Python interface (``cutlass_cppgen``) and confining its side effects.

nvidia-cutlass 4.2 expects the pre-13 cuda-python layout (``cuda.cudart``, ``cuda.cuda``,
``cuda.nvrtc`` and ``cuda.__version__``); with cuda-bindings 13 those are aliases of
``cuda.bindings.runtime`` / ``.driver`` / ``.nvrtc``, installed here before the import.

``cutlass_cppgen`` keeps its compiled kernels in a SQLite file named relative to the
working directory and writes its temporary sources to ``./`` (setting
``tempfile.tempdir``). Imports and compilations therefore run inside the cache directory,
with the working directory and ``tempfile.tempdir`` restored afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "current_stream",
    "device_cache_dir",
    "in_directory",
    "load_cutlass",
    "point_cache_at",
]

#: Environment variable naming the on-disk kernel cache (default ~/.cache/infercore/cutlass).
CACHE_ENV = "INFERCORE_CUTLASS_CACHE"
_CACHE_FILE = "compiled_cache.db"
#: The schema cutlass_cppgen (4.2) reads compiled kernels from.
_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS compiled_operations(op_key TEXT NOT NULL UNIQUE, "
    "cubin BLOB NOT NULL, hostbin BLOB NOT NULL, op_name TEXT NOT NULL, "
    "op_attrs TEXT NOT NULL)"
)
_lock = threading.RLock()
_module: ModuleType | None = None


def cache_dir() -> Path:
    """Root of the kernel cache: ``$INFERCORE_CUTLASS_CACHE`` or ~/.cache/infercore/cutlass."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "infercore" / "cutlass"


def device_cache_dir(device_name: str, cc: tuple[int, int]) -> Path:
    """Per-device directory: compiled kernels are only valid for the device they target."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower()
    return cache_dir() / f"{slug}-sm{cc[0]}{cc[1]}"


@contextlib.contextmanager
def in_directory(path: Path) -> Iterator[None]:
    """Run a block with ``path`` as working and temporary directory (process-wide; the
    caller holds the module lock)."""
    path.mkdir(parents=True, exist_ok=True)
    cwd, tmp = os.getcwd(), tempfile.tempdir
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)
        tempfile.tempdir = tmp


def _alias_cuda_bindings() -> None:
    import cuda
    import cuda.bindings

    if not hasattr(cuda, "__version__"):
        cuda.__version__ = cuda.bindings.__version__
    for old, new in (("cudart", "runtime"), ("cuda", "driver"), ("nvrtc", "nvrtc")):
        name = f"cuda.{old}"
        if name not in sys.modules:
            sys.modules[name] = importlib.import_module(f"cuda.bindings.{new}")
        setattr(cuda, old, sys.modules[name])


def load_cutlass() -> ModuleType:
    """Import ``cutlass_cppgen`` once (shim installed, side effects in the cache dir)."""
    global _module
    with _lock:
        if _module is None:
            _alias_cuda_bindings()
            with in_directory(cache_dir()):
                # cutlass_library imports its kernel generator only when "-m" is absent
                # from sys.argv (as in `pytest -m cuda`); cutlass_cppgen needs it.
                importlib.import_module("cutlass_library.generator")
                _module = importlib.import_module("cutlass_cppgen")
        return _module


def point_cache_at(directory: Path) -> None:
    """Make ``cutlass_cppgen`` read and write compiled kernels in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    # The package attribute ``cutlass_cppgen.backend.compiler`` is an ArtifactManager
    # instance; the module of the same name holds the path its methods read.
    path = directory / _CACHE_FILE
    # cutlass_cppgen creates its table only in the file it opened at import; a new file
    # needs the same table before the first lookup.
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(_CREATE_TABLE)
        connection.commit()
    sys.modules["cutlass_cppgen.backend.compiler"].CACHE_FILE = str(path)


def current_stream(device: torch.device) -> object:
    """The current PyTorch stream of ``device`` as a ``CUstream`` for CUTLASS launches."""
    from cuda.bindings import driver

    return driver.CUstream(torch.cuda.current_stream(device).cuda_stream)
