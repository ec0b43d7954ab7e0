// Atom W4A4 linear layer on Hopper GPUs: y[M, N] = act[M, K] · weight[N, K]ᵀ
// (+ residual), both operands in the quant::W4A4Matrix format of
// kernels/quant/w4a4_format.h (the layout and numeric contract this file
// implements; read it first).
//
//   ATOMSERVE_ASSIGN_OR_RETURN(DeviceW4A4Storage w, DeviceW4A4Storage::Upload(host_weight, stream));
//   ATOMSERVE_ASSIGN_OR_RETURN(DeviceW4A4Storage x, DeviceW4A4Storage::Allocate(w.view().layout, max_tokens));
//   ... RmsNormReorderQuantize(...) into x.view()            (act_quant.h)
//   ATOMSERVE_RETURN_IF_ERROR(W4A4Gemm<__nv_bfloat16>(x.view().Rows(tokens), w.view(), hidden, hidden, stream));
//
// How it computes (Hopper has no INT4 tensor cores; s4 mma is emulated): 4-bit
// codes are unpacked in registers to INT8 and multiplied on the INT8 tensor
// cores (mma.sync m16n8k32 s8); each 128-channel group is accumulated in
// int32, then promoted into fp32 with s_a[t, g] * s_w[n, g]; the INT8 keeper
// channels are one more int32 group with their own scales. Two kernels:
//   kSkinny  (decode, M <= kSkinnyMaxTokens): weights streamed once with
//            16-byte loads, K split over the 8 warps of a block, reduced in
//            shared memory (deterministic);
//   kTiled   (prefill): 128x128 block tiles (64x64 when the GPU would not be
//            filled), a 4-stage cp.async pipeline over K groups.
//   kWgmma   (prefill, opt-in until measured): Hopper wgmma.mma_async s8 with
//            A in registers and B unpacked once per k-tile into swizzled
//            shared memory (w4a4_gemm_sm90.cuh).
// kernels/cuda/README.md has the details.
//
// Numerics: the int32 group accumulators equal quant::W4A4Accumulators
// bit for bit (W4A4GemmAccumulators returns them); each group's promotion
// float(acc) * s_a is computed exactly as in quant::PromoteAccumulators, the
// sum over groups in a different order, so fp32 outputs meet the tolerance of
// w4a4_format.h: |y - y_ref| <= 1e-5 * Σ|â·ŵ| (+ 1e-5 * |residual|). bf16 /
// fp16 outputs are the fp32 result rounded once (round to nearest even).
// Results are deterministic (no atomics on floats) for a given GPU and shape.
//
// Errors: kInvalidArgument for mismatched layouts, missing pointers, sizes
// beyond int32 indexing, misaligned code arrays (packed and keeper codes need
// 16-byte aligned rows, which DeviceW4A4Storage guarantees); kInternal from
// the CUDA runtime (launch failures included).
// Thread safety: launches are ordered on `stream`; the functions keep no
// state besides a per-process cache of the device's multiprocessor count.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::cuda {

// A non-owning device view of a quant::W4A4Matrix: the same layout, field by
// field, in device memory. Row r of each array starts at r * (its row length).
// The kernels copy fp16 scales as aligned 4-byte pairs, so `scales` and
// `keeper_scales` must stay readable up to the next 16-byte boundary past
// their last element (DeviceW4A4Storage pads them; other allocators must too).
struct DeviceW4A4Matrix {
  quant::QuantLayout layout;
  int64_t rows = 0;
  uint8_t* packed = nullptr;          // [rows][layout.packed_row_bytes()] INT4 nibble pairs
  uint16_t* scales = nullptr;         // [rows][layout.groups()] fp16 bits
  int8_t* keeper_codes = nullptr;     // [rows][layout.keeper]
  uint16_t* keeper_scales = nullptr;  // [rows] fp16 bits; nullptr when keeper == 0

  // The first `n` rows (n <= rows), e.g. this step's tokens of a buffer
  // sized for the largest batch.
  DeviceW4A4Matrix Rows(int64_t n) const {
    DeviceW4A4Matrix v = *this;
    v.rows = n;
    return v;
  }
  // Checks pointers, alignment and layout; kInvalidArgument naming `what`.
  absl::Status Validate(const char* what) const;
};

// Owns the device arrays of one W4A4 matrix (one cudaMalloc per array).
class DeviceW4A4Storage {
 public:
  DeviceW4A4Storage() = default;

  // Uninitialized storage for `rows` rows of `layout`.
  static absl::StatusOr<DeviceW4A4Storage> Allocate(const quant::QuantLayout& layout, int64_t rows);
  // Allocates and copies `host` (which must be CheckConsistent()); the copy
  // is complete when this returns.
  static absl::StatusOr<DeviceW4A4Storage> Upload(const quant::W4A4Matrix& host, cudaStream_t stream);

  const DeviceW4A4Matrix& view() const { return view_; }

 private:
  DeviceW4A4Matrix view_;
  DeviceBuffer<uint8_t> packed_;
  DeviceBuffer<uint16_t> scales_;
  DeviceBuffer<int8_t> keeper_codes_;
  DeviceBuffer<uint16_t> keeper_scales_;
};

// Copies a device matrix (all of its `rows`) into *host, resized to match;
// waits for `stream`.
absl::Status DownloadW4A4(const DeviceW4A4Matrix& dev, quant::W4A4Matrix* host, cudaStream_t stream);

// Which kernel computes the product.
enum class W4A4GemmPath {
  kAuto,    // kSkinny for M <= kSkinnyMaxTokens, else kTiled
  kSkinny,  // any M <= kSkinnyMaxTokens (kInvalidArgument above)
  kTiled,   // any M (mma.sync IMMA kernel)
  kWgmma,   // any M: Hopper wgmma kernel (w4a4_gemm_sm90.cuh); B unpacked once per
            // k-tile into swizzled shared memory, A unpacked in registers
};
inline constexpr int64_t kSkinnyMaxTokens = 64;

// Block tile of the tiled path.
enum class W4A4TileConfig {
  kAuto,      // k128x128 when that gives at least one block per SM, else k64x64
  k128x128,   // 8 warps of 64x32
  k64x64,     // 4 warps of 32x32 (kWgmma: one warpgroup, m64n64)
  // kWgmma only: 128x128 with the wgmmas of the two 64-column halves in
  // separate commit groups, promoting the first half while the second runs.
  k128x128SplitN,
};

// Output rows per block of the skinny (decode) kernel.
enum class W4A4SkinnyRows {
  kAuto,  // the defaults of w4a4_gemm.cu (32, 16 for M > 32)
  k16,    // 16 rows per block: twice the blocks (fills the SMs on N = 4096)
};

struct W4A4GemmOptions {
  W4A4GemmPath path = W4A4GemmPath::kAuto;
  W4A4TileConfig tile = W4A4TileConfig::kAuto;  // tiled / wgmma paths
  W4A4SkinnyRows skinny_rows = W4A4SkinnyRows::kAuto;  // skinny path only
};

// y[t, n] (row-major [act.rows, weight.rows]) = Σ_groups promoted
// accumulators + residual[t, n]. OutT is float, __nv_bfloat16 or __half;
// residual has the output's type and layout, may be nullptr, and may equal y
// (in-place residual add). act.layout must equal weight.layout.
template <typename OutT>
absl::Status W4A4Gemm(const DeviceW4A4Matrix& act, const DeviceW4A4Matrix& weight, const OutT* residual, OutT* y,
                      cudaStream_t stream, const W4A4GemmOptions& options = {});

// The int32 accumulators of quant::W4A4Accumulators for the whole product:
// acc[t][n][a], a < layout.accumulators() (the last one is the keeper group, 0
// when keeper == 0), computed by the same main loop as W4A4Gemm on the chosen
// path. For tests: it writes M * N * (groups + 1) int32 values.
absl::Status W4A4GemmAccumulators(const DeviceW4A4Matrix& act, const DeviceW4A4Matrix& weight, int32_t* acc,
                                  cudaStream_t stream, const W4A4GemmOptions& options = {});

// The path kAuto takes for m tokens.
W4A4GemmPath ChooseW4A4GemmPath(int64_t m);

extern template absl::Status W4A4Gemm<float>(const DeviceW4A4Matrix&, const DeviceW4A4Matrix&, const float*,
                                             float*, cudaStream_t, const W4A4GemmOptions&);
extern template absl::Status W4A4Gemm<__nv_bfloat16>(const DeviceW4A4Matrix&, const DeviceW4A4Matrix&,
                                                     const __nv_bfloat16*, __nv_bfloat16*, cudaStream_t,
                                                     const W4A4GemmOptions&);
extern template absl::Status W4A4Gemm<__half>(const DeviceW4A4Matrix&, const DeviceW4A4Matrix&, const __half*,
                                              __half*, cudaStream_t, const W4A4GemmOptions&);

}  // namespace atomserve::cuda
