"""Autotuning: time backends and their launch configurations, keep the winners.

``infercore tune`` (see :mod:`infercore.tune.run`) times, per *key* (device, family,
dtypes, shape bucket; :mod:`~infercore.tune.keys`), every backend of a family and every
configuration its :meth:`~infercore.registry.Backend.tune_space` lists, checks each
against the reference backend, and writes the fastest to the tuning cache
(:mod:`~infercore.tune.cache`). Dispatch reads the cache once and, for a key it holds,
runs the tuned backend with its configuration (:mod:`~infercore.tune.dispatch`).
"""

from infercore.tune.cache import (
    CACHE_ENV,
    SCHEMA_VERSION,
    TunedEntry,
    TuningCache,
    TuningCacheWarning,
    default_path,
    shipped_entries,
)
from infercore.tune.config import TuneConfig
from infercore.tune.dispatch import TunedBackend, reset, table
from infercore.tune.keys import device_key, pow2_bucket, register_shape_key, tune_key
from infercore.tune.tuner import REL_TOL, Candidate, EventTimer, KeyResult, Tuner, WallTimer

__all__ = [
    "CACHE_ENV",
    "REL_TOL",
    "SCHEMA_VERSION",
    "Candidate",
    "EventTimer",
    "KeyResult",
    "TuneConfig",
    "TunedBackend",
    "TunedEntry",
    "Tuner",
    "TuningCache",
    "TuningCacheWarning",
    "WallTimer",
    "default_path",
    "device_key",
    "pow2_bucket",
    "register_shape_key",
    "reset",
    "shipped_entries",
    "table",
    "tune_key",
]
