// The bit-exact integer reference of Atom's W4A4 linear layer on the CPU.
//
// y[T, N] = dequant(act)[T, K] · dequant(weight)[N, K]ᵀ (+ residual), computed
// the way a tensor-core kernel does it: int32 accumulation of code products
// per 128-channel group (and one more for the INT8 keepers), then the fp32
// promotion PromoteAccumulators() (w4a4_format.h gives the exact formula and
// the tolerance for GPU float outputs). Both operands are in reordered channel
// order with the same QuantLayout.
//
// It is the oracle for GPU kernels (W4A4Accumulators gives the int32 values
// they must reproduce exactly) and also the CPU backend's quantized linear:
// codes are unpacked once per call (activations) or once per thread's range
// of output rows (weights) into int16 lanes, so the inner loop is an exact
// int32 dot product the compiler turns into pair multiply-adds (vpmaddwd /
// vpdpwssd); tokens are swept in L2-sized blocks and output rows are split
// over the thread pool.
//
//   W4A4Matrix xq;  // from RmsNormReorderQuantize etc.
//   ATOMSERVE_RETURN_IF_ERROR(W4A4Linear(xq, wq, /*residual=*/nullptr, y, pool));
//
// Errors: kInvalidArgument when either matrix is inconsistent or their
// layouts differ, or (accumulators) a range is out of bounds.
// Thread safety: reads its inputs, writes only its output.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/thread_pool.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {

// y[t, n] (row-major [act.rows, weight.rows]) = PromoteAccumulators(...) +
// residual[t, n]. residual may be nullptr, or equal to y (in-place add).
absl::Status W4A4Linear(const W4A4Matrix& act, const W4A4Matrix& weight, const float* residual, float* y,
                        ThreadPool* pool);

// The int32 accumulators of the tile tokens [t_begin, t_end) x outputs
// [n_begin, n_end): acc[(t - t_begin)][(n - n_begin)][a] with
// a < layout.accumulators() (= groups + 1; the last is the keeper group, 0 when
// keeper == 0). Single-threaded; meant for GPU tests on modest tiles.
absl::Status W4A4Accumulators(const W4A4Matrix& act, const W4A4Matrix& weight, int64_t t_begin, int64_t t_end,
                              int64_t n_begin, int64_t n_end, int32_t* acc);

}  // namespace atomserve::quant
