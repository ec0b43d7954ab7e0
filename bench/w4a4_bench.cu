// W4A4 GEMM and fused activation-quantization benchmark against cuBLAS BF16
// (cublasGemmEx, CUBLAS_COMPUTE_32F, bf16 in/out) and cuBLASLt FP8 (e4m3 in,
// bf16 out), on Llama-2-7B and -70B linear shapes, in one process.
//
//   w4a4_bench            full run (decode M = 1, 8, 16; prefill M = 2048, 4096)
//   w4a4_bench --quick    M = 1, 16, 4096 and fewer repetitions
//   w4a4_bench --paths    also time each kernel forced (skinny, tiled 128x128, tiled 64x64)
//   w4a4_bench --mid      also M = 32, 64, 128, 256, 512 (to tune the path choice)
//   w4a4_bench --diag     also the leave-one-out DIAGNOSTIC variants of the prefill
//                         kernels at M=4096, N=K=8192 (WRONG numbers by design:
//                         they skip a stage; only their times mean anything),
//                         and each prefill kernel's registers / shared memory
//
// Method (.library/device/METHOD.md): random data (never zeros), every
// kernel warmed up, R launches captured in a CUDA graph cycling through R
// copies of the operands so that they exceed 3x the L2 size when one copy
// fits in it, each graph replay timed with CUDA events, the median over
// replays divided by R. Decode rows report GB/s of weight bytes read
// (W4A4: codes + scales + keepers; BF16: 2 bytes per weight; FP8: 1) and the
// speedup over BF16; prefill rows report TOPS (2·M·N·K / time) and the
// speedup. Targets (reported, not asserted): decode >= 3x, prefill >= 1.6x
// over cuBLAS BF16. The summary table is printed last.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/act_quant.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/w4a4_gemm.h"
// Device code, for the --diag kernels only (bench-only instantiations).
#include "kernels/cuda/w4a4_gemm.cuh"
#include "kernels/cuda/w4a4_gemm_sm90.cuh"
#include "kernels/cuda/w4a4_policies.cuh"

namespace atomserve::cuda {
namespace {

#define BENCH_CHECK(expr)                                                                         \
  do {                                                                                            \
    absl::Status _st = (expr);                                                                    \
    if (!_st.ok()) {                                                                              \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, std::string(_st.message()).c_str()); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)
#define CUBLAS_CHECK(expr)                                                                      \
  do {                                                                                          \
    cublasStatus_t _s = (expr);                                                                 \
    if (_s != CUBLAS_STATUS_SUCCESS) {                                                          \
      std::fprintf(stderr, "%s:%d: %s failed: %d\n", __FILE__, __LINE__, #expr, static_cast<int>(_s)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

// ── Random device data ──────────────────────────────────────────────────────

__device__ __forceinline__ uint32_t Hash(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
__device__ __forceinline__ float Uniform(uint64_t seed, size_t i) {  // [0, 1)
  return (Hash(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f);
}
__global__ void FillBytes(uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    p[i] = static_cast<uint8_t>(Hash(seed * 0x9e3779b97f4a7c15ull + i));
  }
}
__global__ void FillHalfBits(uint16_t* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    p[i] = __half_as_ushort(__float2half_rn(lo + (hi - lo) * Uniform(seed, i)));
  }
}
template <typename T>
__global__ void FillReal(T* p, size_t n, uint64_t seed, float amplitude) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    p[i] = static_cast<T>(amplitude * (2.0f * Uniform(seed, i) - 1.0f));
  }
}
constexpr int kFillBlocks = 1024, kFillThreads = 256;

void RandomW4A4(const DeviceW4A4Matrix& m, uint64_t seed) {
  const quant::QuantLayout& l = m.layout;
  if (l.groups() > 0) {
    FillBytes<<<kFillBlocks, kFillThreads>>>(m.packed, m.rows * l.packed_row_bytes(), seed);
    FillHalfBits<<<kFillBlocks, kFillThreads>>>(m.scales, m.rows * l.groups(), seed + 1, 0.001f, 0.02f);
  }
  if (l.keeper > 0) {
    FillBytes<<<kFillBlocks, kFillThreads>>>(reinterpret_cast<uint8_t*>(m.keeper_codes), m.rows * l.keeper, seed + 2);
    FillHalfBits<<<kFillBlocks, kFillThreads>>>(m.keeper_scales, m.rows, seed + 3, 0.001f, 0.02f);
  }
  ATOMSERVE_CUDA_CHECK(cudaGetLastError());
}
template <typename T>
DeviceBuffer<T> RandomBuffer(size_t n, uint64_t seed, float amplitude) {
  absl::StatusOr<DeviceBuffer<T>> buf = DeviceBuffer<T>::Create(n);
  BENCH_CHECK(buf.status());
  FillReal<T><<<kFillBlocks, kFillThreads>>>(buf->data(), n, seed, amplitude);
  ATOMSERVE_CUDA_CHECK(cudaGetLastError());
  return std::move(*buf);
}

// ── Timing ──────────────────────────────────────────────────────────────────

struct Options {
  bool quick = false;
  bool paths = false;
  bool mid = false;
  bool diag = false;
  int reps() const { return quick ? 7 : 25; }
};

// Median time of one launch(r) in microseconds: `copies` launches (r = 0 ..
// copies - 1) are captured in a graph; each replay is timed with events.
double TimeUs(const std::function<void(int)>& launch, int copies, int reps, cudaStream_t stream) {
  for (int r = 0; r < copies; ++r) launch(r);  // warm-up (also creates handles, sets attributes)
  ATOMSERVE_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ATOMSERVE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  for (int r = 0; r < copies; ++r) launch(r);
  ATOMSERVE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  ATOMSERVE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 2; ++i) ATOMSERVE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  std::vector<cudaEvent_t> events(2 * reps);
  for (cudaEvent_t& e : events) ATOMSERVE_CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    ATOMSERVE_CUDA_CHECK(cudaEventRecord(events[2 * i], stream));
    ATOMSERVE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    ATOMSERVE_CUDA_CHECK(cudaEventRecord(events[2 * i + 1], stream));
  }
  ATOMSERVE_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> us(reps);
  for (int i = 0; i < reps; ++i) {
    float ms = 0.0f;
    ATOMSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]));
    us[i] = 1000.0 * ms / copies;
  }
  for (cudaEvent_t& e : events) ATOMSERVE_CUDA_CHECK(cudaEventDestroy(e));
  ATOMSERVE_CUDA_CHECK(cudaGraphExecDestroy(exec));
  ATOMSERVE_CUDA_CHECK(cudaGraphDestroy(graph));
  std::nth_element(us.begin(), us.begin() + reps / 2, us.end());
  return us[reps / 2];
}

// Copies of an operand set needed so that all copies together exceed 3x L2.
int CopiesFor(size_t bytes_per_copy, size_t l2_bytes) {
  const size_t want = 3 * l2_bytes;
  return static_cast<int>(std::clamp<size_t>((want + bytes_per_copy - 1) / bytes_per_copy, 1, 48));
}

// ── Baselines ───────────────────────────────────────────────────────────────

struct Blas {
  cublasHandle_t handle = nullptr;
  cublasLtHandle_t lt = nullptr;
  DeviceBuffer<uint8_t> workspace;
  static constexpr size_t kWorkspaceBytes = 64ull << 20;
};

// y[M][N] (row-major bf16) = x[M][K] · w[N][K]ᵀ: column-major C(N x M) = Wᵀ·X.
void Bf16Gemm(Blas& b, const __nv_bfloat16* w, const __nv_bfloat16* x, __nv_bfloat16* y, int m, int n, int k) {
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(b.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k,
                            &beta, y, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// FP8 e4m3 x e4m3 -> bf16 through cuBLASLt (the TN layout FP8 requires).
struct Fp8Plan {
  bool ok = false;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulHeuristicResult_t heuristic{};

  Fp8Plan(Blas& blas, int m, int n, int k) {
    const cublasOperation_t t = CUBLAS_OP_T, nt = CUBLAS_OP_N;
    if (cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof(nt));
    cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, k, n, k);
    cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, k, m, k);
    cublasLtMatrixLayoutCreate(&c, CUDA_R_16BF, n, m, n);
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulPreferenceCreate(&pref);
    const size_t ws = Blas::kWorkspaceBytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    int found = 0;
    ok = cublasLtMatmulAlgoGetHeuristic(blas.lt, op, a, b, c, c, pref, 1, &heuristic, &found) ==
             CUBLAS_STATUS_SUCCESS &&
         found > 0;
    cublasLtMatmulPreferenceDestroy(pref);
  }
  ~Fp8Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
  }
  bool Run(Blas& blas, const void* w, const void* x, void* y, cudaStream_t stream) const {
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(blas.lt, op, &alpha, w, a, x, b, &beta, y, c, y, c, &heuristic.algo,
                          blas.workspace.data(), Blas::kWorkspaceBytes, stream) == CUBLAS_STATUS_SUCCESS;
  }
};

// ── GEMM benchmark ──────────────────────────────────────────────────────────

struct GemmShape {
  const char* model;
  const char* layer;
  int n, k;
};
const GemmShape kGemmShapes[] = {
    {"7B", "qkvo 4096x4096", 4096, 4096},   {"7B", "gate/up 11008x4096", 11008, 4096},
    {"7B", "down 4096x11008", 4096, 11008}, {"70B", "qkvo 8192x8192", 8192, 8192},
    {"70B", "gate/up 28672x8192", 28672, 8192}, {"70B", "down 8192x28672", 8192, 28672},
};
constexpr int kKeeper = 128;

struct GemmRow {
  std::string model, layer;
  int m;
  double bf16_us = 0, fp8_us = 0, w4a4_us = 0;
  const char* alt_names[3] = {nullptr, nullptr, nullptr};  // --paths: forced kernels
  double alt_us[3] = {0, 0, 0};
  std::vector<std::pair<std::string, double>> variants;  // always timed: the candidate kernels
  double w4a4_weight_bytes = 0, bf16_weight_bytes = 0;
  double ops = 0;
};

double W4A4Bytes(const quant::QuantLayout& l, int64_t rows) {
  return static_cast<double>(rows) * (l.packed_row_bytes() + 2 * l.groups() + l.keeper + (l.keeper > 0 ? 2 : 0));
}

GemmRow BenchGemm(const GemmShape& s, int m, const Options& opt, Blas& blas, size_t l2, cudaStream_t stream) {
  GemmRow row{s.model, s.layer, m};
  const quant::QuantLayout layout = *quant::QuantLayout::Make(s.k, kKeeper);
  row.w4a4_weight_bytes = W4A4Bytes(layout, s.n);
  row.bf16_weight_bytes = 2.0 * s.n * s.k;
  row.ops = 2.0 * m * s.n * s.k;
  const bool decode = m <= 64;

  {  // W4A4
    const double bytes = row.w4a4_weight_bytes + W4A4Bytes(layout, m) + 2.0 * m * s.n;
    const int copies = decode ? CopiesFor(static_cast<size_t>(bytes), l2) : 1;
    std::vector<DeviceW4A4Storage> w, a;
    std::vector<DeviceBuffer<__nv_bfloat16>> y;
    for (int r = 0; r < copies; ++r) {
      absl::StatusOr<DeviceW4A4Storage> wr = DeviceW4A4Storage::Allocate(layout, s.n);
      absl::StatusOr<DeviceW4A4Storage> ar = DeviceW4A4Storage::Allocate(layout, m);
      absl::StatusOr<DeviceBuffer<__nv_bfloat16>> yr = DeviceBuffer<__nv_bfloat16>::Create(static_cast<size_t>(m) * s.n);
      BENCH_CHECK(wr.status());
      BENCH_CHECK(ar.status());
      BENCH_CHECK(yr.status());
      RandomW4A4(wr->view(), 100 + r);
      RandomW4A4(ar->view(), 200 + r);
      w.push_back(std::move(*wr));
      a.push_back(std::move(*ar));
      y.push_back(std::move(*yr));
    }
    ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
    auto time_path = [&](W4A4GemmPath path, W4A4TileConfig tile) {
      W4A4GemmOptions o;
      o.path = path;
      o.tile = tile;
      return TimeUs(
          [&](int r) {
            BENCH_CHECK(W4A4Gemm<__nv_bfloat16>(a[r].view(), w[r].view(), nullptr, y[r].data(), stream, o));
          },
          copies, opt.reps(), stream);
    };
    row.w4a4_us = time_path(W4A4GemmPath::kAuto, W4A4TileConfig::kAuto);
    if (decode) {
      if (m <= 16) {
        W4A4GemmOptions o;
        o.path = W4A4GemmPath::kSkinny;
        o.skinny_rows = W4A4SkinnyRows::k16;
        row.variants.emplace_back("skinny16rows", TimeUs(
            [&](int r) {
              BENCH_CHECK(W4A4Gemm<__nv_bfloat16>(a[r].view(), w[r].view(), nullptr, y[r].data(), stream, o));
            },
            copies, opt.reps(), stream));
      }
    } else {
      row.variants.emplace_back("tiled128", time_path(W4A4GemmPath::kTiled, W4A4TileConfig::k128x128));
      row.variants.emplace_back("wgmma128", time_path(W4A4GemmPath::kWgmma, W4A4TileConfig::k128x128));
      row.variants.emplace_back("wgmma128split", time_path(W4A4GemmPath::kWgmma, W4A4TileConfig::k128x128SplitN));
      row.variants.emplace_back("wgmma64", time_path(W4A4GemmPath::kWgmma, W4A4TileConfig::k64x64));
    }
    if (opt.paths) {
      if (m <= kSkinnyMaxTokens) {
        row.alt_names[0] = "skinny";
        row.alt_us[0] = time_path(W4A4GemmPath::kSkinny, W4A4TileConfig::kAuto);
      }
      row.alt_names[1] = "tiled128";
      row.alt_us[1] = time_path(W4A4GemmPath::kTiled, W4A4TileConfig::k128x128);
      row.alt_names[2] = "tiled64";
      row.alt_us[2] = time_path(W4A4GemmPath::kTiled, W4A4TileConfig::k64x64);
    }
  }
  {  // BF16
    const double bytes = row.bf16_weight_bytes + 2.0 * m * s.k + 2.0 * m * s.n;
    const int copies = decode ? CopiesFor(static_cast<size_t>(bytes), l2) : 1;
    std::vector<DeviceBuffer<__nv_bfloat16>> w, x, y;
    for (int r = 0; r < copies; ++r) {
      w.push_back(RandomBuffer<__nv_bfloat16>(static_cast<size_t>(s.n) * s.k, 300 + r, 0.05f));
      x.push_back(RandomBuffer<__nv_bfloat16>(static_cast<size_t>(m) * s.k, 400 + r, 1.0f));
      y.push_back(RandomBuffer<__nv_bfloat16>(static_cast<size_t>(m) * s.n, 500 + r, 1.0f));
    }
    ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
    row.bf16_us = TimeUs([&](int r) { Bf16Gemm(blas, w[r].data(), x[r].data(), y[r].data(), m, s.n, s.k); }, copies,
                         opt.reps(), stream);
  }
  {  // FP8 (cuBLASLt), when it has an algorithm for the shape
    Fp8Plan plan(blas, m, s.n, s.k);
    if (plan.ok) {
      const double bytes = 1.0 * s.n * s.k + 1.0 * m * s.k + 2.0 * m * s.n;
      const int copies = decode ? CopiesFor(static_cast<size_t>(bytes), l2) : 1;
      std::vector<DeviceBuffer<__nv_fp8_e4m3>> w, x;
      std::vector<DeviceBuffer<__nv_bfloat16>> y;
      for (int r = 0; r < copies; ++r) {
        w.push_back(RandomBuffer<__nv_fp8_e4m3>(static_cast<size_t>(s.n) * s.k, 600 + r, 4.0f));
        x.push_back(RandomBuffer<__nv_fp8_e4m3>(static_cast<size_t>(m) * s.k, 700 + r, 4.0f));
        y.push_back(RandomBuffer<__nv_bfloat16>(static_cast<size_t>(m) * s.n, 800 + r, 1.0f));
      }
      ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
      // A shape cuBLASLt accepts in the heuristic may still fail to run: then n/a.
      const bool runs = plan.Run(blas, w[0].data(), x[0].data(), y[0].data(), stream) &&
                        cudaStreamSynchronize(stream) == cudaSuccess;
      if (runs) {
        row.fp8_us = TimeUs(
            [&](int r) {
              if (!plan.Run(blas, w[r].data(), x[r].data(), y[r].data(), stream)) {
                std::fprintf(stderr, "cublasLtMatmul (FP8) failed\n");
                std::exit(1);
              }
            },
            copies, opt.reps(), stream);
      } else {
        (void)cudaGetLastError();
      }
    }
  }
  return row;
}

// ── Activation quantization benchmark ───────────────────────────────────────

struct ActRow {
  std::string op;
  int tokens, k;
  double us = 0, bytes = 0;
};

ActRow BenchActQuant(const char* op, int tokens, int k, const Options& opt, size_t l2, cudaStream_t stream) {
  ActRow row{op, tokens, k};
  const quant::QuantLayout layout = *quant::QuantLayout::Make(k, kKeeper);
  const bool silu = std::strcmp(op, "silu*up") == 0;
  const bool rms = std::strcmp(op, "rmsnorm") == 0;
  const double in_bytes = (silu ? 4.0 : 2.0) * tokens * k + (rms ? 2.0 * k : 0.0);
  row.bytes = in_bytes + W4A4Bytes(layout, tokens);
  const int copies = CopiesFor(static_cast<size_t>(row.bytes), l2);
  std::vector<DeviceBuffer<__nv_bfloat16>> x;
  std::vector<DeviceW4A4Storage> out;
  for (int r = 0; r < copies; ++r) {
    x.push_back(RandomBuffer<__nv_bfloat16>(static_cast<size_t>(tokens) * k * (silu ? 2 : 1), 900 + r, 3.0f));
    absl::StatusOr<DeviceW4A4Storage> o = DeviceW4A4Storage::Allocate(layout, tokens);
    BENCH_CHECK(o.status());
    out.push_back(std::move(*o));
  }
  DeviceBuffer<__nv_bfloat16> weight = RandomBuffer<__nv_bfloat16>(k, 999, 1.0f);
  std::vector<int32_t> perm(k);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
  absl::StatusOr<DeviceBuffer<int32_t>> dperm = DeviceBuffer<int32_t>::Create(k);
  BENCH_CHECK(dperm.status());
  BENCH_CHECK(dperm->CopyFromHost(perm.data(), k, stream));
  ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  const float clip = 0.9f;
  row.us = TimeUs(
      [&](int r) {
        const __nv_bfloat16* in = x[r].data();
        if (silu) {  // fused gate_up rows [gate | up]; MLP rows pre-permuted: identity perm
          BENCH_CHECK(SiluMulQuantize<__nv_bfloat16>(in, in + k, 2 * k, tokens, nullptr, clip, out[r].view(), stream));
        } else if (rms) {
          BENCH_CHECK(RmsNormReorderQuantize<__nv_bfloat16>(in, weight.data(), 1e-5f, tokens, dperm->data(), clip,
                                                            out[r].view(), stream));
        } else {
          BENCH_CHECK(ReorderQuantize<__nv_bfloat16>(in, tokens, dperm->data(), clip, out[r].view(), stream));
        }
      },
      copies, opt.reps(), stream);
  return row;
}

// ── Leave-one-out diagnostics (--diag) ─────────────────────────────────────
// The prefill kernels instantiated here with a nonzero kDiag (w4a4_gemm.cuh:
// kDiagNoUnpack / NoPromote / NoLoad / NoBStage) skip one stage and compute
// WRONG results; only their times are meaningful. The policies below must
// are the serving ones (kernels/cuda/w4a4_policies.cuh).
namespace diag {
using namespace w4a4::policies;

w4a4::GemmParams Params(const DeviceW4A4Matrix& act, const DeviceW4A4Matrix& weight, __nv_bfloat16* y) {
  w4a4::GemmParams p = w4a4::MakeGemmParams(act, weight);
  p.y = y;
  p.vector_io = p.n % 2 == 0;
  return p;
}

struct Kernel {
  std::string name;
  const void* fn;
  int threads, smem, bm, bn;
  int diag;  // kDiag bits, 0 = the serving kernel's code
};
template <int kDiag>
Kernel Tiled() {
  return {"tiled128", reinterpret_cast<const void*>(&w4a4::W4A4TiledKernel<TiledLarge, __nv_bfloat16, false, kDiag>),
          TiledLarge::kThreads, TiledLarge::kSmemBytes, TiledLarge::kBM, TiledLarge::kBN, kDiag};
}
template <int kDiag>
Kernel Wgmma() {
  return {"wgmma128", reinterpret_cast<const void*>(&w4a4::W4A4WgmmaKernel<WgmmaLarge, __nv_bfloat16, false, kDiag>),
          WgmmaLarge::kThreads, WgmmaLarge::kSmemBytes, WgmmaLarge::kBM, WgmmaLarge::kBN, kDiag};
}

std::string DiagName(int d) {
  if (d == 0) return "none (serving code)";
  std::string s;
  auto add = [&](const char* x) { s += s.empty() ? x : std::string("+") + x; };
  if (d & w4a4::kDiagNoUnpack) add("noUnpack");
  if (d & w4a4::kDiagNoPromote) add("noPromote");
  if (d & w4a4::kDiagNoLoad) add("noLoad");
  if (d & w4a4::kDiagNoBStage) add("noBStage");
  return s;
}

void Run(const Options& opt, cudaStream_t stream) {
  constexpr int kM = 4096, kN = 8192, kK = 8192;
  const quant::QuantLayout layout = *quant::QuantLayout::Make(kK, kKeeper);
  absl::StatusOr<DeviceW4A4Storage> w = DeviceW4A4Storage::Allocate(layout, kN);
  absl::StatusOr<DeviceW4A4Storage> a = DeviceW4A4Storage::Allocate(layout, kM);
  absl::StatusOr<DeviceBuffer<__nv_bfloat16>> y = DeviceBuffer<__nv_bfloat16>::Create(size_t{kM} * kN);
  BENCH_CHECK(w.status());
  BENCH_CHECK(a.status());
  BENCH_CHECK(y.status());
  RandomW4A4(w->view(), 1100);
  RandomW4A4(a->view(), 1200);
  ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  const w4a4::GemmParams p = Params(a->view(), w->view(), y->data());

  const Kernel split{"wgmma128split",
                     reinterpret_cast<const void*>(&w4a4::W4A4WgmmaKernel<WgmmaLargeSplit, __nv_bfloat16, false, 0>),
                     WgmmaLargeSplit::kThreads, WgmmaLargeSplit::kSmemBytes, WgmmaLargeSplit::kBM,
                     WgmmaLargeSplit::kBN, 0};
  constexpr int U = w4a4::kDiagNoUnpack, Pr = w4a4::kDiagNoPromote, L = w4a4::kDiagNoLoad, B = w4a4::kDiagNoBStage;
  const std::vector<Kernel> kernels = {
      Tiled<0>(), Tiled<U>(), Tiled<Pr>(), Tiled<U | Pr>(), Tiled<L>(), Tiled<U | Pr | L>(),
      Wgmma<0>(), Wgmma<U>(), Wgmma<Pr>(), Wgmma<U | Pr>(), Wgmma<L>(), Wgmma<B>(), Wgmma<U | Pr | B>(),
      Wgmma<U | Pr | L | B>(), split,
  };
  struct Result {
    const Kernel* k;
    double us;
    cudaFuncAttributes attr;
    int blocks_per_sm;
  };
  std::vector<Result> results;
  for (const Kernel& k : kernels) {
    Result r{&k, 0.0, {}, 0};
    ATOMSERVE_CUDA_CHECK(cudaFuncSetAttribute(k.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem));
    ATOMSERVE_CUDA_CHECK(cudaFuncGetAttributes(&r.attr, k.fn));
    ATOMSERVE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&r.blocks_per_sm, k.fn, k.threads, k.smem));
    const unsigned blocks = static_cast<unsigned>(((kM + k.bm - 1) / k.bm) * ((kN + k.bn - 1) / k.bn));
    r.us = TimeUs(
        [&](int) {
          void* args[] = {const_cast<w4a4::GemmParams*>(&p)};
          ATOMSERVE_CUDA_CHECK(cudaLaunchKernel(k.fn, dim3(blocks), dim3(k.threads), args, k.smem, stream));
        },
        1, opt.reps(), stream);
    results.push_back(r);
  }
  const double ops = 2.0 * kM * kN * kK;
  std::printf("\n=== DIAGNOSTIC leave-one-out variants (WRONG outputs by design; times only), M=%d N=%d K=%d keeper=%d ===\n",
              kM, kN, kK, kKeeper);
  std::printf("%-14s %-34s | %9s %8s %8s | %5s %6s %6s %5s %4s\n", "kernel", "left out", "us", "TOPS", "x base",
              "regs", "local", "smemKB", "thr", "blk/SM");
  double base = 0;
  for (const Result& r : results) {
    if (r.k->diag == 0 && (r.k->name == "tiled128" || r.k->name == "wgmma128")) base = r.us;
    std::printf("%-14s %-34s | %9.1f %8.1f %7.2fx | %5d %6d %6.1f %5d %4d\n", r.k->name.c_str(),
                DiagName(r.k->diag).c_str(), r.us, ops / r.us / 1e6, base / r.us, r.attr.numRegs,
                static_cast<int>(r.attr.localSizeBytes), (r.attr.sharedSizeBytes + r.k->smem) / 1024.0, r.k->threads,
                r.blocks_per_sm);
  }
  std::printf("(x base = serving-code time of tiled128 / wgmma128 (the row group's first row) / this time;\n"
              " wgmma128split is compared with wgmma128)\n");
}
}  // namespace diag

int Main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      opt.quick = true;
    } else if (std::strcmp(argv[i], "--paths") == 0) {
      opt.paths = true;
    } else if (std::strcmp(argv[i], "--mid") == 0) {
      opt.mid = true;
    } else if (std::strcmp(argv[i], "--diag") == 0) {
      opt.diag = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--paths] [--mid] [--diag]\n", argv[0]);
      return 2;
    }
  }
  if (DeviceCount() == 0) {
    std::fprintf(stderr, "w4a4_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  ATOMSERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  std::printf("device: %s, %d SMs, L2 %.0f MB, %s run\n", prop.name, prop.multiProcessorCount, l2 / 1048576.0,
              opt.quick ? "quick" : "full");

  cudaStream_t stream = nullptr;
  ATOMSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Blas blas;
  CUBLAS_CHECK(cublasCreate(&blas.handle));
  CUBLAS_CHECK(cublasLtCreate(&blas.lt));
  {
    absl::StatusOr<DeviceBuffer<uint8_t>> ws = DeviceBuffer<uint8_t>::Create(Blas::kWorkspaceBytes);
    BENCH_CHECK(ws.status());
    blas.workspace = std::move(*ws);
  }
  CUBLAS_CHECK(cublasSetStream(blas.handle, stream));
  CUBLAS_CHECK(cublasSetWorkspace(blas.handle, blas.workspace.data(), Blas::kWorkspaceBytes));

  std::vector<int> ms = opt.quick ? std::vector<int>{1, 16, 4096} : std::vector<int>{1, 8, 16, 2048, 4096};
  if (opt.mid) {
    for (int m : {32, 64, 128, 256, 512}) ms.push_back(m);
    std::sort(ms.begin(), ms.end());
  }
  std::vector<GemmRow> rows;
  std::printf("\n%-4s %-20s %5s %10s %10s %10s %8s\n", "", "layer", "M", "bf16 us", "fp8 us", "w4a4 us", "x bf16");
  for (const GemmShape& s : kGemmShapes) {
    for (int m : ms) {
      rows.push_back(BenchGemm(s, m, opt, blas, l2, stream));
      const GemmRow& r = rows.back();
      std::printf("%-4s %-20s %5d %10.2f %10.2f %10.2f %8.2f", r.model.c_str(), r.layer.c_str(), r.m, r.bf16_us,
                  r.fp8_us, r.w4a4_us, r.bf16_us / r.w4a4_us);
      for (int a = 0; a < 3; ++a) {
        if (r.alt_names[a] != nullptr) std::printf("   %s %.2f", r.alt_names[a], r.alt_us[a]);
      }
      for (const auto& [name, us] : r.variants) std::printf("   %s %.2f", name.c_str(), us);
      std::printf("\n");
      std::fflush(stdout);
    }
  }

  std::vector<ActRow> act_rows;
  struct ActCase {
    const char* op;
    int k;
  };
  const ActCase act_cases[] = {{"rmsnorm", 4096}, {"reorder", 4096}, {"silu*up", 11008},
                               {"rmsnorm", 8192}, {"reorder", 8192}, {"silu*up", 28672}};
  for (int tokens : opt.quick ? std::vector<int>{4096} : std::vector<int>{16, 4096}) {
    for (const ActCase& c : act_cases) act_rows.push_back(BenchActQuant(c.op, tokens, c.k, opt, l2, stream));
  }

  // ── Summary ──
  std::printf("\n=== W4A4 GEMM vs cuBLAS (median, bf16 output; GB/s = weight bytes / time) ===\n");
  std::printf("%-4s %-20s %5s | %9s %9s %9s | %8s %8s | %9s %9s | %s\n", "", "layer", "M", "bf16 us", "fp8 us",
              "w4a4 us", "w4a4/bf16", "fp8/bf16", "w4a4 GB/s", "w4a4 TOPS", "target");
  int met = 0, total = 0;
  for (const GemmRow& r : rows) {
    const bool decode = r.m <= 64;
    const double speedup = r.bf16_us / r.w4a4_us;
    const double target = decode ? 3.0 : 1.6;
    const bool is_target_row = r.m <= 16 || r.m >= 2048;
    if (is_target_row) {
      ++total;
      met += speedup >= target;
    }
    char fp8[32] = "     n/a", fp8x[32] = "     n/a";
    if (r.fp8_us > 0) {
      std::snprintf(fp8, sizeof(fp8), "%9.2f", r.fp8_us);
      std::snprintf(fp8x, sizeof(fp8x), "%8.2f", r.bf16_us / r.fp8_us);
    }
    std::printf("%-4s %-20s %5d | %9.2f %9s %9.2f | %8.2fx %8s | %9.0f %9.1f | %s\n", r.model.c_str(),
                r.layer.c_str(), r.m, r.bf16_us, fp8, r.w4a4_us, speedup, fp8x, r.w4a4_weight_bytes / r.w4a4_us / 1e3,
                r.ops / r.w4a4_us / 1e6,
                !is_target_row ? "-" : speedup >= target ? (decode ? ">=3x ok" : ">=1.6x ok")
                                                         : (decode ? "below 3x" : "below 1.6x"));
  }
  std::printf("targets met: %d of %d rows (decode >= 3x, prefill >= 1.6x cuBLAS BF16)\n", met, total);
  std::printf("\n=== Fused activation quantization (bf16 in, W4A4 out, keeper 128; GB/s = bytes read + written) ===\n");
  std::printf("%-8s %6s %6s | %9s %9s\n", "op", "tokens", "K", "us", "GB/s");
  for (const ActRow& r : act_rows) {
    std::printf("%-8s %6d %6d | %9.2f %9.0f  (%.0f%% of 4300 GB/s)\n", r.op.c_str(), r.tokens, r.k, r.us,
                r.bytes / r.us / 1e3, r.bytes / r.us / 1e3 / 43.0);
  }
  // Last (the tail of the log): one line per shape, every variant's speedup
  // over cuBLAS BF16 (time ratio; > 1 is faster), and the best over FP8.
  std::printf("\n=== Variants: x cuBLAS BF16 (bf16 time / variant time); '-' = not run ===\n");
  const char* kVariantNames[] = {"auto", "tiled128", "wgmma128", "wgmma128split", "wgmma64", "skinny16rows"};
  std::printf("%-4s %-18s %5s |", "", "layer", "M");
  for (const char* v : kVariantNames) std::printf(" %13s", v);
  std::printf(" | %8s %9s\n", "best/fp8", "best TOPS");
  for (const GemmRow& r : rows) {
    std::printf("%-4s %-18.18s %5d |", r.model.c_str(), r.layer.c_str(), r.m);
    double best = r.w4a4_us;
    for (const char* v : kVariantNames) {
      double us = std::strcmp(v, "auto") == 0 ? r.w4a4_us : 0.0;
      for (const auto& [name, t] : r.variants) {
        if (name == v) us = t;
      }
      if (us > 0) {
        best = std::min(best, us);
        std::printf(" %12.2fx", r.bf16_us / us);
      } else {
        std::printf(" %13s", "-");
      }
    }
    std::printf(" | %7.2fx %9.1f\n", r.fp8_us > 0 ? r.fp8_us / best : 0.0, r.ops / best / 1e6);
  }
  if (opt.diag) diag::Run(opt, stream);
  CUBLAS_CHECK(cublasLtDestroy(blas.lt));
  CUBLAS_CHECK(cublasDestroy(blas.handle));
  ATOMSERVE_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

}  // namespace
}  // namespace atomserve::cuda

int main(int argc, char** argv) { return atomserve::cuda::Main(argc, argv); }
