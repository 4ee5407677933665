"""NCCL through ctypes: :class:`PyNcclCommunicator` and the library it loads."""

from infercore.comm.pynccl.communicator import PyNcclCommunicator
from infercore.comm.pynccl.library import NcclLibrary, find_nccl_library

__all__ = ["NcclLibrary", "PyNcclCommunicator", "find_nccl_library"]
