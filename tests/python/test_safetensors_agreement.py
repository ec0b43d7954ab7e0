"""A random Llama written as HF safetensors (loaded by atomserve) and as GGUF
(run by llama.cpp) must give the same logits: this checks the safetensors
loader, the HF layout conventions (RoPE pairing, GQA, untied head, rope theta)
and the forward pass against an independent implementation, in fp32.
When PyTorch and transformers are installed (the GPU hosts), the same
checkpoint is also compared with transformers' LlamaForCausalLM.
"""
import json

import numpy as np
import pytest

import random_llama
from llama_cpp_ref import agreement, atomserve_logits, llama_cpp_logits


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The HF directory (always) and the GGUF copy (when `gguf` is installed)."""
    d = tmp_path_factory.mktemp("random-llama")
    cfg, weights, tok = random_llama.write_hf(d / "hf")
    try:
        random_llama.write_gguf(d / "model.gguf", cfg, weights, tok)
    except ImportError:
        pass  # the GPU hosts have no `gguf` package; GGUF cases skip there
    rng = np.random.default_rng(1)
    ids = [int(x) for x in rng.integers(1, cfg["vocab_size"], size=100)]
    return d, cfg, ids


def need_gguf(d):
    if not (d / "model.gguf").exists():
        pytest.skip("the gguf package is not installed")


def test_safetensors_matches_llama_cpp(build_dir, checkpoint, tmp_path):
    pytest.importorskip("llama_cpp")
    d, cfg, ids = checkpoint
    need_gguf(d)
    ref, _ = llama_cpp_logits(d / "model.gguf", ids)
    ours = atomserve_logits(build_dir, d / "hf", ids, tmp_path)
    a = agreement(ours, ref)
    print("AGREEMENT", json.dumps(dict(case="random-llama safetensors vs llama.cpp f32", **a)))
    # Measured (2026-11-21): max rel err 5.3e-7, top-1 1.0.
    assert a["max_rel_err"] < 1e-4, a
    assert a["top1_agree"] == 1.0, a


def test_gguf_and_safetensors_load_the_same_model(build_dir, checkpoint, tmp_path):
    d, cfg, ids = checkpoint
    need_gguf(d)
    a = atomserve_logits(build_dir, d / "hf", ids, tmp_path)
    b = atomserve_logits(build_dir, d / "model.gguf", ids, tmp_path)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_safetensors_matches_transformers(build_dir, checkpoint, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d, cfg, ids = checkpoint
    model = transformers.LlamaForCausalLM.from_pretrained(str(d / "hf"), torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    ours = atomserve_logits(build_dir, d / "hf", ids, tmp_path)
    a = agreement(ours, ref)
    print("AGREEMENT", json.dumps(dict(case="random-llama safetensors vs transformers f32", **a)))
    assert a["max_rel_err"] < 1e-3, a
    assert a["top1_agree"] == 1.0, a
