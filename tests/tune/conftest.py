"""Every tuning test gets its own cache file, and dispatch forgets it afterwards."""

import pytest

from infercore import tune


@pytest.fixture(autouse=True)
def cache_path(tmp_path, monkeypatch):
    path = tmp_path / "tuning.json"
    monkeypatch.setenv(tune.CACHE_ENV, str(path))
    tune.reset()
    yield path
    tune.reset()
