#!/usr/bin/env bash
# Sets up, builds, and runs every test (C++ unit tests, Python tests against
# independent implementations) through ctest. GPU tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
log=$(mktemp)
set +e
ctest --output-on-failure -j "$(nproc)" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# ctest lists skipped tests (the GPU tests on a machine without a GPU) after
# its summary; repeat the summary so it is the last line.
echo
grep -E "^[0-9]+% tests passed" "$log" | tail -1
rm -f "$log"
exit "$rc"
