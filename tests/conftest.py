"""Test setup: Triton kernels run in the interpreter on machines without CUDA.

``TRITON_INTERPRET`` is read when a kernel is defined, so it is set here, before any
infercore kernel module is imported.
"""

import os

import pytest
import torch
from hypothesis import settings

# Property tests: "ci" (the default) is derandomized, so every run checks the same cases;
# INFERCORE_HYPOTHESIS_PROFILE=dev explores new random cases each run.
settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("INFERCORE_HYPOTHESIS_PROFILE", "ci"))

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

os.environ.setdefault("INFERCORE_LOGLEVEL", "warning")
# Dispatch in tests follows the untuned defaults, not the tuning results shipped for GPUs.
os.environ.setdefault("INFERCORE_TUNING_SHIPPED", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    n_gpus = torch.cuda.device_count()
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_multi = pytest.mark.skip(reason="needs two or more CUDA GPUs")
    for item in items:
        if "cuda" in item.keywords and n_gpus == 0:
            item.add_marker(skip_cuda)
        if "multigpu" in item.keywords and n_gpus < 2:
            item.add_marker(skip_multi)


@pytest.fixture
def device() -> torch.device:
    """The device kernels are tested on: CUDA when present, else CPU (interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def fresh_plugins():
    """A fresh plugin manager and registry for the test, restored afterwards."""
    from infercore import plugins

    plugins._reset()
    yield
    plugins._reset()
