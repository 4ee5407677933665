"""CUTLASS GEMM kernels for infercore.

Installing this distribution registers the ``cutlass`` backend of the ``gemm`` family
through the ``infercore`` entry point. Kernels come from NVIDIA's CUTLASS Python
interface (``nvidia-cutlass``, module ``cutlass_cppgen``), are compiled on first use
(nvcc, tens of seconds per kernel) and cached on disk under ``INFERCORE_CUTLASS_CACHE``
(default ``~/.cache/infercore/cutlass``), one directory per device.
"""

__version__ = "0.1.0"
