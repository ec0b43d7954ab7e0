"""Compares our GGUF dequantization with the reference `gguf` Python package.

dump_tensor (tests/tools/dump_tensor.cc) loads SmolLM2 through the C++ loader
and writes one tensor as float32; gguf.GGUFReader + gguf.quants.dequantize
decode the same bytes. q_proj/k_proj get the loader's un-permutation applied
in numpy, so the test also pins down the HF row order.
"""

import json
import os
import pathlib
import subprocess

import pytest

np = pytest.importorskip("numpy")
gguf = pytest.importorskip("gguf")

MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path():
    env = os.environ.get("ATOMSERVE_MODEL")
    if env:
        return pathlib.Path(env)
    src = os.environ.get("ATOMSERVE_SOURCE_DIR", str(pathlib.Path(__file__).resolve().parents[2]))
    return pathlib.Path(src) / "models" / MODEL_NAME


def dump_tensor_bin():
    build = os.environ.get("ATOMSERVE_BUILD_DIR")
    if not build:
        pytest.skip("ATOMSERVE_BUILD_DIR is not set")
    path = pathlib.Path(build) / "tests" / "dump_tensor"
    if not path.exists():
        pytest.skip(f"{path} is not built")
    return path


@pytest.fixture(scope="module")
def reader():
    path = model_path()
    if not path.exists():
        pytest.skip(f"model file {path} is absent")
    return gguf.GGUFReader(str(path))


def field_int(reader, key):
    field = reader.fields[key]
    return int(field.parts[field.data[0]][0])


def reference(reader, gguf_name):
    """Dequantized tensor in row-major (outermost-first) shape."""
    t = next(t for t in reader.tensors if t.name == gguf_name)
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    shape = [int(d) for d in reversed(t.shape)]  # GGUF lists dims fastest-first
    return t.tensor_type, np.asarray(data, dtype=np.float32).reshape(shape)


def unpermute(w, n_head):
    """Inverse of llama.cpp's permute: back to HF 'rotate half' row order."""
    out, cols = w.shape
    head_dim = out // n_head
    return w.reshape(n_head, head_dim // 2, 2, cols).swapaxes(1, 2).reshape(out, cols)


def ours(tmp_path, hf_name):
    out = tmp_path / "t.f32"
    proc = subprocess.run(
        [str(dump_tensor_bin()), str(model_path()), hf_name, str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["name"] == hf_name
    return np.fromfile(out, dtype=np.float32).reshape(info["shape"])


CASES = [
    # (gguf name, HF name, expected type, which un-permutation)
    ("token_embd.weight", "model.embed_tokens.weight", "Q8_0", None),
    ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight", "Q4_1", None),
    ("blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight", "Q4_1", None),
    ("blk.5.attn_q.weight", "model.layers.5.self_attn.q_proj.weight", "Q4_1", "llama.attention.head_count"),
    ("blk.5.attn_k.weight", "model.layers.5.self_attn.k_proj.weight", "Q4_1", "llama.attention.head_count_kv"),
    ("blk.7.attn_norm.weight", "model.layers.7.input_layernorm.weight", "F32", None),
    ("output_norm.weight", "model.norm.weight", "F32", None),
]


@pytest.mark.parametrize("gguf_name,hf_name,qtype,heads_key", CASES, ids=[c[0] for c in CASES])
def test_matches_reference(reader, tmp_path, gguf_name, hf_name, qtype, heads_key):
    tensor_type, want = reference(reader, gguf_name)
    assert tensor_type.name == qtype
    if heads_key:
        want = unpermute(want, field_int(reader, heads_key))
    got = ours(tmp_path, hf_name)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got))
    assert float(np.max(np.abs(got - want))) <= 1e-6


def test_unpermute_is_not_identity(reader):
    # Guards the test above: if the permutation were a no-op for this shape the
    # q/k comparisons would not check the row order at all.
    _, w = reference(reader, "blk.5.attn_q.weight")
    assert not np.array_equal(unpermute(w, field_int(reader, "llama.attention.head_count")), w)
