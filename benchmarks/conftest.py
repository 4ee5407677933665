"""pytest-benchmark front end to the suites of ``infercore.bench``.

``python -m pytest benchmarks --benchmark-group-by=group`` times every implementation of
every case of every suite (quick case lists unless ``--bench-full``), one test each,
grouped by case so the peers sit side by side. ``-k`` selects suites or cases; the
``infercore bench`` command runs the same suites with ratios and ceilings.
"""

import pytest
import torch

from infercore import bench


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-full", action="store_true", help="run the full case lists")
    parser.addoption("--bench-device", default="cuda", help="device to benchmark on")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_case" not in metafunc.fixturenames:
        return
    device = torch.device(metafunc.config.getoption("--bench-device"))
    quick = not metafunc.config.getoption("--bench-full")
    params = []
    if device.type != "cuda" or torch.cuda.is_available():
        for name, s in bench.list_suites().items():
            if device.type not in s.devices:
                continue
            for case in s.make_cases(device, quick):
                for impl in case.impls:
                    case_id = f"{name}-{case.name}-{impl}"
                    params.append(pytest.param((name, case, impl), id=case_id))
    if not params:
        skip = pytest.mark.skip(reason=f"no suite runs on {device}")
        params.append(pytest.param(None, marks=skip))
    metafunc.parametrize("bench_case", params)
