// CPU kernels: the reference implementation of every op the model runs, and
// the backend that serves when there is no GPU.
//
// Layouts (all row-major, outermost first):
//   activations  x[tokens, dim]
//   linear weight w[out, in]        (PyTorch nn.Linear layout)
//   q  [tokens, num_heads,    head_dim]
//   k,v[tokens, num_kv_heads, head_dim]
// RoPE uses the "rotate half" pairing (d, d + head_dim/2), the Hugging Face
// Llama convention. Kernels with a ThreadPool* argument split work across it;
// nullptr runs on the calling thread.
#pragma once

#include <cstdint>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/rope.h"

namespace atomserve::cpu {

// y[m, n] = sum_k x[m, k] * w[n, k] (+ y[m, n] when accumulate).
void Linear(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
            ThreadPool* pool, bool accumulate = false);

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight.
void RmsNorm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, float* out, int64_t n);

// In place on x[tokens, heads, head_dim]; positions[tokens].
void ApplyRope(float* x, const int32_t* positions, int64_t tokens, int64_t heads,
               int64_t head_dim, const RopeTable& rope);

// out[t, :] = table[ids[t], :]. ids must be validated by the caller.
void Embed(const float* table, const int32_t* ids, float* out, int64_t tokens, int64_t dim);

// In-place numerically stable softmax over each row.
void SoftmaxRows(float* x, int64_t rows, int64_t cols);

// Causal grouped-query attention of `tokens` new queries against a dense
// per-sequence cache. Query t sits at position q_pos[t] and attends to cache
// rows [0, q_pos[t]]. k_cache/v_cache: [cache_len, num_kv_heads, head_dim]
// with cache_len > max(q_pos). out: [tokens, num_heads, head_dim].
// scale is usually 1/sqrt(head_dim).
void Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
               const int32_t* q_pos, int64_t tokens, int64_t num_heads, int64_t num_kv_heads,
               int64_t head_dim, float scale, ThreadPool* pool);

}  // namespace atomserve::cpu
