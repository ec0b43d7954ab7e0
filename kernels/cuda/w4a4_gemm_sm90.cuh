// Hopper (sm_90a) wgmma path of the W4A4 GEMM; private to kernels/cuda, include
// only from w4a4_gemm.cu after w4a4_gemm.cuh. Same numeric contract as the
// tiled kernel (w4a4_gemm.cuh header comment): int32 group accumulators
// bit-exact, magic-number promotion per 128-channel group.
//
// ── Design ──────────────────────────────────────────────────────────────────
// Block tile kBM (tokens) x kBN (outputs), kBM = 64 per consumer warpgroup;
// every warpgroup owns 64 token rows and all kBN output columns and issues
// wgmma.mma_async m64nNk32 s8 with
//   A (activations) from REGISTERS: the wgmma A fragment of 8-bit types has
//     the mma.sync m16n8k32 layout per warp (rows 16w + g / + 8, k slots
//     4t.. and 16 + 4t..), so the existing fragment trick applies unchanged:
//     16 packed bytes per row and thread, unpacked in registers (3 ops per
//     8 codes), no INT8 copy of A in shared memory;
//   B (weights) from SHARED MEMORY: unpacked to INT8 ONCE per k-tile by all
//     threads of the block into a 128-byte-swizzled K-major tile (one 128-
//     channel group = one 128-byte row = one swizzle atom width), double
//     buffered, read through a wgmma smem descriptor.
// The channel order inside the unpacked row follows the fragment trick, so
// A and B agree slot by slot: k-step s (bytes 32s..32s+31 of the row) holds,
// in 4-byte word t, the low nibbles x16 of packed word (t, s) (bytes 16t+4s)
// and in word 4 + t the high nibbles; keeper tiles (64 int8 channels) use the
// raw words of (t, 2s) and (t, 2s + 1) and only k-steps 0 and 1.
//
// Pipeline per k-tile kt (all threads, two block barriers):
//   1. read A fragments + A scales of kt (packed stage in smem, cp.async'ed
//      kStages - 1 tiles ahead by the TiledLoader of the tiled kernel);
//   2. accumulators := magic bits; wgmma.fence; 4 wgmma (2 for keepers); commit;
//   3. (while the tensor cores run) wait for stage kt+1, barrier, unpack B of
//      kt+1 into the other buffer (+ its weight scales as floats),
//      fence.proxy.async, issue the cp.async of tile kt + kStages - 1;
//   4. wgmma.wait_group; promote into fp32 (2 FFMA / element / group);
//   5. barrier (the unpacked B of kt+1 is complete).
// kSplitN issues the wgmmas of the two N halves as separate commit groups
// and promotes the first half while the second half still runs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace atomserve::cuda::w4a4 {

template <int kWGs_, int kBN_, int kStages_, bool kSplitN_>
struct WgmmaPolicy {
  static constexpr int kWGs = kWGs_;
  static constexpr int kBM = 64 * kWGs;
  static constexpr int kBN = kBN_;
  static constexpr int kStages = kStages_;
  static constexpr bool kSplitN = kSplitN_;
  static constexpr int kThreads = 128 * kWGs;
  static constexpr int kHalves = kSplitN ? 2 : 1;
  static constexpr int kNw = kBN / kHalves;  // N of one wgmma
  static constexpr int kAccRegs = kNw / 2;   // int32 accumulators per thread per half
  // TiledLoader interface (the packed stages are the tiled kernel's).
  static constexpr int kCodeBytes = (kBM + kBN) * kTileRowBytes;
  static constexpr int kStageBytes = kCodeBytes + (kBM + kBN) * 4;
  static constexpr int kBBufBytes = kBN * 128;  // one unpacked k-tile of B
  static constexpr int kSmemBytes = 1024 /*alignment slack*/ + 2 * kBBufBytes + kStages * kStageBytes + 2 * kBN * 4;
  static constexpr int kRasterM = 8;
  static_assert(kNw == 64 || kNw == 128, "wgmma wrappers exist for N = 64 and 128");
  static_assert(kStages >= 3, "the pipeline waits for tile kt + 1 with kStages - 3 groups pending");
};

__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
__device__ __forceinline__ void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator accesses across wgmma waits.
template <int kN>
__device__ __forceinline__ void FenceRegs(int32_t (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

// wgmma shared-memory descriptor of a K-major, 128-byte-swizzled tile whose
// rows are 128 bytes (8-row atoms 1024 bytes apart); `addr` is the shared
// address of the k-step's first byte in row 0 (tile base 1024-byte aligned,
// plus 32 bytes per k-step).
__device__ __forceinline__ uint64_t SmemDescSw128(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) /*LBO, unused*/ |
         (uint64_t{1024 >> 4} << 32) /*SBO*/ | (uint64_t{1} << 62) /*128B swizzle*/;
}
// Byte offset of 4-byte word w of 16-byte chunk c of row r in a 128B-swizzled tile.
__device__ __forceinline__ uint32_t Sw128Offset(int r, int c, int w) {
  return static_cast<uint32_t>(r * 128 + ((c ^ (r & 7)) << 4) + 4 * w);
}

// ── wgmma wrappers (generated) ──
// d[0..64) += A (4 registers, m64k32 s8) * B (descriptor, n128k32 s8); scale_d = 1.
__device__ __forceinline__ void WgmmaS8N128(int32_t (&d)[64], const uint32_t (&a)[4], uint64_t b_desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc)
      : "memory");
}

// d[0..32) += A (4 registers, m64k32 s8) * B (descriptor, n64k32 s8); scale_d = 1.
__device__ __forceinline__ void WgmmaS8N64(int32_t (&d)[32], const uint32_t (&a)[4], uint64_t b_desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc)
      : "memory");
}

// Unpacks B (stage rows kBM .. kBM + kBN) of k-tile kt into the swizzled INT8
// tile `bbuf` and its fp16 weight scales into floats `swf`; every thread takes
// (row, 16-byte chunk t) tasks: one LDS.128, 8 (groups) or 4 (keepers)
// conflict-free 4-byte stores.
// kUnpackThreads threads (tid = their index) share the work; kDiag &
// kDiagNoUnpack stores the packed words as they are (bench diagnostics only).
template <class P, int kDiag = 0, int kUnpackThreads = P::kThreads>
__device__ __forceinline__ void WgmmaUnpackB(const GemmParams& p, int kt, int n0, const uint8_t* stage,
                                             uint8_t* bbuf, float* swf, int tid = static_cast<int>(threadIdx.x)) {
  const bool is_group = kt < p.groups;
#pragma unroll
  for (int i = 0; i < P::kBN * 4 / kUnpackThreads; ++i) {
    const int task = tid + i * kUnpackThreads;
    const int r = task >> 2, t = task & 3;
    const uint4 v = *reinterpret_cast<const uint4*>(stage + (P::kBM + r) * kTileRowBytes + 16 * t);
    if (is_group) {
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const uint32_t w = Word(v, s);
        if constexpr ((kDiag & kDiagNoUnpack) != 0) {
          *reinterpret_cast<uint32_t*>(bbuf + Sw128Offset(r, 2 * s, t)) = w;
          *reinterpret_cast<uint32_t*>(bbuf + Sw128Offset(r, 2 * s + 1, t)) = Word(v, s ^ 1);
        } else {
          *reinterpret_cast<uint32_t*>(bbuf + Sw128Offset(r, 2 * s, t)) = LowNibblesTimes16(w);
          *reinterpret_cast<uint32_t*>(bbuf + Sw128Offset(r, 2 * s + 1, t)) = HighNibblesTimes16(w);
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < 4; ++c) *reinterpret_cast<uint32_t*>(bbuf + Sw128Offset(r, c, t)) = Word(v, c);
    }
  }
  if (is_group) {
    const uint16_t* sc = reinterpret_cast<const uint16_t*>(stage + P::kCodeBytes);
    for (int c = tid; c < P::kBN; c += kUnpackThreads) {
      // The stage holds the aligned fp16 pair containing scale (row * G + kt).
      const int par = ((n0 + c) * (p.groups & 1) + kt) & 1;
      swf[c] = HalfBitsToFloat(sc[2 * (P::kBM + c) + par]);
    }
  }
  FenceProxyAsync();  // generic-proxy stores -> read by wgmma (async proxy)
}

template <class P, typename OutT, bool kAccMode, int kDiag = 0>
__global__ void __launch_bounds__(P::kThreads, 1) W4A4WgmmaKernel(const GemmParams p) {
  constexpr int kS = P::kStages, kH = P::kHalves, kR = P::kAccRegs, kNw = P::kNw;
  static_assert(kDiag == 0 || !kAccMode, "diagnostic variants are bench-only");
  constexpr bool kNoUnpack = (kDiag & kDiagNoUnpack) != 0, kNoPromote = (kDiag & kDiagNoPromote) != 0;
  constexpr bool kNoLoad = (kDiag & kDiagNoLoad) != 0, kNoBStage = (kDiag & kDiagNoBStage) != 0;
  extern __shared__ __align__(128) uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint8_t* bbuf = smem;                                  // [2][kBN][128] swizzled INT8
  uint8_t* packed = smem + 2 * P::kBBufBytes;            // [kS] packed stages
  float* swf = reinterpret_cast<float*>(packed + kS * P::kStageBytes);  // [2][kBN]

  const int2 origin = GroupedTileOrigin<P>(p);  // w4a4_gemm.cuh
  const int m0 = origin.x, n0 = origin.y;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int a_row = warp * 16 + g;  // warpgroup wg = warp / 4 owns rows 64 wg .. 64 wg + 63
  const int total = p.groups + p.keeper_tiles;
  const int a_par = ((m0 + a_row) * (p.groups & 1)) & 1;
  const uint32_t bbuf_addr = SmemAddr(bbuf);

  const TiledLoader<P> loader(p, m0, n0);
#pragma unroll
  for (int s = 0; s < kS - 1; ++s) {
    if (s < total) loader.Issue(p, s, packed + s * P::kStageBytes);
    CpAsyncCommit();
  }
  CpAsyncWait<kS - 2>();
  __syncthreads();
  if (total > 0) WgmmaUnpackB<P, kDiag>(p, 0, n0, packed, bbuf, swf);
  if constexpr (kNoBStage) {  // both B buffers hold tile 0 forever
    if (total > 0) WgmmaUnpackB<P, kDiag>(p, 0, n0, packed, bbuf + P::kBBufBytes, swf + P::kBN);
  }
  __syncthreads();

  float y[kH][kR] = {};  // 256 * outputs
  int32_t acc[kH][kR];   // group accumulator (magic-offset), then the keeper accumulator
  int stage = 0;
  for (int kt = 0; kt < total; ++kt) {
    const bool is_group = kt < p.groups;
    const int buf = kt & 1;
    // 1. A fragments and scales of kt.
    const uint8_t* st = packed + (kNoLoad ? 0 : stage) * P::kStageBytes;
    const uint4 a0 = *reinterpret_cast<const uint4*>(st + a_row * kTileRowBytes + 16 * t);
    const uint4 a1 = *reinterpret_cast<const uint4*>(st + (a_row + 8) * kTileRowBytes + 16 * t);
    float sa[2] = {0.0f, 0.0f};
    if (is_group) {
      const uint16_t* sc = reinterpret_cast<const uint16_t*>(st + P::kCodeBytes);
      const int par = a_par ^ (kt & 1);
      sa[0] = HalfBitsToFloat(sc[2 * a_row + par]);
      sa[1] = HalfBitsToFloat(sc[2 * (a_row + 8) + par]);
    }
    // 2. Issue the wgmmas of kt.
    if (kNoPromote ? kt == 0 : (is_group || kt == p.groups)) {
      const int32_t init = is_group && !kNoPromote ? kMagicBits : 0;
#pragma unroll
      for (int h = 0; h < kH; ++h)
#pragma unroll
        for (int i = 0; i < kR; ++i) acc[h][i] = init;
    }
    // All A fragments first, so that every wgmma of the tile reads registers
    // that are final at the fence (no warpgroup.arrive between wgmmas).
    uint32_t af[4][4];
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if (kNoUnpack && is_group) {
        af[s][0] = Word(a0, s);
        af[s][1] = Word(a1, s);
        af[s][2] = Word(a0, s ^ 1);
        af[s][3] = Word(a1, s ^ 1);
      } else if (is_group) {
        const uint32_t w0 = Word(a0, s), w1 = Word(a1, s);
        af[s][0] = LowNibblesTimes16(w0);
        af[s][1] = LowNibblesTimes16(w1);
        af[s][2] = HighNibblesTimes16(w0);
        af[s][3] = HighNibblesTimes16(w1);
      } else {  // keeper tile: k-steps 0 and 1 only
        const int s2 = (s & 1) * 2;
        af[s][0] = Word(a0, s2);
        af[s][1] = Word(a1, s2);
        af[s][2] = Word(a0, s2 + 1);
        af[s][3] = Word(a1, s2 + 1);
      }
    }
    WgmmaFence();
    const uint32_t tile_addr = bbuf_addr + buf * P::kBBufBytes;
    const int ksteps = is_group ? 4 : 2;
#pragma unroll
    for (int h = 0; h < kH; ++h) {
      const uint32_t half_addr = tile_addr + h * kNw * 128;
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        if (s < ksteps) {
          if constexpr (kNw == 128) WgmmaS8N128(acc[h], af[s], SmemDescSw128(half_addr + 32 * s));
          else WgmmaS8N64(acc[h], af[s], SmemDescSw128(half_addr + 32 * s));
        }
      }
      WgmmaCommit();
    }
    // 3. Prepare kt + 1 while the tensor cores run.
    CpAsyncWait<kS - 3>();
    __syncthreads();  // stage kt+1 landed for all; every wgmma of kt-1 has completed (waited below)
    if (kt + 1 < total && !kNoBStage) {
      const int next_stage = kNoLoad ? 0 : stage + 1 == kS ? 0 : stage + 1;
      WgmmaUnpackB<P, kDiag>(p, kt + 1, n0, packed + next_stage * P::kStageBytes, bbuf + (buf ^ 1) * P::kBBufBytes,
                             swf + (buf ^ 1) * P::kBN);
    }
    {
      const int next = kt + kS - 1;
      const int free_stage = stage == 0 ? kS - 1 : stage - 1;  // held tile kt-1: fully consumed
      if (next < total && !kNoLoad) loader.Issue(p, next, packed + free_stage * P::kStageBytes);
      CpAsyncCommit();
    }
    // 4. Wait and promote.
#pragma unroll
    for (int h = 0; h < kH; ++h) {
      if (h == 0 && kH == 2) WgmmaWait<1>();
      else WgmmaWait<0>();
      FenceRegs(acc[h]);
      if (!is_group || kNoPromote) continue;
      if constexpr (kAccMode) {
#pragma unroll
        for (int j = 0; j < kNw / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = m0 + a_row + 8 * (e >> 1);
            const int col = n0 + h * kNw + 8 * j + 2 * t + (e & 1);
            if (row < p.m && col < p.n) {
              p.acc[(static_cast<int64_t>(row) * p.n + col) * (p.groups + 1) + kt] = GroupAccumulator(acc[h][4 * j + e]);
            }
          }
      } else {
        const float na[2] = {-kMagic * sa[0], -kMagic * sa[1]};
        const float* sw = swf + buf * P::kBN + h * kNw + 2 * t;
#pragma unroll
        for (int j = 0; j < kNw / 8; ++j) {
          const float2 s2 = *reinterpret_cast<const float2*>(sw + 8 * j);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float scaled = fmaf(__int_as_float(acc[h][4 * j + e]), sa[e >> 1], na[e >> 1]);
            y[h][4 * j + e] = fmaf(scaled, (e & 1) ? s2.y : s2.x, y[h][4 * j + e]);
          }
        }
      }
    }
    __syncthreads();  // 5. the unpacked B of kt+1 (and its scales) is complete
    stage = stage + 1 == kS ? 0 : stage + 1;
  }
  CpAsyncWait<0>();
  if constexpr (kNoPromote) {
#pragma unroll
    for (int h = 0; h < kH; ++h)
#pragma unroll
      for (int i = 0; i < kR; ++i) y[h][i] = static_cast<float>(acc[h][i]);
  }

  const bool has_keeper = p.keeper_tiles > 0;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int row = m0 + a_row + 8 * hr;
    if (row >= p.m) continue;
    const float sak = has_keeper ? HalfBitsToFloat(p.a_keeper_scales[row]) : 0.0f;
#pragma unroll
    for (int h = 0; h < kH; ++h)
#pragma unroll
      for (int j = 0; j < kNw / 8; ++j) {
        const int col = n0 + h * kNw + 8 * j + 2 * t;
        if (col >= p.n) continue;
        const int32_t k0 = acc[h][4 * j + 2 * hr], k1 = acc[h][4 * j + 2 * hr + 1];
        if constexpr (kAccMode) {
          const int64_t out = static_cast<int64_t>(row) * p.n + col;
          const int stride = p.groups + 1;
          p.acc[out * stride + p.groups] = has_keeper ? k0 : 0;
          if (col + 1 < p.n) p.acc[(out + 1) * stride + p.groups] = has_keeper ? k1 : 0;
        } else {
          float v0 = y[h][4 * j + 2 * hr] * kUnscale, v1 = y[h][4 * j + 2 * hr + 1] * kUnscale;
          if (has_keeper) {
            const float swk0 = HalfBitsToFloat(p.w_keeper_scales[col]);
            const float swk1 = col + 1 < p.n ? HalfBitsToFloat(p.w_keeper_scales[col + 1]) : 0.0f;
            v0 += (static_cast<float>(k0) * sak) * swk0;
            v1 += (static_cast<float>(k1) * sak) * swk1;
          }
          StorePair<OutT>(p, row, col, v0, v1);
        }
      }
  }
}


}  // namespace atomserve::cuda::w4a4
