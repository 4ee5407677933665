"""One pytest-benchmark test per (suite, case, implementation); see conftest.py."""

import torch


def test_case(benchmark, bench_case):
    suite_name, case, impl = bench_case
    fn = case.impls[impl]
    if case.check is not None and impl == next(iter(case.impls)):
        case.check()  # correctness once per case, before timing
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def run():
        fn()
        sync()

    benchmark.group = f"{suite_name}: {case.name}"
    benchmark.extra_info.update(bytes=case.bytes, flops=case.flops, peer=case.peer)
    benchmark.pedantic(run, warmup_rounds=3, rounds=30, iterations=1)
