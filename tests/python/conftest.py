"""Shared fixtures: where the build and the default model are."""
import os
import pathlib

import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("ATOMSERVE_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BUILD_DIR = pathlib.Path(os.environ.get("ATOMSERVE_BUILD_DIR", SOURCE_DIR / "build"))
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path():
    env = os.environ.get("ATOMSERVE_MODEL")
    if env:
        return pathlib.Path(env)
    return SOURCE_DIR / "models" / MODEL_NAME


@pytest.fixture(scope="session")
def smollm2_path():
    p = default_model_path()
    if not p.exists():
        pytest.skip(f"default model not installed at {p} (run scripts/install-deps.sh)")
    return p


@pytest.fixture(scope="session")
def build_dir():
    return BUILD_DIR


@pytest.fixture(scope="session")
def atomserve_bin():
    p = pathlib.Path(os.environ.get("ATOMSERVE_BIN", BUILD_DIR / "atomserve"))
    if not p.exists():
        pytest.fail(f"atomserve binary not built at {p}")
    return p
