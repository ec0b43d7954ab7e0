#!/usr/bin/env bash
# Sets up, builds, and runs every test (C++ unit tests, Python tests against
# independent implementations) through ctest. GPU tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
