// The kernel configurations the W4A4 GEMM launches (w4a4_gemm.cu) and the
// benchmark's diagnostics time (bench/w4a4_bench.cu): one list, so the two
// cannot drift apart. Included by CUDA translation units only.
#pragma once

#include "kernels/cuda/w4a4_gemm.cuh"
#include "kernels/cuda/w4a4_gemm.h"
#include "kernels/cuda/w4a4_gemm_sm90.cuh"

namespace atomserve::cuda::w4a4 {
namespace policies {

// Decode: 32 output channels per block while the token tiles fit the
// registers, 16 for the widest; the rings of the two smallest keep 2 blocks
// per SM (about 100 KB of shared memory each at K = 28672).
using SkinnyM8 = SkinnyPolicy<2, 1, 4, 2>;
using SkinnyM16 = SkinnyPolicy<2, 2, 3, 2>;
using SkinnyM32 = SkinnyPolicy<2, 4, 3, 1>;
using SkinnyM64 = SkinnyPolicy<1, 8, 3, 1>;
// Prefill: 128x128 tiles (8 warps of 64x32); 64x64 tiles (4 warps of 32x32)
// when the large tiles would not fill the GPU once.
using TiledLarge = TiledPolicy<128, 128, 2, 4, 4>;
using TiledSmall = TiledPolicy<64, 64, 2, 2, 4>;
// Decode with 16 rows per block (W4A4SkinnyRows::k16).
using SkinnyM8R16 = SkinnyPolicy<1, 1, 4, 3>;
using SkinnyM16R16 = SkinnyPolicy<1, 2, 4, 3>;
// Hopper wgmma: 2 warpgroups x m64n128 (5 packed stages), 1 warpgroup x m64n64.
using WgmmaLarge = WgmmaPolicy<2, 128, 5, false>;
using WgmmaLargeSplit = WgmmaPolicy<2, 128, 5, true>;
using WgmmaSmall = WgmmaPolicy<1, 64, 5, false>;

}  // namespace policies

// Kernel parameters for act x weightᵀ (the caller sets y and vector_io).
inline GemmParams MakeGemmParams(const DeviceW4A4Matrix& act, const DeviceW4A4Matrix& weight) {
  GemmParams p{};
  p.a_packed = act.packed;
  p.a_scales = act.scales;
  p.a_keeper = act.keeper_codes;
  p.a_keeper_scales = act.keeper_scales;
  p.w_packed = weight.packed;
  p.w_scales = weight.scales;
  p.w_keeper = weight.keeper_codes;
  p.w_keeper_scales = weight.keeper_scales;
  p.m = static_cast<int>(act.rows);
  p.n = static_cast<int>(weight.rows);
  p.groups = static_cast<int>(act.layout.groups());
  p.keeper = static_cast<int>(act.layout.keeper);
  p.keeper_tiles = static_cast<int>((act.layout.keeper + kKeeperTileChannels - 1) / kKeeperTileChannels);
  p.packed_row_bytes = static_cast<int>(act.layout.packed_row_bytes());
  return p;
}

}  // namespace atomserve::cuda::w4a4
