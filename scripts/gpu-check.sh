#!/usr/bin/env bash
# One call on a GPU host (CUDA 13, cmake, ninja, NCCL, GoogleTest, no package access):
# unpack the Debian bundle from scripts/gpu-prepare.sh, build for sm_90a with
# all cores, run every test (GPU tests included; transformers agreement where
# PyTorch is installed), run the benchmarks, and print a short table last.
# Full logs go to $OUT (or /tmp/atomserve-gpu-out).
#   scripts/gpu-check.sh [--no-bench] [--sanitize] [--bench-args "..."]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/atomserve-gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0  # never use NVLink multicast on shared hosts
BENCH=1 SANITIZE=0 BENCH_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bench) BENCH=0 ;;
    --sanitize) SANITIZE=1 ;;
    --bench-args) BENCH_ARGS="$2"; shift ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
  shift
done

summary=()
note() { summary+=("$1"); echo "== $1"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv; date -u; git rev-parse HEAD 2>/dev/null; } > "$OUT/device.txt" 2>&1
note "device: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"

if [ -d .bundle ]; then
  eval "$(bash .bundle/use-bundle.sh .bundle /tmp/atomserve-deps)"
fi
PY=$(command -v python3)
t0=$(date +%s)
if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PY" > "$OUT/build.log" 2>&1 &&
   cmake --build build-gpu -j "$(nproc)" >> "$OUT/build.log" 2>&1; then
  note "build: ok ($(( $(date +%s) - t0 ))s)"
else
  note "build: FAILED (see build.log)"; tail -40 "$OUT/build.log"; printf '%s\n' "${summary[@]}"; exit 1
fi

( cd build-gpu && ctest --output-on-failure -j 8 --timeout 180 ) > "$OUT/ctest.log" 2>&1
note "ctest: $(grep -E 'tests passed|tests failed' "$OUT/ctest.log" | tail -1)"
note "gpu tests: $(grep -cE 'Passed' <(cd build-gpu && ctest -L gpu -N 2>/dev/null) || true) listed; skipped: $(grep -c 'Skipped' "$OUT/ctest.log" || true)"
grep -E "AGREEMENT" -r build-gpu/Testing 2>/dev/null | head -5
( cd build-gpu && ctest -R py_test_safetensors_agreement -V ) 2>&1 | grep -E "AGREEMENT|passed|skipped" > "$OUT/agreement.txt"
while read -r line; do note "$line"; done < "$OUT/agreement.txt"

if [ "$SANITIZE" = 1 ] && command -v compute-sanitizer >/dev/null; then
  for t in build-gpu/tests/gpu_*; do
    [ -x "$t" ] || continue
    if timeout 240 compute-sanitizer --error-exitcode 1 "$t" --gtest_brief=1 > "$OUT/sanitize-$(basename "$t").log" 2>&1; then
      note "compute-sanitizer $(basename "$t"): clean"
    else
      note "compute-sanitizer $(basename "$t"): ERRORS"
    fi
  done
fi

if [ "$BENCH" = 1 ]; then
  for b in build-gpu/bench/*_bench; do
    [ -x "$b" ] || continue
    timeout 240 "$b" $BENCH_ARGS > "$OUT/$(basename "$b").txt" 2>&1
    note "bench $(basename "$b"): exit $?"
  done
fi

echo; echo "==== summary ===="
printf '%s\n' "${summary[@]}"
for f in "$OUT"/*_bench.txt; do [ -f "$f" ] && { echo "---- $(basename "$f")"; tail -30 "$f"; }; done
grep -E "FAILED|Failed|\*\*\*" "$OUT/ctest.log" | head -20
