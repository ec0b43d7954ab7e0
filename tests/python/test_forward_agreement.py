"""Forward-pass agreement with llama.cpp on the same weights.

1. SmolLM2-135M as shipped (Q4_1): both implementations read the same file.
   llama.cpp multiplies Q4_1 weights with activations quantized to 8 bits
   (its q4_1 x q8_1 dot product) while atomserve dequantizes weights to fp32
   and keeps fp32 activations, so the logits differ by that rounding.
2. The same weights dequantized into an F32 GGUF: both compute in fp32, so the
   logits must agree to float rounding and greedy choices must be identical.

The figures are printed (pytest -s or the ctest log) and bounded below.
"""
import json

import numpy as np
import pytest

from llama_cpp_ref import agreement, atomserve_logits, llama_cpp_logits

gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. In 1492, Columbus sailed the ocean blue,",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes the air pressure is lower, so",
]


def tokenize(model_path, text):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def dequantize_to_f32(src, dst):
    """Writes a copy of a GGUF file with every tensor dequantized to F32."""
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch=arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if field.name == "general.file_type":
            writer.add_key_value(field.name, int(gguf.LlamaFileType.ALL_F32), gguf.GGUFValueType.UINT32)
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, data.reshape([int(d) for d in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def run_case(build_dir, model_path, tmp_path, label):
    results = []
    for i, text in enumerate(PROMPTS):
        ids = tokenize(model_path, text)
        ref, _ = llama_cpp_logits(model_path, ids)
        ours = atomserve_logits(build_dir, model_path, ids, tmp_path)
        assert ours.shape == ref.shape
        assert np.isfinite(ours).all()
        results.append(agreement(ours, ref))
    summary = {
        "case": label,
        "positions": sum(r["positions"] for r in results),
        "top1_agree": float(np.average([r["top1_agree"] for r in results],
                                       weights=[r["positions"] for r in results])),
        "max_rel_err": max(r["max_rel_err"] for r in results),
        "mean_rel_err": float(np.mean([r["mean_rel_err"] for r in results])),
        "max_disagree_gap": max(r["max_disagree_gap"] for r in results),
    }
    print("AGREEMENT", json.dumps(summary))
    return summary


def test_smollm2_q4_1_matches_llama_cpp(build_dir, smollm2_path, tmp_path):
    s = run_case(build_dir, smollm2_path, tmp_path, "smollm2-q4_1")
    # llama.cpp rounds activations to 8 bits for Q4_1 products; we do not.
    # Measured (2026-11-21): mean rel err 0.037, top-1 agreement 0.9625, the
    # differing choices within 0.6 logits of a tie in llama.cpp's own logits.
    assert s["mean_rel_err"] < 0.06, s
    assert s["top1_agree"] >= 0.93, s
    assert s["max_disagree_gap"] < 1.5, s


def test_smollm2_f32_matches_llama_cpp(build_dir, smollm2_path, tmp_path):
    f32 = tmp_path / "smollm2-f32.gguf"
    dequantize_to_f32(smollm2_path, f32)
    s = run_case(build_dir, f32, tmp_path, "smollm2-f32")
    # Measured (2026-11-21): max rel err 6.1e-6, mean 1.1e-6, top-1 1.0.
    assert s["max_rel_err"] < 1e-4, s
    assert s["top1_agree"] == 1.0, s
