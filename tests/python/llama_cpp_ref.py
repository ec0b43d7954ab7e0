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
                          verbose=False)
    llm.eval(list(ids))
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    tokenizer = llm
    return scores, tokenizer


def agreement(ours, ref):
    """Per-position relative L2 error and argmax agreement."""
    rel = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    top1 = (ours.argmax(axis=1) == ref.argmax(axis=1))
    return {"max_rel_err": float(rel.max()), "mean_rel_err": float(rel.mean()),
            "top1_agree": float(top1.mean()), "positions": int(len(rel)),
            "max_abs_err": float(np.abs(ours - ref).max())}
