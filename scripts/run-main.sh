#!/usr/bin/env bash
# The main job: set up, build, and generate text with the default model
# (SmolLM2-135M-Instruct) on the CPU. Arguments are passed to
# `atomserve generate` (default: a sample prompt).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh >/dev/null
if [ $# -eq 0 ]; then
  set -- --prompt "What is the capital of France? Answer in one sentence."
fi
exec ./build/atomserve generate "$@"
