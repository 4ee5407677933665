"""Benchmark suites, one module per op family (imported by :func:`infercore.bench.suites`)."""
