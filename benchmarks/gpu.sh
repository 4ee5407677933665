#!/usr/bin/env bash
# On a GPU machine, from the project root: install, run the tests on CUDA, benchmark.
#
#   benchmarks/gpu.sh [-t "PYTEST ARGS"] [-f] [SUITE ...]
#
#   -t ARGS  what pytest runs (default: "tests"); "" skips the tests
#   -f       full case lists instead of --quick
#   SUITE    suites for `infercore bench` (default: none; "all" for every CUDA suite)
#
# Wheels the machine lacks may be put in .gpu/wheels (they are installed to /tmp/site).
# Logs and JSON results go to $OUT (default /tmp/infercore-out).
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
OUT=${OUT:-/tmp/infercore-out}
mkdir -p "$OUT"
tests="tests"
quick="--quick"
while getopts "t:f" opt; do
    case $opt in
        t) tests=$OPTARG ;;
        f) quick="" ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))

if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && python3 -m pip install -q --no-deps --no-build-isolation -e "$plugin"
done
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -m infercore.cli info | tee -a "$OUT/gpu.txt"

status=0
if [ -n "$tests" ]; then
    eval "python3 -m pytest -q -p no:cacheprovider $tests" 2>&1 | tee "$OUT/tests.log" | tail -40
    status=${PIPESTATUS[0]}
fi

suites=("$@")
if [ "${suites[*]:-}" = "all" ]; then
    mapfile -t suites < <(python3 -c "
from infercore import bench
print('\n'.join(n for n, s in bench.list_suites().items() if 'cuda' in s.devices))")
fi
for s in "${suites[@]}"; do
    python3 -m infercore.cli bench "$s" $quick --json "$OUT/bench-$s.json" 2>&1 \
        | tee "$OUT/bench-$s.txt" || status=1
done
exit $status
