// "Fake quantization" (quantize, then dequantize back to float) for running a
// model's quantization variants in float and measuring their accuracy
// (perplexity ablations): full Atom, and the naive per-channel baselines.
//
// Every function writes floats in the ORIGINAL channel order, so the model's
// float linear (y = x Wᵀ) can use them unchanged:
//   Atom W4A4:      FakeQuantWeightsAtom(W) and FakeQuantActivationsAtom(x)
//                   with the layer's perm; this equals dequant(W4A4Linear)
//                   up to fp32 summation order.
//   naive W4A4:     FakeQuantPerRow(W, bits=4) (per output channel over all
//                   of K: no groups, no reorder, no keepers) and
//                   FakeQuantPerRow(x, bits=4) (per token over all of K).
//   W8A8:           FakeQuantPerRow(..., bits=8) for both.
// Atom ablations (no keepers, no GPTQ, no clipping) are recipe settings.
//
// Per-row rule (bits b, qmax = 2^(b-1) - 1): scale = fp16(min(clip * amax /
// qmax, 65504)), code = clamp(round_half_away(v / scale), -qmax - 1, qmax),
// value = code * scale.
//
// Errors: kInvalidArgument for a bad recipe/perm/Hessian (as in
// weight_quant.h / activation_quant.h), bits outside [2, 8], clip outside
// (0, 1]. Thread safety: pure; rows are split over pool. `out` may equal the
// input (in-place) for every function.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/thread_pool.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {

// out[n, k] = dequant(QuantizeLinearWeight(w, n, k, perm, hessian, recipe)),
// original channel order.
absl::Status FakeQuantWeightsAtom(const float* w, int64_t n, int64_t k, std::span<const int32_t> perm,
                                  std::span<const double> hessian, const QuantRecipe& recipe, float* out,
                                  ThreadPool* pool);

// out[t, k] = dequant(ReorderQuantize(x, tokens, k, perm, recipe)), original
// channel order.
absl::Status FakeQuantActivationsAtom(const float* x, int64_t tokens, int64_t k, std::span<const int32_t> perm,
                                      const QuantRecipe& recipe, float* out, ThreadPool* pool);

// Symmetric per-row quantization of x[rows, k] with `bits` bits over the
// whole row (weights: per output channel; activations: per token).
absl::Status FakeQuantPerRow(const float* x, int64_t rows, int64_t k, int bits, float clip, float* out,
                             ThreadPool* pool);

}  // namespace atomserve::quant
