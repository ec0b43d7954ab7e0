// Fused activation quantization kernels; act_quant.h is the contract.
#include "kernels/cuda/act_quant.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/cuda_check.h"

namespace atomserve::cuda {
namespace {

constexpr int kGroup = 128;
// Threads per block (one block per token): 256, or 1024 for rows whose
// staging buffer leaves room for only one or two blocks per SM.
constexpr int kSmallThreads = 256;
constexpr int kLargeThreads = 1024;
constexpr int64_t kLargeRowBytes = 48 * 1024;
// Largest dynamic shared memory a block may ask for on sm_90 (227 KB).
constexpr int kMaxSmemBytes = 227 * 1024;

enum class ActOp { kReorder, kRmsNorm, kSiluMul };

template <typename InT>
struct ActParams {
  const InT* x;       // x (kReorder, kRmsNorm) or gate (kSiluMul)
  const InT* up;      // kSiluMul
  const InT* weight;  // kRmsNorm
  int64_t row_stride;  // elements between rows of x (and up)
  float eps;
  float clip;
  int k;
  int normal_k;
  int groups;
  int keeper;
  const int32_t* perm;  // nullptr = identity
  bool vector_loads;    // 16-byte loads allowed
  uint8_t* packed;
  uint16_t* scales;
  int8_t* keeper_codes;
  uint16_t* keeper_scales;
};

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

// The float definitions of activation_quant.h.
__device__ __forceinline__ float SiluMul(float gate, float up) { return (gate / (1.0f + expf(-gate))) * up; }

// clamp(round_half_away(q), qmin, qmax), 0 for NaN: quant::RoundClamp.
__device__ __forceinline__ int RoundClamp(float q, int qmin, int qmax) {
  q = q == q ? q : 0.0f;
  q = fminf(fmaxf(q, static_cast<float>(qmin - 1)), static_cast<float>(qmax + 1));
  const int r = static_cast<int>(roundf(q));
  return min(max(r, qmin), qmax);
}
__device__ __forceinline__ int QuantizeSymmetric(float x, float scale, int qmin, int qmax) {
  return scale == 0.0f ? 0 : RoundClamp(x / scale, qmin, qmax);
}
__device__ __forceinline__ uint16_t HalfBits(float v) { return __half_as_ushort(__float2half_rn(v)); }
__device__ __forceinline__ float FromHalfBits(uint16_t b) { return __half2float(__ushort_as_half(b)); }

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions in a fixed order (deterministic); scratch holds kWarps
// values; every thread gets the result.
template <int kWarps>
__device__ double BlockSum(double v, double* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // scratch may still be read by an earlier reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double sum = 0.0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum += scratch[w];
  return sum;
}
template <int kWarps>
__device__ float BlockMax(float v, float* scratch) {
  v = WarpMax(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

template <typename InT>
struct Vec {
  static constexpr int kSize = 16 / sizeof(InT);
  __device__ static void Load(const InT* p, float (&out)[kSize]) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const InT* e = reinterpret_cast<const InT*>(&raw);
#pragma unroll
    for (int i = 0; i < kSize; ++i) out[i] = ToFloat(e[i]);
  }
};

// What the row buffer holds per channel: the op's float output for SiLU·up,
// else the input element itself (exact; half the bytes for 16-bit inputs).
template <ActOp kOp, typename InT>
using StageT = std::conditional_t<kOp == ActOp::kSiluMul, float, InT>;

// Stage 1: row[c] (input order) = the input element (kReorder, kRmsNorm; and
// wrow[c] = the RMSNorm weight) or the SiLU·up float; returns the sum of
// squares (kRmsNorm) of this thread's channels. The vector path issues up to
// 4 independent 16-byte loads per thread before using any of them.
template <ActOp kOp, typename InT, int kThreads>
__device__ double StageRow(const ActParams<InT>& p, int64_t t, StageT<kOp, InT>* row, InT* wrow) {
  const InT* x = p.x + t * p.row_stride;
  const InT* up = kOp == ActOp::kSiluMul ? p.up + t * p.row_stride : nullptr;
  double ss = 0.0;
  if (p.vector_loads) {
    constexpr int V = Vec<InT>::kSize;
    constexpr int kU = 4;
    const int nv = p.k / V;
    for (int i0 = threadIdx.x; i0 < nv; i0 += kU * kThreads) {
      uint4 xr[kU], ur[kU], wr[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int i = i0 + u * kThreads;
        if (i < nv) {
          xr[u] = __ldg(reinterpret_cast<const uint4*>(x) + i);
          if constexpr (kOp == ActOp::kSiluMul) ur[u] = __ldg(reinterpret_cast<const uint4*>(up) + i);
          if constexpr (kOp == ActOp::kRmsNorm) wr[u] = __ldg(reinterpret_cast<const uint4*>(p.weight) + i);
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int i = i0 + u * kThreads;
        if (i >= nv) break;
        const InT* xe = reinterpret_cast<const InT*>(&xr[u]);
        if constexpr (kOp == ActOp::kSiluMul) {
          const InT* ue = reinterpret_cast<const InT*>(&ur[u]);
          float out[V];
#pragma unroll
          for (int e = 0; e < V; ++e) out[e] = SiluMul(ToFloat(xe[e]), ToFloat(ue[e]));
#pragma unroll
          for (int e = 0; e < V; e += 4) {
            *reinterpret_cast<float4*>(row + i * V + e) = make_float4(out[e], out[e + 1], out[e + 2], out[e + 3]);
          }
        } else {
          *reinterpret_cast<uint4*>(row + i * V) = xr[u];
          if constexpr (kOp == ActOp::kRmsNorm) {
            *reinterpret_cast<uint4*>(wrow + i * V) = wr[u];
#pragma unroll
            for (int e = 0; e < V; ++e) {
              const float xv = ToFloat(xe[e]);
              ss += static_cast<double>(xv) * xv;
            }
          }
        }
      }
    }
  } else {
    for (int c = threadIdx.x; c < p.k; c += kThreads) {
      const float xv = ToFloat(x[c]);
      if constexpr (kOp == ActOp::kSiluMul) {
        row[c] = SiluMul(xv, ToFloat(up[c]));
      } else {
        row[c] = x[c];
        if constexpr (kOp == ActOp::kRmsNorm) {
          wrow[c] = p.weight[c];
          ss += static_cast<double>(xv) * xv;
        }
      }
    }
  }
  return ss;
}

// Row buffer bytes: the staged row (16-byte multiple), then the RMSNorm weights.
template <ActOp kOp, typename InT>
int64_t RowBytes(int64_t k) {
  const int64_t staged = (k * static_cast<int64_t>(sizeof(StageT<kOp, InT>)) + 15) / 16 * 16;
  return staged + (kOp == ActOp::kRmsNorm ? k * static_cast<int64_t>(sizeof(InT)) : 0);
}

template <ActOp kOp, typename InT, int kThreads>
__global__ void __launch_bounds__(kThreads) ActQuantKernel(const ActParams<InT> p) {
  constexpr int kWarps = kThreads / 32;
  extern __shared__ __align__(16) uint8_t row_smem[];
  using S = StageT<kOp, InT>;
  S* row = reinterpret_cast<S*>(row_smem);
  InT* wrow = reinterpret_cast<InT*>(row_smem + (p.k * static_cast<int>(sizeof(S)) + 15) / 16 * 16);
  __shared__ double dscratch[kWarps];
  __shared__ float fscratch[kWarps];
  const int64_t t = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  const double ss = StageRow<kOp, InT, kThreads>(p, t, row, wrow);
  float inv_rms = 1.0f;
  if constexpr (kOp == ActOp::kRmsNorm) {
    const double total = BlockSum<kWarps>(ss, dscratch);
    inv_rms = static_cast<float>(1.0 / sqrt(total / static_cast<double>(p.k) + static_cast<double>(p.eps)));
  } else {
    __syncthreads();
  }
  // Value at quantized position j.
  auto value = [&](int j) -> float {
    int c = p.perm != nullptr ? __ldg(p.perm + j) : j;
    c = static_cast<unsigned>(c) < static_cast<unsigned>(p.k) ? c : 0;
    if constexpr (kOp == ActOp::kRmsNorm) return (ToFloat(row[c]) * inv_rms) * ToFloat(wrow[c]);
    return ToFloat(row[c]);
  };
  // Values at quantized positions j0 .. j0 + 3 (j0 % 4 == 0; one 16-byte perm load).
  auto value4 = [&](int j0, float (&v)[4]) {
    if (p.perm != nullptr && j0 + 3 < p.normal_k) {
      const int4 c4 = __ldg(reinterpret_cast<const int4*>(p.perm + j0));
      const int cs[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int c = static_cast<unsigned>(cs[i]) < static_cast<unsigned>(p.k) ? cs[i] : 0;
        if constexpr (kOp == ActOp::kRmsNorm) {
          v[i] = (ToFloat(row[c]) * inv_rms) * ToFloat(wrow[c]);
        } else {
          v[i] = ToFloat(row[c]);
        }
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = j0 + i < p.normal_k ? value(j0 + i) : 0.0f;  // padding quantizes to 0
  };

  // Keeper channels: one INT8 scale over all of them (block-wide max).
  if (p.keeper > 0) {
    float m = 0.0f;
    for (int i = threadIdx.x; i < p.keeper; i += kThreads) m = fmaxf(m, fabsf(value(p.normal_k + i)));
    const float amax = BlockMax<kWarps>(m, fscratch);
    const uint16_t bits = HalfBits(fminf(amax / 127.0f, 65504.0f));
    const float scale = FromHalfBits(bits);
    int8_t* codes = p.keeper_codes + t * p.keeper;
    for (int i = threadIdx.x; i < p.keeper; i += kThreads) {
      codes[i] = static_cast<int8_t>(QuantizeSymmetric(value(p.normal_k + i), scale, -128, 127));
    }
    if (threadIdx.x == 0) p.keeper_scales[t] = bits;
  }

  // INT4 groups: a warp per group, 4 consecutive channels per lane.
  uint8_t* packed = p.packed + t * (static_cast<int64_t>(p.groups) * 64);
  for (int g = warp; g < p.groups; g += kWarps) {
    const int j0 = g * kGroup + lane * 4;
    float v[4];
    value4(j0, v);
    float m = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) m = fmaxf(m, fabsf(v[i]));
    const float amax = WarpMax(m);
    const uint16_t bits = HalfBits(fminf((p.clip * amax) / 7.0f, 65504.0f));
    const float scale = FromHalfBits(bits);
    uint32_t nibbles = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) nibbles |= (static_cast<uint32_t>(QuantizeSymmetric(v[i], scale, -8, 7)) & 0xfu) << (4 * i);
    reinterpret_cast<uint16_t*>(packed + g * 64)[lane] = static_cast<uint16_t>(nibbles);
    if (lane == 0) p.scales[t * p.groups + g] = bits;
  }
}

template <ActOp kOp, typename InT>
absl::Status Launch(const ActParams<InT>& base, int64_t tokens, const DeviceW4A4Matrix& out, cudaStream_t stream,
                    bool input_aligned) {
  ATOMSERVE_RETURN_IF_ERROR(out.Validate("activation quantization output"));
  if (tokens < 0 || tokens > out.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation quantization: ", tokens, " tokens do not fit ", out.rows, " output rows"));
  }
  if (!(base.clip > 0.0f && base.clip <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("activation quantization: act_clip must be in (0, 1], got ", base.clip));
  }
  if (tokens > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("activation quantization: too many tokens");
  }
  const int64_t smem = RowBytes<kOp, InT>(out.layout.k);
  if (smem > kMaxSmemBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation quantization: K=", out.layout.k, " exceeds the shared-memory row buffer"));
  }
  if (tokens == 0) return absl::OkStatus();
  ActParams<InT> p = base;
  p.k = static_cast<int>(out.layout.k);
  p.normal_k = static_cast<int>(out.layout.normal_k());
  p.groups = static_cast<int>(out.layout.groups());
  p.keeper = static_cast<int>(out.layout.keeper);
  p.packed = out.packed;
  p.scales = out.scales;
  p.keeper_codes = out.keeper_codes;
  p.keeper_scales = out.keeper_scales;
  constexpr int V = Vec<InT>::kSize;
  p.vector_loads = input_aligned && p.k % V == 0 && p.row_stride % V == 0;
  const bool large = smem > kLargeRowBytes;
  auto* kernel = large ? &ActQuantKernel<kOp, InT, kLargeThreads> : &ActQuantKernel<kOp, InT, kSmallThreads>;
  if (smem > 48 * 1024) {
    ATOMSERVE_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  kernel<<<static_cast<unsigned>(tokens), large ? kLargeThreads : kSmallThreads, static_cast<size_t>(smem), stream>>>(p);
  ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

template <typename InT>
absl::Status RmsNormReorderQuantize(const InT* x, const InT* norm_weight, float eps, int64_t tokens,
                                    const int32_t* perm, float act_clip, const DeviceW4A4Matrix& out,
                                    cudaStream_t stream) {
  if (tokens > 0 && (x == nullptr || norm_weight == nullptr)) {
    return absl::InvalidArgumentError("RmsNormReorderQuantize: x or norm_weight is null");
  }
  ActParams<InT> p{};
  p.x = x;
  p.weight = norm_weight;
  p.row_stride = out.layout.k;
  p.eps = eps;
  p.clip = act_clip;
  p.perm = perm;
  return Launch<ActOp::kRmsNorm>(p, tokens, out, stream, Aligned16(x) && Aligned16(norm_weight));
}

template <typename InT>
absl::Status SiluMulQuantize(const InT* gate, const InT* up, int64_t row_stride, int64_t tokens,
                             const int32_t* perm, float act_clip, const DeviceW4A4Matrix& out, cudaStream_t stream) {
  if (tokens > 0 && (gate == nullptr || up == nullptr)) {
    return absl::InvalidArgumentError("SiluMulQuantize: gate or up is null");
  }
  if (row_stride < out.layout.k) {
    return absl::InvalidArgumentError(
        absl::StrCat("SiluMulQuantize: row_stride ", row_stride, " < K=", out.layout.k));
  }
  ActParams<InT> p{};
  p.x = gate;
  p.up = up;
  p.row_stride = row_stride;
  p.clip = act_clip;
  p.perm = perm;
  return Launch<ActOp::kSiluMul>(p, tokens, out, stream, Aligned16(gate) && Aligned16(up));
}

template <typename InT>
absl::Status ReorderQuantize(const InT* x, int64_t tokens, const int32_t* perm, float act_clip,
                             const DeviceW4A4Matrix& out, cudaStream_t stream) {
  if (tokens > 0 && x == nullptr) return absl::InvalidArgumentError("ReorderQuantize: x is null");
  ActParams<InT> p{};
  p.x = x;
  p.row_stride = out.layout.k;
  p.clip = act_clip;
  p.perm = perm;
  return Launch<ActOp::kReorder>(p, tokens, out, stream, Aligned16(x));
}

#define ATOMSERVE_ACT_QUANT_INSTANTIATE(T)                                                                     \
  template absl::Status RmsNormReorderQuantize<T>(const T*, const T*, float, int64_t, const int32_t*, float,  \
                                                  const DeviceW4A4Matrix&, cudaStream_t);                     \
  template absl::Status SiluMulQuantize<T>(const T*, const T*, int64_t, int64_t, const int32_t*, float,       \
                                           const DeviceW4A4Matrix&, cudaStream_t);                            \
  template absl::Status ReorderQuantize<T>(const T*, int64_t, const int32_t*, float, const DeviceW4A4Matrix&, \
                                           cudaStream_t);
ATOMSERVE_ACT_QUANT_INSTANTIATE(float)
ATOMSERVE_ACT_QUANT_INSTANTIATE(__nv_bfloat16)
ATOMSERVE_ACT_QUANT_INSTANTIATE(__half)
#undef ATOMSERVE_ACT_QUANT_INSTANTIATE

}  // namespace atomserve::cuda
