// Device code of the W4A4 GEMM; w4a4_gemm.h is the API and w4a4_gemm.cu the
// launchers and heuristics. Private to kernels/cuda: include only from .cu.
//
// ── The INT4 -> INT8 fragment trick ─────────────────────────────────────────
// mma.sync m16n8k32 s8 pairs A[row][k] with B[k][col] for the same k, and the
// dot product does not care which physical channel sits in which k slot as
// long as A and B use the same assignment. Both operands are stored in the
// same packed format, so each thread loads 16 packed bytes (32 channels) of
// a row for a 128-channel group: thread (g = lane / 4, t = lane % 4) takes
// channels [32t, 32t + 32). Word s (channels 32t + 8s .. +7) feeds k-step s:
//   lo = (word << 4) & 0xF0F0F0F0   channels 32t+8s+{0,2,4,6}, as 16 * code
//   hi =  word       & 0xF0F0F0F0   channels 32t+8s+{1,3,5,7}, as 16 * code
// (lo into the fragment register of k slots 4t..4t+3, hi into 16+4t..16+4t+3),
// which covers the group once over s = 0..3 and t = 0..3. Codes times 16 are
// exact int8 values (-128..112), so each product carries a factor 256 and the
// group sum is 256 * acc with |256 * acc| <= 128 * 64 * 256 = 2^21.
//
// ── Promotion without an int->float conversion ──────────────────────────────
// Each group's accumulator starts from the bit pattern of kMagic = 1.5 * 2^23
// (0x4B400000), so after the group its bits are those of the float
// kMagic + 256 * acc, exact because |256 * acc| <= 2^21 keeps it in
// [2^23, 2^24) where floats are integers. Then
//   fmaf(f, s_a, -kMagic * s_a) = round(256 * acc * s_a) = 256 * round(acc * s_a)
// exactly: kMagic * s_a is exact (2 + 11 significant bits) and fmaf rounds
// once. That is the reference's float(acc) * s_a, scaled by 256; the output
// accumulates 256 * y and is scaled back by 2^-8 (exact) at the end. Per
// element and group this costs two FFMAs.
//
// ── Keeper channels ─────────────────────────────────────────────────────────
// INT8 keeper codes are used as they are, in k-tiles of 64 channels (64 bytes
// per row, like a packed group); one int32 accumulator sums all keeper tiles
// and is promoted once with float(acc) (exact below 2^24) * s_ak * s_wk.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace atomserve::cuda::w4a4 {

inline constexpr int kGroupSize = 128;
inline constexpr int kTileRowBytes = 64;         // bytes per row of one k-tile (group or keeper tile)
inline constexpr int kKeeperTileChannels = 64;   // INT8 channels per keeper k-tile
inline constexpr int32_t kMagicBits = 0x4B400000;
inline constexpr float kMagic = 12582912.0f;     // 1.5 * 2^23
inline constexpr float kUnscale = 1.0f / 256.0f;

// Leave-one-out switches of the prefill kernels' kDiag template argument, for
// bench/w4a4_bench.cu --diag ONLY: any nonzero kDiag computes WRONG results
// (it times the kernel with one stage removed). 0 is the serving kernel.
inline constexpr int kDiagNoUnpack = 1;   // packed bytes fed to the MMAs as int8 codes (no shift/mask)
inline constexpr int kDiagNoPromote = 2;  // one int32 accumulator over all of K, promoted once at the end
inline constexpr int kDiagNoLoad = 4;     // no global loads after the prologue: stage 0 reused forever
inline constexpr int kDiagNoBStage = 8;   // wgmma only: no per-k-tile B unpack into the swizzled buffer

// Everything a kernel needs, by value. Row strides: packed rows are
// groups * 64 bytes, scale rows `groups` halves, keeper rows `keeper` bytes.
struct GemmParams {
  const uint8_t* a_packed;
  const uint16_t* a_scales;
  const int8_t* a_keeper;
  const uint16_t* a_keeper_scales;
  const uint8_t* w_packed;
  const uint16_t* w_scales;
  const int8_t* w_keeper;
  const uint16_t* w_keeper_scales;
  int m;             // tokens (act rows)
  int n;             // outputs (weight rows)
  int groups;        // INT4 groups G
  int keeper;        // keeper channels
  int keeper_tiles;  // ceil(keeper / 64)
  int packed_row_bytes;
  const void* residual;  // OutT [m][n] or nullptr
  void* y;               // OutT [m][n]
  int32_t* acc;          // accumulator mode: int32 [m][n][groups + 1]
  bool vector_io;        // y (and residual) allow 2-element vector access
};

// ── PTX wrappers ────────────────────────────────────────────────────────────

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy; zero-fills when !valid (src must still be a
// valid address).
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}
// The same for streamed weights: asks L2 to fetch 256-byte blocks.
__device__ __forceinline__ void CpAsync16Stream(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}
// 4-byte copy of src_bytes (0, 2 or 4) bytes, the rest zero-filled.
__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// The fp16 scale scales[idx] into a 32-bit shared-memory word: an odd idx
// copies the aligned word [idx - 1, idx] (scale in the high half), an even
// one only its own 2 bytes (low half, high half zero-filled), so the copy
// never passes the end of the array. The scale's half is idx & 1.
__device__ __forceinline__ void CpAsyncScaleWord(uint32_t dst, const uint16_t* scales, int idx, bool valid) {
  const int src_bytes = !valid ? 0 : (idx & 1) ? 4 : 2;
  CpAsync4(dst, scales + (valid ? (idx & ~1) : 0), src_bytes);
}

// d = a * b + c, m16n8k32, s8 x s8 -> s32.
__device__ __forceinline__ void MmaS8(int32_t (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                      const int32_t (&c)[4]) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
}

// ── Fragments ───────────────────────────────────────────────────────────────

__device__ __forceinline__ uint32_t Word(const uint4& v, int i) {  // i is a constant after unrolling
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
__device__ __forceinline__ uint32_t LowNibblesTimes16(uint32_t w) { return (w << 4) & 0xF0F0F0F0u; }
__device__ __forceinline__ uint32_t HighNibblesTimes16(uint32_t w) { return w & 0xF0F0F0F0u; }

__device__ __forceinline__ float HalfBitsToFloat(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

// One 128-channel INT4 group: c[i][j] = magic + 256 * (A rows of tile i) ·
// (B cols of tile j). a[i][h]: 16 packed bytes of m16-tile i, row g + 8h;
// b[j]: 16 packed bytes of n8-tile j, column g (see the header comment).
// kDiag (bench/w4a4_bench.cu --diag only; WRONG results): kDiagNoUnpack feeds
// the packed words as int8 codes, kDiagNoPromote accumulates across groups.
template <int kMT, int kNT, int kDiag = 0>
__device__ __forceinline__ void GroupMma(const uint4 (&a)[kMT][2], const uint4 (&b)[kNT],
                                         int32_t (&c)[kMT][kNT][4]) {
  const int32_t magic[4] = {kMagicBits, kMagicBits, kMagicBits, kMagicBits};
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    uint32_t bf[kNT][2];
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      const uint32_t w = Word(b[j], s);
      if constexpr ((kDiag & kDiagNoUnpack) != 0) {
        bf[j][0] = w;
        bf[j][1] = Word(b[j], s ^ 1);
      } else {
        bf[j][0] = LowNibblesTimes16(w);
        bf[j][1] = HighNibblesTimes16(w);
      }
    }
#pragma unroll
    for (int i = 0; i < kMT; ++i) {
      const uint32_t w0 = Word(a[i][0], s), w1 = Word(a[i][1], s);
      uint32_t af[4];
      if constexpr ((kDiag & kDiagNoUnpack) != 0) {
        af[0] = w0;
        af[1] = w1;
        af[2] = Word(a[i][0], s ^ 1);
        af[3] = Word(a[i][1], s ^ 1);
      } else {
        af[0] = LowNibblesTimes16(w0);
        af[1] = LowNibblesTimes16(w1);
        af[2] = HighNibblesTimes16(w0);
        af[3] = HighNibblesTimes16(w1);
      }
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        if (s == 0 && (kDiag & kDiagNoPromote) == 0) {
          MmaS8(c[i][j], af, bf[j][0], bf[j][1], magic);
        } else {
          MmaS8(c[i][j], af, bf[j][0], bf[j][1], c[i][j]);
        }
      }
    }
  }
}

// One 64-channel INT8 keeper tile, accumulated into c: thread t holds
// channels [16t, 16t + 16); k-step s takes words 2s (k slots 4t..) and 2s + 1
// (k slots 16 + 4t..).
template <int kMT, int kNT>
__device__ __forceinline__ void KeeperMma(const uint4 (&a)[kMT][2], const uint4 (&b)[kNT],
                                          int32_t (&c)[kMT][kNT][4]) {
#pragma unroll
  for (int s = 0; s < 2; ++s) {
#pragma unroll
    for (int i = 0; i < kMT; ++i) {
      const uint32_t af[4] = {Word(a[i][0], 2 * s), Word(a[i][1], 2 * s), Word(a[i][0], 2 * s + 1),
                              Word(a[i][1], 2 * s + 1)};
#pragma unroll
      for (int j = 0; j < kNT; ++j) MmaS8(c[i][j], af, Word(b[j], 2 * s), Word(b[j], 2 * s + 1), c[i][j]);
    }
  }
}

// Group accumulator (magic-offset bits) -> exact int32 acc.
__device__ __forceinline__ int32_t GroupAccumulator(int32_t bits) { return (bits - kMagicBits) >> 8; }

// ── Output conversions ──────────────────────────────────────────────────────

template <typename T>
struct OutTraits;
template <>
struct OutTraits<float> {
  using Pair = float2;
  __device__ static float ToFloat(float v) { return v; }
  __device__ static float From(float v) { return v; }
  __device__ static float2 Pack(float a, float b) { return make_float2(a, b); }
  __device__ static float2 Unpack(float2 v) { return v; }
};
template <>
struct OutTraits<__nv_bfloat16> {
  using Pair = __nv_bfloat162;
  __device__ static float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 From(float v) { return __float2bfloat16_rn(v); }
  __device__ static __nv_bfloat162 Pack(float a, float b) { return __floats2bfloat162_rn(a, b); }
  __device__ static float2 Unpack(__nv_bfloat162 v) { return __bfloat1622float2(v); }
};
template <>
struct OutTraits<__half> {
  using Pair = __half2;
  __device__ static float ToFloat(__half v) { return __half2float(v); }
  __device__ static __half From(float v) { return __float2half_rn(v); }
  __device__ static __half2 Pack(float a, float b) { return __floats2half2_rn(a, b); }
  __device__ static float2 Unpack(__half2 v) { return __half22float2(v); }
};

// The (m0, n0) output tile of this block under grouped rasterization:
// P::kRasterM m-tiles x all n-tiles per group, m fastest, so blocks that run
// together share weight tiles in L2. Used by every prefill kernel.
template <class P>
__device__ __forceinline__ int2 GroupedTileOrigin(const GemmParams& p) {
  const int m_tiles = (p.m + P::kBM - 1) / P::kBM;
  const int n_tiles = (p.n + P::kBN - 1) / P::kBN;
  const int per_group = P::kRasterM * n_tiles;
  const int group = blockIdx.x / per_group;
  const int first_m = group * P::kRasterM;
  const int group_m = min(m_tiles - first_m, P::kRasterM);
  const int in_group = blockIdx.x - group * per_group;
  return make_int2((first_m + in_group % group_m) * P::kBM, (in_group / group_m) * P::kBN);
}

// y[row, col] and y[row, col + 1] (when col + 1 < n) = v + residual.
template <typename OutT>
__device__ __forceinline__ void StorePair(const GemmParams& p, int row, int col, float v0, float v1) {
  using T = OutTraits<OutT>;
  OutT* y = static_cast<OutT*>(p.y);
  const OutT* res = static_cast<const OutT*>(p.residual);
  const int64_t i = static_cast<int64_t>(row) * p.n + col;
  if (p.vector_io && col + 1 < p.n) {
    if (res != nullptr) {
      const float2 r = T::Unpack(*reinterpret_cast<const typename T::Pair*>(res + i));
      v0 += r.x;
      v1 += r.y;
    }
    *reinterpret_cast<typename T::Pair*>(y + i) = T::Pack(v0, v1);
    return;
  }
  if (res != nullptr) v0 += T::ToFloat(res[i]);
  y[i] = T::From(v0);
  if (col + 1 < p.n) {
    if (res != nullptr) v1 += T::ToFloat(res[i + 1]);
    y[i + 1] = T::From(v1);
  }
}

// ═══ Skinny kernel (decode: few tokens, weights streamed once) ═══════════════
//
// A block owns kRows = 16 * kMTiles output channels and every token; its 8
// warps split the k-tiles (G groups, then the keeper tiles) round-robin. The
// weights are the mma's A operand (m16 = output channels), the tokens its B
// operand (n8 = tokens). Each thread copies exactly the 16-byte fragments it
// will use into its own slots of a per-warp ring of kStages k-tiles with
// cp.async, so the main loop needs no barrier and up to kStages tiles per warp
// are in flight. The block's weight scales ([kRows][G], contiguous in memory)
// and all token scales ([m][G]) are copied to shared memory once, up front.
// Partial sums are reduced over the warps in shared memory in a fixed order
// (deterministic).
//
// Shared memory: [ring | reduction buffer] [keeper sums] [weight scales]
// [token scales]; the last two are sized at launch (SkinnySmemBytes).
template <int kMTiles_, int kTokTiles_, int kStages_, int kMinBlocks_>
struct SkinnyPolicy {
  static constexpr int kMTiles = kMTiles_;
  static constexpr int kTokTiles = kTokTiles_;
  static constexpr int kStages = kStages_;
  static constexpr int kMinBlocks = kMinBlocks_;  // resident blocks per SM the registers must allow
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = 16 * kMTiles;
  static constexpr int kTokens = 8 * kTokTiles;
  static constexpr int kUnits = 2 * kMTiles + kTokTiles;  // 16-byte fragments per thread per tile
  static constexpr int kWarpStageBytes = kUnits * 16 * 32;
  static constexpr int kRingBytes = kStages * kWarps * kWarpStageBytes;
  static constexpr int kRedStride = kTokens + 1;
  static constexpr int kRedBytes = kWarps * kRows * kRedStride * 4;
  static constexpr int kKeeperRedBytes = kRows * kRedStride * 4;
  static constexpr int kMainBytes = kRingBytes > kRedBytes ? kRingBytes : kRedBytes;
  static constexpr int kFixedBytes = kMainBytes + kKeeperRedBytes;
  static_assert(kFixedBytes % 16 == 0, "scale arrays must start 16-byte aligned");
};

// Dynamic shared memory of a skinny launch with `groups` groups, m tokens.
template <class P>
constexpr int64_t SkinnySmemBytes(int64_t groups, int64_t m) {
  return P::kFixedBytes + ((P::kRows + m) * groups * 2 + 15) / 16 * 16;
}

// dst[0 .. 2 * count) bytes = src[0 .. count) fp16 halves, by 4-byte
// cp.async words (the last word of an odd count copies 2 bytes). src must be
// 4-byte aligned.
template <int kThreads>
__device__ __forceinline__ void CpAsyncHalves(uint8_t* dst, const uint16_t* src, int count) {
  for (int w = threadIdx.x; 2 * w < count; w += kThreads) {
    CpAsync4(SmemAddr(dst + 4 * w), src + 2 * w, 2 * w + 1 < count ? 4 : 2);
  }
}

// Row of fragment unit u of the skinny kernel: weight rows for u < 2 kMTiles
// (m16 tile u / 2, half u % 2), then one token per n8 tile.
template <class P>
__device__ __forceinline__ int SkinnyUnitRow(int u, int n0, int g) {
  return u < 2 * P::kMTiles ? n0 + (u >> 1) * 16 + (u & 1) * 8 + g : (u - 2 * P::kMTiles) * 8 + g;
}

template <class P>
__device__ __forceinline__ void SkinnyIssue(const GemmParams& p, int tile, int n0, int lane, uint8_t* stage) {
  const int g = lane >> 2, t = lane & 3;
  uint8_t* units = stage + lane * 16;
  if (__builtin_expect(tile < p.groups, 1)) {
    const int off = tile * kTileRowBytes + 16 * t;
#pragma unroll
    for (int u = 0; u < P::kUnits; ++u) {
      const int row = SkinnyUnitRow<P>(u, n0, g);
      if (u < 2 * P::kMTiles) {
        const bool ok = row < p.n;
        CpAsync16Stream(SmemAddr(units + u * 512), p.w_packed + (ok ? row * p.packed_row_bytes + off : 0), ok);
      } else {
        const bool ok = row < p.m;
        CpAsync16(SmemAddr(units + u * 512), p.a_packed + (ok ? row * p.packed_row_bytes + off : 0), ok);
      }
    }
    return;
  }
  const int kc = (tile - p.groups) * kKeeperTileChannels + 16 * t;
#pragma unroll
  for (int u = 0; u < P::kUnits; ++u) {
    const int row = SkinnyUnitRow<P>(u, n0, g);
    if (u < 2 * P::kMTiles) {
      const bool ok = row < p.n && kc < p.keeper;
      CpAsync16Stream(SmemAddr(units + u * 512), p.w_keeper + (ok ? row * p.keeper + kc : 0), ok);
    } else {
      const bool ok = row < p.m && kc < p.keeper;
      CpAsync16(SmemAddr(units + u * 512), p.a_keeper + (ok ? row * p.keeper + kc : 0), ok);
    }
  }
}

template <class P, typename OutT, bool kAccMode>
__global__ void __launch_bounds__(P::kThreads, P::kMinBlocks) W4A4SkinnyKernel(const GemmParams p) {
  constexpr int kMT = P::kMTiles, kNT = P::kTokTiles, kS = P::kStages, kW = P::kWarps;
  extern __shared__ __align__(128) uint8_t smem[];
  int32_t* keeper_red = reinterpret_cast<int32_t*>(smem + P::kMainBytes);
  uint8_t* w_scale_smem = smem + P::kFixedBytes;                       // [kRows][G]
  uint8_t* a_scale_smem = w_scale_smem + P::kRows * p.groups * 2;      // [m][G]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * P::kRows;
  const int total = p.groups + p.keeper_tiles;
  auto stage_ptr = [&](int s) { return smem + (s * kW + warp) * P::kWarpStageBytes; };

  for (int i = threadIdx.x; i < P::kRows * P::kRedStride; i += P::kThreads) keeper_red[i] = 0;
  // Scales first (commit group 0): this block's weight rows, then all tokens.
  if (p.groups > 0) {
    const int w_rows = min(P::kRows, p.n - n0);
    CpAsyncHalves<P::kThreads>(w_scale_smem, p.w_scales + n0 * p.groups, w_rows * p.groups);
    CpAsyncHalves<P::kThreads>(a_scale_smem, p.a_scales, p.m * p.groups);
  }
  CpAsyncCommit();
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int tile = warp + s * kW;
    if (tile < total) SkinnyIssue<P>(p, tile, n0, lane, stage_ptr(s));
    CpAsyncCommit();
  }
  CpAsyncWait<kS>();  // group 0 (scales) of this thread
  __syncthreads();    // ... and of every thread
  const uint16_t* w_scales = reinterpret_cast<const uint16_t*>(w_scale_smem);
  const uint16_t* a_scales = reinterpret_cast<const uint16_t*>(a_scale_smem);
  const int last_row = min(P::kRows, p.n - n0) - 1;  // rows past the end read the last row's scales

  float y[kMT][kNT][4] = {};       // 256 * partial outputs of this warp's groups
  int32_t kacc[kMT][kNT][4] = {};  // this warp's keeper partial sums
  int stage = 0;
  for (int tile = warp; tile < total; tile += kW) {
    CpAsyncWait<kS - 1>();  // this thread's copies of `tile` have landed
    const uint8_t* st = stage_ptr(stage);
    uint4 wf[kMT][2], af[kNT];
#pragma unroll
    for (int i = 0; i < kMT; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) wf[i][h] = *reinterpret_cast<const uint4*>(st + (2 * i + h) * 512 + lane * 16);
    }
#pragma unroll
    for (int j = 0; j < kNT; ++j) af[j] = *reinterpret_cast<const uint4*>(st + (2 * kMT + j) * 512 + lane * 16);

    if (tile < p.groups) {
      int32_t c[kMT][kNT][4];
      GroupMma<kMT, kNT>(wf, af, c);
      if constexpr (kAccMode) {
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int row = n0 + i * 16 + g + 8 * (e >> 1), tok = j * 8 + 2 * t + (e & 1);
              if (row < p.n && tok < p.m) {
                p.acc[(static_cast<int64_t>(tok) * p.n + row) * (p.groups + 1) + tile] = GroupAccumulator(c[i][j][e]);
              }
            }
      } else {
        // Rows / tokens past the end (zero-filled codes, never stored) take
        // the last real row's / token's scales: finite, so no NaN appears.
        float sw[kMT][2], sa[kNT][2], na[kNT][2];
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int r = min(i * 16 + h * 8 + g, last_row);
            sw[i][h] = HalfBitsToFloat(w_scales[r * p.groups + tile]);
          }
#pragma unroll
        for (int j = 0; j < kNT; ++j)
#pragma unroll
          for (int jj = 0; jj < 2; ++jj) {
            const int tok = min(j * 8 + 2 * t + jj, p.m - 1);
            const float s = HalfBitsToFloat(a_scales[tok * p.groups + tile]);
            sa[j][jj] = s;
            na[j][jj] = -kMagic * s;
          }
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float scaled = fmaf(__int_as_float(c[i][j][e]), sa[j][e & 1], na[j][e & 1]);
              y[i][j][e] = fmaf(scaled, sw[i][e >> 1], y[i][j][e]);
            }
      }
    } else {
      KeeperMma<kMT, kNT>(wf, af, kacc);
    }
    // The fragments of `stage` are consumed (the mma above read them), so the
    // stage can take the tile kS rounds ahead.
    const int next = tile + kS * kW;
    if (next < total) SkinnyIssue<P>(p, next, n0, lane, stage_ptr(stage));
    CpAsyncCommit();
    stage = stage + 1 == kS ? 0 : stage + 1;
  }
  CpAsyncWait<0>();
  __syncthreads();  // the ring becomes the reduction buffer

  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int j = 0; j < kNT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = i * 16 + g + 8 * (e >> 1), tok = j * 8 + 2 * t + (e & 1);
        if constexpr (!kAccMode) red[(warp * P::kRows + r) * P::kRedStride + tok] = y[i][j][e];
        if (p.keeper_tiles > 0 && kacc[i][j][e] != 0) atomicAdd(&keeper_red[r * P::kRedStride + tok], kacc[i][j][e]);
      }
  __syncthreads();

  using T = OutTraits<OutT>;
  for (int e = threadIdx.x; e < P::kRows * P::kTokens; e += P::kThreads) {
    const int tok = e / P::kRows, r = e % P::kRows, row = n0 + r;
    if (tok >= p.m || row >= p.n) continue;
    const int32_t kept = keeper_red[r * P::kRedStride + tok];
    const int64_t out = static_cast<int64_t>(tok) * p.n + row;
    if constexpr (kAccMode) {
      p.acc[out * (p.groups + 1) + p.groups] = kept;
    } else {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kW; ++w) v += red[(w * P::kRows + r) * P::kRedStride + tok];
      v *= kUnscale;
      if (p.keeper_tiles > 0) {
        v += (static_cast<float>(kept) * HalfBitsToFloat(p.a_keeper_scales[tok])) *
             HalfBitsToFloat(p.w_keeper_scales[row]);
      }
      if (p.residual != nullptr) v += T::ToFloat(static_cast<const OutT*>(p.residual)[out]);
      static_cast<OutT*>(p.y)[out] = T::From(v);
    }
  }
}

// ═══ Tiled kernel (prefill) ═════════════════════════════════════════════════
//
// A block computes a kBM (tokens) x kBN (outputs) tile of y; its warps form a
// kWarpsM x kWarpsN grid of kWM x kWN warp tiles. The k loop runs over k-tiles
// (G groups, then the keeper tiles), each staged in shared memory by a
// kStages-deep cp.async pipeline: kBM + kBN rows of 64 bytes plus one fp16
// scale word per row. Activations are the mma's A operand (m16 = tokens),
// weights its B operand (n8 = outputs). A thread reads its 16-byte fragment
// of rows g and g + 8 at byte 16t, so a quarter warp reads two whole
// adjacent 64-byte rows: conflict-free without swizzling. Blocks are
// rasterized in groups of kRasterM m-tiles so a wave shares weight tiles in L2.
template <int kBM_, int kBN_, int kWarpsM_, int kWarpsN_, int kStages_>
struct TiledPolicy {
  static constexpr int kBM = kBM_;
  static constexpr int kBN = kBN_;
  static constexpr int kWarpsM = kWarpsM_;
  static constexpr int kWarpsN = kWarpsN_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kWM = kBM / kWarpsM;
  static constexpr int kWN = kBN / kWarpsN;
  static constexpr int kMT = kWM / 16;
  static constexpr int kNT = kWN / 8;
  static constexpr int kCodeBytes = (kBM + kBN) * kTileRowBytes;
  static constexpr int kStageBytes = kCodeBytes + (kBM + kBN) * 4;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static constexpr int kRasterM = 8;
  static_assert(kWM % 16 == 0 && kWN % 8 == 0, "warp tile must be a multiple of m16 x n8");
};

// Per-thread copy plan of the tiled kernel. Chunk i of thread tid is 16-byte
// chunk c = tid + i * kThreads of the stage: stage row c / 4 (A rows first,
// then B rows), part c % 4 = tid % 4. Row i * kThreads / 4 + tid / 4 is an A
// row for the first kChunksA chunks (the policy makes that a constant).
template <class P>
struct TiledLoader {
  static constexpr int kRows = P::kBM + P::kBN;
  static constexpr int kChunks = kRows * 4 / P::kThreads;
  static constexpr int kChunksA = P::kBM * 4 / P::kThreads;
  static constexpr int kWords = kRows / P::kThreads;
  static_assert(kRows * 4 % P::kThreads == 0 && P::kBM * 4 % P::kThreads == 0 && kRows % P::kThreads == 0,
                "tile rows must split evenly over the threads");
  int rows[kChunks];      // global row (token or output channel), 0 when out of range
  uint32_t valid = 0;     // bit i: chunk i's row exists; bit 16 + w: scale word w's row exists
  int scale_idx[kWords];  // row * G of scale word w's row
  bool scale_is_a[kWords];

  __device__ TiledLoader(const GemmParams& p, int m0, int n0) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int r = i * (P::kThreads / 4) + static_cast<int>(threadIdx.x >> 2);
      const bool is_a = i < kChunksA;
      const int row = is_a ? m0 + r : n0 + r - P::kBM;
      const bool ok = row < (is_a ? p.m : p.n);
      rows[i] = ok ? row : 0;
      valid |= static_cast<uint32_t>(ok) << i;
    }
#pragma unroll
    for (int w = 0; w < kWords; ++w) {
      const int r = w * P::kThreads + static_cast<int>(threadIdx.x);
      scale_is_a[w] = r < P::kBM;
      const int row = scale_is_a[w] ? m0 + r : n0 + r - P::kBM;
      const bool ok = row < (scale_is_a[w] ? p.m : p.n);
      scale_idx[w] = (ok ? row : 0) * p.groups;
      valid |= static_cast<uint32_t>(ok) << (16 + w);
    }
  }

  __device__ __forceinline__ void Issue(const GemmParams& p, int kt, uint8_t* stage) const {
    const int part = 16 * (threadIdx.x & 3);
    uint8_t* dst = stage + threadIdx.x * 16;
    if (kt < p.groups) {
      const int off = kt * kTileRowBytes + part;
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        const uint8_t* base = i < kChunksA ? p.a_packed : p.w_packed;
        CpAsync16(SmemAddr(dst + i * P::kThreads * 16), base + rows[i] * p.packed_row_bytes + off, (valid >> i) & 1);
      }
#pragma unroll
      for (int w = 0; w < kWords; ++w) {
        CpAsyncScaleWord(SmemAddr(stage + P::kCodeBytes + (w * P::kThreads + threadIdx.x) * 4),
                         scale_is_a[w] ? p.a_scales : p.w_scales, scale_idx[w] + kt, (valid >> (16 + w)) & 1);
      }
    } else {
      const int kc = (kt - p.groups) * kKeeperTileChannels + part;
      const bool in_keeper = kc < p.keeper;
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        const int8_t* base = i < kChunksA ? p.a_keeper : p.w_keeper;
        const bool ok = in_keeper && ((valid >> i) & 1);
        CpAsync16(SmemAddr(dst + i * P::kThreads * 16), base + (ok ? rows[i] * p.keeper + kc : 0), ok);
      }
    }
  }
};

template <class P, typename OutT, bool kAccMode, int kDiag = 0>
__global__ void __launch_bounds__(P::kThreads, 1) W4A4TiledKernel(const GemmParams p) {
  static_assert(kDiag == 0 || !kAccMode, "diagnostic variants are bench-only");
  constexpr bool kNoPromote = (kDiag & kDiagNoPromote) != 0, kNoLoad = (kDiag & kDiagNoLoad) != 0;
  constexpr int kMT = P::kMT, kNT = P::kNT, kS = P::kStages;
  extern __shared__ __align__(128) uint8_t smem[];

  const int2 origin = GroupedTileOrigin<P>(p);
  const int m0 = origin.x, n0 = origin.y;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp % P::kWarpsM, wn = warp / P::kWarpsM;
  const int a_row = wm * P::kWM + g;           // + 16 i + 8 h
  const int b_row = P::kBM + wn * P::kWN + g;  // + 8 j
  const int total = p.groups + p.keeper_tiles;
  // Parity of the fp16 scale inside its 32-bit word: (row * G + kt) & 1.
  // A rows of this thread differ by multiples of 8, so one parity serves all;
  // B columns 2t and 2t + 1 may differ.
  const int a_par = ((m0 + a_row) * (p.groups & 1)) & 1;
  const int b_par0 = ((n0 + wn * P::kWN + 2 * t) * (p.groups & 1)) & 1;
  const int b_par1 = ((n0 + wn * P::kWN + 2 * t + 1) * (p.groups & 1)) & 1;

  const TiledLoader<P> loader(p, m0, n0);
#pragma unroll
  for (int s = 0; s < kS - 1; ++s) {
    if (s < total) loader.Issue(p, s, smem + s * P::kStageBytes);
    CpAsyncCommit();
  }

  float y[kMT][kNT][4] = {};  // 256 * outputs
  int32_t c[kMT][kNT][4];     // group accumulator, then the keeper accumulator
  int stage = 0;
  for (int kt = 0; kt < total; ++kt) {
    CpAsyncWait<kS - 2>();
    __syncthreads();  // k-tile kt visible to all; the stage written next is free
    {
      const int next = kt + kS - 1;
      const int next_stage = stage == 0 ? kS - 1 : stage - 1;
      if (next < total && !kNoLoad) loader.Issue(p, next, smem + next_stage * P::kStageBytes);
      CpAsyncCommit();
    }
    const uint8_t* st = smem + (kNoLoad ? 0 : stage) * P::kStageBytes;
    uint4 af[kMT][2], bf[kNT];
#pragma unroll
    for (int i = 0; i < kMT; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        af[i][h] = *reinterpret_cast<const uint4*>(st + (a_row + 16 * i + 8 * h) * kTileRowBytes + 16 * t);
#pragma unroll
    for (int j = 0; j < kNT; ++j) bf[j] = *reinterpret_cast<const uint4*>(st + (b_row + 8 * j) * kTileRowBytes + 16 * t);

    if constexpr (kNoPromote) {
      if (kt == 0) {
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) c[i][j][e] = 0;
      }
    }
    if (kt < p.groups) {
      GroupMma<kMT, kNT, kDiag>(af, bf, c);
      if constexpr (kNoPromote) {
        // diagnostic: nothing per group
      } else if constexpr (kAccMode) {
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int row = m0 + a_row + 16 * i + 8 * (e >> 1);
              const int col = n0 + wn * P::kWN + 8 * j + 2 * t + (e & 1);
              if (row < p.m && col < p.n) {
                p.acc[(static_cast<int64_t>(row) * p.n + col) * (p.groups + 1) + kt] = GroupAccumulator(c[i][j][e]);
              }
            }
      } else {
        const uint16_t* sc = reinterpret_cast<const uint16_t*>(st + P::kCodeBytes);
        const int kpar = kt & 1;
        float sa[kMT][2], na[kMT][2], sw[kNT][2];
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float s = HalfBitsToFloat(sc[2 * (a_row + 16 * i + 8 * h) + (a_par ^ kpar)]);
            sa[i][h] = s;
            na[i][h] = -kMagic * s;
          }
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
          const int r = b_row + 8 * j + (2 * t - g);  // B column 2t (+1) of n8 tile j, as a stage row
          sw[j][0] = HalfBitsToFloat(sc[2 * r + (b_par0 ^ kpar)]);
          sw[j][1] = HalfBitsToFloat(sc[2 * (r + 1) + (b_par1 ^ kpar)]);
        }
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float scaled = fmaf(__int_as_float(c[i][j][e]), sa[i][e >> 1], na[i][e >> 1]);
              y[i][j][e] = fmaf(scaled, sw[j][e & 1], y[i][j][e]);
            }
      }
    } else {
      if (kt == p.groups && !kNoPromote) {
#pragma unroll
        for (int i = 0; i < kMT; ++i)
#pragma unroll
          for (int j = 0; j < kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) c[i][j][e] = 0;
      }
      KeeperMma<kMT, kNT>(af, bf, c);
    }
    stage = stage + 1 == kS ? 0 : stage + 1;
  }
  CpAsyncWait<0>();
  if constexpr (kNoPromote) {
#pragma unroll
    for (int i = 0; i < kMT; ++i)
#pragma unroll
      for (int j = 0; j < kNT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) y[i][j][e] = static_cast<float>(c[i][j][e]);
  }

  const bool has_keeper = p.keeper_tiles > 0;
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + a_row + 16 * i + 8 * h;
      if (row >= p.m) continue;
      const float sak = has_keeper ? HalfBitsToFloat(p.a_keeper_scales[row]) : 0.0f;
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        const int col = n0 + wn * P::kWN + 8 * j + 2 * t;
        if (col >= p.n) continue;
        if constexpr (kAccMode) {
          const int64_t out = static_cast<int64_t>(row) * p.n + col;
          const int stride = p.groups + 1;
          p.acc[out * stride + p.groups] = has_keeper ? c[i][j][2 * h] : 0;
          if (col + 1 < p.n) p.acc[(out + 1) * stride + p.groups] = has_keeper ? c[i][j][2 * h + 1] : 0;
        } else {
          float v0 = y[i][j][2 * h] * kUnscale, v1 = y[i][j][2 * h + 1] * kUnscale;
          if (has_keeper) {
            const float swk0 = HalfBitsToFloat(p.w_keeper_scales[col]);
            const float swk1 = col + 1 < p.n ? HalfBitsToFloat(p.w_keeper_scales[col + 1]) : 0.0f;
            v0 += (static_cast<float>(c[i][j][2 * h]) * sak) * swk0;
            v1 += (static_cast<float>(c[i][j][2 * h + 1]) * sak) * swk1;
          }
          StorePair<OutT>(p, row, col, v0, v1);
        }
      }
    }
}

}  // namespace atomserve::cuda::w4a4
