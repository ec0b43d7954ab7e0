"""Helpers for comparing atomserve's forward pass with llama.cpp.

llama.cpp (through the llama-cpp-python package) is an implementation this
project did not write; these helpers run both on the same token ids and
summarize the agreement.
"""
import subprocess

import numpy as np


def atomserve_logits(build_dir, model_path, ids, tmp_path):
    out = tmp_path / "logits.f32"
    tool = build_dir / "tests" / "model_logits"
    subprocess.run([str(tool), str(model_path), ",".join(map(str, ids)), str(out)],
                   check=True, capture_output=True, text=True)
    data = np.fromfile(out, dtype=np.float32)
    return data.reshape(len(ids), -1)


def llama_cpp_logits(model_path, ids, n_threads=2):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=max(64, len(ids) + 8), n_batch=512,
                          n_threads=n_threads, n_threads_batch=n_threads, logits_all=True,
                          # fp32 KV cache (GGML_TYPE_F32 = 0): llama.cpp's default
                          # F16 cache would add its own rounding to the comparison.
                          type_k=0, type_v=0, verbose=False)
    llm.eval(list(ids))
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    tokenizer = llm
    return scores, tokenizer


def agreement(ours, ref):
    """Per-position relative L2 error and argmax agreement."""
    rel = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    ours_top, ref_top = ours.argmax(axis=1), ref.argmax(axis=1)
    top1 = ours_top == ref_top
    # Where the choices differ, how close was the reference to a tie between
    # them (in logits)? Disagreement only at near-ties is rounding, not a bug.
    rows = np.arange(len(ref))
    gaps = ref[rows, ref_top] - ref[rows, ours_top]
    return {"max_rel_err": float(rel.max()), "mean_rel_err": float(rel.mean()),
            "top1_agree": float(top1.mean()), "positions": int(len(rel)),
            "max_abs_err": float(np.abs(ours - ref).max()),
            "max_disagree_gap": float(gaps.max())}
