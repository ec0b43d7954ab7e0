// Host side of the W4A4 GEMM: operand checks, kernel choice, launches, and
// the device storage helpers. Device code is in w4a4_gemm.cuh.
#include "kernels/cuda/w4a4_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/w4a4_gemm.cuh"
#include "kernels/cuda/w4a4_gemm_sm90.cuh"
#include "kernels/cuda/w4a4_policies.cuh"

namespace atomserve::cuda {
namespace {

using w4a4::GemmParams;

using namespace w4a4::policies;  // SkinnyM8 ... WgmmaSmall (w4a4_policies.cuh)

// Opt-in dynamic shared memory limit of sm_90 (227 KB).
constexpr int64_t kMaxSmemPerBlock = 227 * 1024;

int64_t SkinnySmemFor(int64_t m, int64_t groups) {
  if (m <= SkinnyM8::kTokens) return w4a4::SkinnySmemBytes<SkinnyM8>(groups, m);
  if (m <= SkinnyM16::kTokens) return w4a4::SkinnySmemBytes<SkinnyM16>(groups, m);
  if (m <= SkinnyM32::kTokens) return w4a4::SkinnySmemBytes<SkinnyM32>(groups, m);
  return w4a4::SkinnySmemBytes<SkinnyM64>(groups, m);
}

bool IsAligned(const void* p, uintptr_t alignment) { return reinterpret_cast<uintptr_t>(p) % alignment == 0; }

int MultiprocessorCount() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    (void)cudaGetLastError();
    return 132;
  }
  int sms = cache[device].load(std::memory_order_relaxed);
  if (sms == 0) {
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) {
      (void)cudaGetLastError();
      return 132;
    }
    cache[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

template <typename Kernel>
absl::Status AllowSharedMemory(Kernel* kernel, int bytes) {
  if (bytes > 48 * 1024) {
    ATOMSERVE_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  }
  return absl::OkStatus();
}

template <class P, typename OutT, bool kAccMode>
absl::Status LaunchSkinny(const GemmParams& p, cudaStream_t stream) {
  auto* kernel = &w4a4::W4A4SkinnyKernel<P, OutT, kAccMode>;
  const int smem = static_cast<int>(w4a4::SkinnySmemBytes<P>(p.groups, p.m));
  ATOMSERVE_RETURN_IF_ERROR(AllowSharedMemory(kernel, smem));
  const unsigned blocks = static_cast<unsigned>((p.n + P::kRows - 1) / P::kRows);
  kernel<<<blocks, P::kThreads, smem, stream>>>(p);
  ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <class P, typename OutT, bool kAccMode>
absl::Status LaunchTiled(const GemmParams& p, cudaStream_t stream) {
  auto* kernel = &w4a4::W4A4TiledKernel<P, OutT, kAccMode>;
  ATOMSERVE_RETURN_IF_ERROR(AllowSharedMemory(kernel, P::kSmemBytes));
  const int64_t blocks = static_cast<int64_t>((p.m + P::kBM - 1) / P::kBM) * ((p.n + P::kBN - 1) / P::kBN);
  kernel<<<static_cast<unsigned>(blocks), P::kThreads, P::kSmemBytes, stream>>>(p);
  ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <class P, typename OutT, bool kAccMode>
absl::Status LaunchWgmma(const GemmParams& p, cudaStream_t stream) {
  auto* kernel = &w4a4::W4A4WgmmaKernel<P, OutT, kAccMode>;
  ATOMSERVE_RETURN_IF_ERROR(AllowSharedMemory(kernel, P::kSmemBytes));
  const int64_t blocks = static_cast<int64_t>((p.m + P::kBM - 1) / P::kBM) * ((p.n + P::kBN - 1) / P::kBN);
  kernel<<<static_cast<unsigned>(blocks), P::kThreads, P::kSmemBytes, stream>>>(p);
  ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <typename OutT, bool kAccMode>
absl::Status Dispatch(const GemmParams& p, const W4A4GemmOptions& options, cudaStream_t stream) {
  W4A4GemmPath path = options.path;
  const bool automatic = path == W4A4GemmPath::kAuto;
  if (automatic) path = ChooseW4A4GemmPath(p.m);
  if (path == W4A4GemmPath::kSkinny) {
    if (p.m > kSkinnyMaxTokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("W4A4Gemm: the skinny path takes at most ", kSkinnyMaxTokens, " tokens, got ", p.m));
    }
    // The scales of the block's rows and of every token sit in shared memory:
    // beyond its budget (K of ~100k and more) only the tiled path works.
    if (SkinnySmemFor(p.m, p.groups) <= kMaxSmemPerBlock) {
      if (options.skinny_rows == W4A4SkinnyRows::k16 && p.m <= SkinnyM16R16::kTokens &&
          w4a4::SkinnySmemBytes<SkinnyM16R16>(p.groups, p.m) <= kMaxSmemPerBlock) {
        if (p.m <= SkinnyM8R16::kTokens) return LaunchSkinny<SkinnyM8R16, OutT, kAccMode>(p, stream);
        return LaunchSkinny<SkinnyM16R16, OutT, kAccMode>(p, stream);
      }
      if (p.m <= SkinnyM8::kTokens) return LaunchSkinny<SkinnyM8, OutT, kAccMode>(p, stream);
      if (p.m <= SkinnyM16::kTokens) return LaunchSkinny<SkinnyM16, OutT, kAccMode>(p, stream);
      if (p.m <= SkinnyM32::kTokens) return LaunchSkinny<SkinnyM32, OutT, kAccMode>(p, stream);
      return LaunchSkinny<SkinnyM64, OutT, kAccMode>(p, stream);
    }
    if (!automatic) {
      return absl::InvalidArgumentError(
          absl::StrCat("W4A4Gemm: ", p.groups, " groups exceed the skinny kernel's shared memory"));
    }
  }
  W4A4TileConfig tile = options.tile;
  if (tile == W4A4TileConfig::kAuto) {
    const int64_t large_blocks = static_cast<int64_t>((p.m + TiledLarge::kBM - 1) / TiledLarge::kBM) *
                                 ((p.n + TiledLarge::kBN - 1) / TiledLarge::kBN);
    tile = large_blocks >= MultiprocessorCount() ? W4A4TileConfig::k128x128 : W4A4TileConfig::k64x64;
  }
  if (path == W4A4GemmPath::kWgmma) {
    if (tile == W4A4TileConfig::k128x128) return LaunchWgmma<WgmmaLarge, OutT, kAccMode>(p, stream);
    if (tile == W4A4TileConfig::k128x128SplitN) return LaunchWgmma<WgmmaLargeSplit, OutT, kAccMode>(p, stream);
    return LaunchWgmma<WgmmaSmall, OutT, kAccMode>(p, stream);
  }
  if (tile == W4A4TileConfig::k128x128SplitN) tile = W4A4TileConfig::k128x128;
  if (tile == W4A4TileConfig::k128x128) return LaunchTiled<TiledLarge, OutT, kAccMode>(p, stream);
  return LaunchTiled<TiledSmall, OutT, kAccMode>(p, stream);
}

absl::Status CheckOperands(const DeviceW4A4Matrix& act, const DeviceW4A4Matrix& weight) {
  ATOMSERVE_RETURN_IF_ERROR(act.Validate("activations"));
  ATOMSERVE_RETURN_IF_ERROR(weight.Validate("weights"));
  if (!(act.layout == weight.layout)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W4A4Gemm operand layouts differ: activations (K=", act.layout.k, ", keeper=", act.layout.keeper,
        ") vs weights (K=", weight.layout.k, ", keeper=", weight.layout.keeper, ")"));
  }
  return absl::OkStatus();
}


}  // namespace

absl::Status DeviceW4A4Matrix::Validate(const char* what) const {
  if (rows < 0 || rows > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": row count ", rows, " outside [0, 2^31)"));
  }
  absl::Status layout_ok = quant::QuantLayout::Make(layout.k, layout.keeper, layout.group_size).status();
  if (!layout_ok.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", layout_ok.message()));
  if (layout.k > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": K=", layout.k, " is too large"));
  }
  // The kernels index rows with 32-bit offsets.
  constexpr int64_t kMaxOffset = std::numeric_limits<int32_t>::max();
  if (rows * layout.packed_row_bytes() > kMaxOffset || rows * layout.groups() > kMaxOffset ||
      rows * layout.keeper > kMaxOffset) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", rows, " rows of K=", layout.k,
                                                   " exceed 32-bit offsets; split the matrix"));
  }
  if (rows == 0) return absl::OkStatus();
  if (layout.groups() > 0 && (packed == nullptr || scales == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": packed codes or scales missing"));
  }
  if (layout.keeper > 0 && (keeper_codes == nullptr || keeper_scales == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": keeper codes or keeper scales missing"));
  }
  if (!IsAligned(packed, 16) || !IsAligned(keeper_codes, 16) || !IsAligned(scales, 4) ||
      !IsAligned(keeper_scales, 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": packed and keeper codes need 16-byte, scales 4-byte alignment (use DeviceW4A4Storage)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceW4A4Storage> DeviceW4A4Storage::Allocate(const quant::QuantLayout& layout, int64_t rows) {
  ATOMSERVE_ASSIGN_OR_RETURN(quant::QuantLayout checked,
                             quant::QuantLayout::Make(layout.k, layout.keeper, layout.group_size));
  if (rows < 0 || rows > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("DeviceW4A4Storage: row count ", rows, " outside [0, 2^31)"));
  }
  DeviceW4A4Storage s;
  ATOMSERVE_ASSIGN_OR_RETURN(s.packed_, DeviceBuffer<uint8_t>::Create(rows * checked.packed_row_bytes()));
  // Scale arrays are read with 4-byte cp.async copies of aligned pairs, so
  // they are padded to whole 16-byte lines (see DeviceW4A4Matrix).
  auto padded = [](int64_t n) { return (n + 7) / 8 * 8; };
  ATOMSERVE_ASSIGN_OR_RETURN(s.scales_, DeviceBuffer<uint16_t>::Create(padded(rows * checked.groups())));
  ATOMSERVE_ASSIGN_OR_RETURN(s.keeper_codes_, DeviceBuffer<int8_t>::Create(rows * checked.keeper));
  ATOMSERVE_ASSIGN_OR_RETURN(s.keeper_scales_, DeviceBuffer<uint16_t>::Create(checked.keeper > 0 ? padded(rows) : 0));
  s.view_.layout = checked;
  s.view_.rows = rows;
  s.view_.packed = s.packed_.data();
  s.view_.scales = s.scales_.data();
  s.view_.keeper_codes = s.keeper_codes_.data();
  s.view_.keeper_scales = s.keeper_scales_.data();
  return s;
}

absl::StatusOr<DeviceW4A4Storage> DeviceW4A4Storage::Upload(const quant::W4A4Matrix& host, cudaStream_t stream) {
  ATOMSERVE_RETURN_IF_ERROR(host.CheckConsistent());
  ATOMSERVE_ASSIGN_OR_RETURN(DeviceW4A4Storage s, Allocate(host.layout, host.rows));
  ATOMSERVE_RETURN_IF_ERROR(s.packed_.CopyFromHost(host.packed.data(), host.packed.size(), stream));
  ATOMSERVE_RETURN_IF_ERROR(s.scales_.CopyFromHost(host.scales.data(), host.scales.size(), stream));
  ATOMSERVE_RETURN_IF_ERROR(s.keeper_codes_.CopyFromHost(host.keeper_codes.data(), host.keeper_codes.size(), stream));
  ATOMSERVE_RETURN_IF_ERROR(
      s.keeper_scales_.CopyFromHost(host.keeper_scales.data(), host.keeper_scales.size(), stream));
  ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return s;
}

absl::Status DownloadW4A4(const DeviceW4A4Matrix& dev, quant::W4A4Matrix* host, cudaStream_t stream) {
  ATOMSERVE_RETURN_IF_ERROR(dev.Validate("DownloadW4A4"));
  host->Resize(dev.layout, dev.rows);
  auto copy = [&](void* dst, const void* src, size_t bytes) -> absl::Status {
    if (bytes == 0) return absl::OkStatus();
    ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    return absl::OkStatus();
  };
  ATOMSERVE_RETURN_IF_ERROR(copy(host->packed.data(), dev.packed, host->packed.size()));
  ATOMSERVE_RETURN_IF_ERROR(copy(host->scales.data(), dev.scales, host->scales.size() * sizeof(uint16_t)));
  ATOMSERVE_RETURN_IF_ERROR(copy(host->keeper_codes.data(), dev.keeper_codes, host->keeper_codes.size()));
  ATOMSERVE_RETURN_IF_ERROR(
      copy(host->keeper_scales.data(), dev.keeper_scales, host->keeper_scales.size() * sizeof(uint16_t)));
  ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

W4A4GemmPath ChooseW4A4GemmPath(int64_t m) {
  return m <= kSkinnyMaxTokens ? W4A4GemmPath::kSkinny : W4A4GemmPath::kTiled;
}

template <typename OutT>
absl::Status W4A4Gemm(const DeviceW4A4Matrix& act, const DeviceW4A4Matrix& weight, const OutT* residual, OutT* y,
                      cudaStream_t stream, const W4A4GemmOptions& options) {
  ATOMSERVE_RETURN_IF_ERROR(CheckOperands(act, weight));
  if (act.rows == 0 || weight.rows == 0) return absl::OkStatus();
  if (y == nullptr) return absl::InvalidArgumentError("W4A4Gemm: y is null");
  GemmParams p = w4a4::MakeGemmParams(act, weight);
  p.residual = residual;
  p.y = y;
  constexpr uintptr_t kPairBytes = 2 * sizeof(OutT);
  p.vector_io = p.n % 2 == 0 && IsAligned(y, kPairBytes) && IsAligned(residual, kPairBytes);
  return Dispatch<OutT, false>(p, options, stream);
}

absl::Status W4A4GemmAccumulators(const DeviceW4A4Matrix& act, const DeviceW4A4Matrix& weight, int32_t* acc,
                                  cudaStream_t stream, const W4A4GemmOptions& options) {
  ATOMSERVE_RETURN_IF_ERROR(CheckOperands(act, weight));
  if (act.rows == 0 || weight.rows == 0) return absl::OkStatus();
  if (acc == nullptr) return absl::InvalidArgumentError("W4A4GemmAccumulators: acc is null");
  GemmParams p = w4a4::MakeGemmParams(act, weight);
  p.acc = acc;
  return Dispatch<float, true>(p, options, stream);
}

template absl::Status W4A4Gemm<float>(const DeviceW4A4Matrix&, const DeviceW4A4Matrix&, const float*, float*,
                                      cudaStream_t, const W4A4GemmOptions&);
template absl::Status W4A4Gemm<__nv_bfloat16>(const DeviceW4A4Matrix&, const DeviceW4A4Matrix&,
                                              const __nv_bfloat16*, __nv_bfloat16*, cudaStream_t,
                                              const W4A4GemmOptions&);
template absl::Status W4A4Gemm<__half>(const DeviceW4A4Matrix&, const DeviceW4A4Matrix&, const __half*, __half*,
                                       cudaStream_t, const W4A4GemmOptions&);

}  // namespace atomserve::cuda
