// GPU W4A4 GEMM against the CPU reference (kernels/quant/w4a4_linear.h):
// int32 group accumulators bit for bit (quant::W4A4Accumulators), fp32
// outputs within the tolerance of w4a4_format.h (1e-5 * Σ|â·ŵ| + 1e-5 *
// |residual|), bf16 / fp16 outputs within that plus one rounding of the
// output type, for every kernel (skinny; tiled with 128x128 and with 64x64
// tiles), on awkward shapes: M from
// 1 to 4096, N not a multiple of any tile, K with a zero-padded last group,
// keeper 0, 16, 48 (a partial keeper tile), 128 and K (pure INT8), and an
// extreme row of all -8 / -128 codes. Outputs are poisoned with NaN before
// every run. Every test skips when there is no CUDA device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <typeinfo>
#include <random>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/w4a4_gemm.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/w4a4_format.h"
#include "kernels/quant/w4a4_linear.h"

namespace atomserve::cuda {
namespace {

using quant::QuantLayout;
using quant::W4A4Matrix;

#define SKIP_WITHOUT_GPU() \
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device"

// Random codes over the full ranges ([-8, 7], [-128, 127]), scales random
// fp16 in [0.002, 0.05); padding nibbles 0 as the format requires. With
// `extreme_row0`, row 0 is all -8 / -128 (the largest |accumulators|:
// 128 * 64 per group, keeper * 16384 for the keepers).
W4A4Matrix RandomW4A4(const QuantLayout& layout, int64_t rows, uint32_t seed, bool extreme_row0) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> int4(-8, 7), int8(-128, 127);
  std::uniform_real_distribution<float> scale(0.002f, 0.05f);
  W4A4Matrix m;
  m.Resize(layout, rows);
  std::vector<int8_t> codes(layout.padded_normal_k());
  for (int64_t r = 0; r < rows; ++r) {
    const bool extreme = extreme_row0 && r == 0;
    for (int64_t i = 0; i < layout.padded_normal_k(); ++i) {
      codes[i] = i < layout.normal_k() ? static_cast<int8_t>(extreme ? -8 : int4(rng)) : 0;
    }
    quant::PackInt4(codes.data(), layout.padded_normal_k(), m.packed_row(r));
    for (int64_t g = 0; g < layout.groups(); ++g) m.scale_row(r)[g] = quant::FloatToHalfBits(scale(rng));
    for (int64_t i = 0; i < layout.keeper; ++i) m.keeper_row(r)[i] = static_cast<int8_t>(extreme ? -128 : int8(rng));
    if (layout.keeper > 0) m.keeper_scales[r] = quant::FloatToHalfBits(scale(rng) * 0.1f);
  }
  return m;
}

// mag[t * N + n] = Σ_i |â[t, i] · ŵ[n, i]|, exactly (integer sums of |code|
// products per group, then scaled in double).
std::vector<double> Magnitudes(const W4A4Matrix& a, const W4A4Matrix& w, ThreadPool* pool) {
  const QuantLayout& l = a.layout;
  const int64_t stride = l.padded_normal_k() + l.keeper;
  auto unpack_abs = [&](const W4A4Matrix& m) {
    std::vector<int16_t> out(m.rows * stride);
    std::vector<int8_t> codes(l.padded_normal_k());
    for (int64_t r = 0; r < m.rows; ++r) {
      quant::UnpackInt4(m.packed_row(r), l.padded_normal_k(), codes.data());
      for (int64_t i = 0; i < l.padded_normal_k(); ++i) out[r * stride + i] = static_cast<int16_t>(std::abs(codes[i]));
      for (int64_t i = 0; i < l.keeper; ++i) {
        out[r * stride + l.padded_normal_k() + i] = static_cast<int16_t>(std::abs(m.keeper_row(r)[i]));
      }
    }
    return out;
  };
  const std::vector<int16_t> aa = unpack_abs(a), ww = unpack_abs(w);
  std::vector<double> mag(a.rows * w.rows);
  pool->ParallelFor(a.rows, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t n = 0; n < w.rows; ++n) {
        const int16_t* x = &aa[t * stride];
        const int16_t* y = &ww[n * stride];
        double s = 0.0;
        for (int64_t g = 0; g < l.groups(); ++g) {
          int32_t d = 0;
          for (int64_t i = g * 128; i < (g + 1) * 128; ++i) d += x[i] * y[i];
          s += d * static_cast<double>(quant::HalfBitsToFloat(a.scale_row(t)[g])) *
               quant::HalfBitsToFloat(w.scale_row(n)[g]);
        }
        int32_t d = 0;
        for (int64_t i = l.padded_normal_k(); i < stride; ++i) d += x[i] * y[i];
        s += d * static_cast<double>(quant::HalfBitsToFloat(a.keeper_scale(t))) *
             quant::HalfBitsToFloat(w.keeper_scale(n));
        mag[t * w.rows + n] = s;
      }
    }
  });
  return mag;
}

template <typename T>
std::vector<T> Download(const DeviceBuffer<T>& buf) {
  std::vector<T> host(buf.size());
  EXPECT_TRUE(buf.CopyToHost(host.data(), host.size(), nullptr).ok());
  return host;
}

template <typename T>
DeviceBuffer<T> Upload(const std::vector<T>& host) {
  absl::StatusOr<DeviceBuffer<T>> buf = DeviceBuffer<T>::Create(host.size());
  EXPECT_TRUE(buf.ok()) << buf.status();
  EXPECT_TRUE(buf->CopyFromHost(host.data(), host.size(), nullptr).ok());
  ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  return std::move(*buf);
}

float ToFloat(float v) { return v; }
float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
float ToFloat(__half v) { return __half2float(v); }
template <typename T>
T FromFloat(float v);
template <>
float FromFloat<float>(float v) { return v; }
template <>
__nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__half FromFloat<__half>(float v) { return __float2half_rn(v); }

// Unit roundoff of the output type (0 for fp32: its error is in the
// contract's tolerance) and its smallest normal's spacing for tiny values.
template <typename T>
struct Rounding;
template <>
struct Rounding<float> {
  static constexpr double kRel = 0.0, kAbs = 0.0;
};
template <>
struct Rounding<__nv_bfloat16> {
  static constexpr double kRel = 1.0 / 256, kAbs = 1e-38;
};
template <>
struct Rounding<__half> {
  static constexpr double kRel = 1.0 / 2048, kAbs = 1.0 / (1 << 24);
};

struct Shape {
  int64_t m, n, k, keeper;
  friend void PrintTo(const Shape& s, std::ostream* os) {
    *os << "M=" << s.m << " N=" << s.n << " K=" << s.k << " keeper=" << s.keeper;
  }
};
std::string Name(const Shape& s) { return absl::StrCat("M", s.m, "_N", s.n, "_K", s.k, "_keeper", s.keeper); }

const Shape kShapes[] = {
    {1, 384, 576, 128},    // decode; SmolLM2 hidden: 448 INT4 channels = 3.5 groups (padded)
    {1, 17, 1536, 0},      // N below every tile, pure INT4
    {3, 680, 4224, 128},   // K = 4096 + 128 keepers: 32 groups
    {8, 200, 560, 48},     // 48 keepers: a partial 64-channel keeper tile
    {16, 33, 576, 128},    // 32-row skinny tile + 1
    {16, 384, 1536, 128},  //
    {5, 64, 256, 256},     // keeper == K: no INT4 group at all
    {40, 136, 1536, 0},    // the 64-token skinny configuration
    {64, 96, 576, 16},     //
    {65, 40, 4224, 16},    // just above the skinny limit: small tiles
    {127, 680, 1536, 128}, //
    {1000, 136, 4224, 128},
    {1000, 384, 576, 0},
    {4096, 72, 4224, 128},
    {4096, 264, 1536, 128},  // large tiles, N = 2 * 128 + 8
    {64, 64, 128, 0},        // wgmma: exactly one 64x64 / one partial 128x128 tile, one group
    {200, 300, 4224, 128},   // wgmma: several k-tiles, 2 x 3 partial 128 tiles
    {129, 129, 576, 64},     // one past every tile edge; one keeper tile
    {256, 136, 8320, 128},   // 64 groups + 2 keeper tiles: long K, pipelines wrap many times
};

class W4A4GemmTest : public testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    const Shape s = GetParam();
    absl::StatusOr<QuantLayout> layout = QuantLayout::Make(s.k, s.keeper);
    ASSERT_TRUE(layout.ok()) << layout.status();
    const uint32_t seed = static_cast<uint32_t>(s.m * 7919 + s.n * 31 + s.k + s.keeper);
    act_ = RandomW4A4(*layout, s.m, seed, /*extreme_row0=*/true);
    weight_ = RandomW4A4(*layout, s.n, seed + 1, /*extreme_row0=*/true);
    absl::StatusOr<DeviceW4A4Storage> a = DeviceW4A4Storage::Upload(act_, nullptr);
    absl::StatusOr<DeviceW4A4Storage> w = DeviceW4A4Storage::Upload(weight_, nullptr);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(w.ok()) << w.status();
    d_act_ = std::move(*a);
    d_weight_ = std::move(*w);
    ATOMSERVE_CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) ATOMSERVE_CUDA_CHECK(cudaStreamDestroy(stream_));
  }

  // Every kernel that can run this shape: both tile configurations of the
  // tiled path, and the skinny path when M allows.
  std::vector<W4A4GemmOptions> Paths() const {
    std::vector<W4A4GemmOptions> paths;
    for (W4A4GemmPath path : {W4A4GemmPath::kTiled, W4A4GemmPath::kWgmma}) {
      for (W4A4TileConfig tile : {W4A4TileConfig::k128x128, W4A4TileConfig::k64x64, W4A4TileConfig::k128x128SplitN}) {
        if (path == W4A4GemmPath::kTiled && tile == W4A4TileConfig::k128x128SplitN) continue;
        W4A4GemmOptions o;
        o.path = path;
        o.tile = tile;
        paths.push_back(o);
      }
    }
    if (GetParam().m <= kSkinnyMaxTokens) {
      paths.push_back(W4A4GemmOptions{W4A4GemmPath::kSkinny});
      W4A4GemmOptions r16{W4A4GemmPath::kSkinny};
      r16.skinny_rows = W4A4SkinnyRows::k16;
      paths.push_back(r16);
    }
    return paths;
  }
  static std::string PathName(const W4A4GemmOptions& o) {
    if (o.path == W4A4GemmPath::kSkinny) return o.skinny_rows == W4A4SkinnyRows::k16 ? "skinny16rows" : "skinny";
    const char* tile = o.tile == W4A4TileConfig::k128x128   ? "128x128"
                       : o.tile == W4A4TileConfig::k64x64   ? "64x64"
                                                            : "128x128splitN";
    return absl::StrCat(o.path == W4A4GemmPath::kWgmma ? "wgmma" : "tiled", tile);
  }

  // Checks W4A4Gemm<T> (optionally with a residual, optionally in place)
  // against quant::W4A4Linear.
  template <typename T>
  void CheckOutputs(const W4A4GemmOptions& path, bool with_residual, bool in_place) {
    const Shape s = GetParam();
    const int64_t count = s.m * s.n;
    std::vector<T> residual(count);
    std::vector<float> residual_f(count);
    std::mt19937 rng(static_cast<uint32_t>(count + 5));
    std::normal_distribution<float> dist(0.0f, 4.0f);
    for (int64_t i = 0; i < count; ++i) {
      residual[i] = FromFloat<T>(dist(rng));
      residual_f[i] = ToFloat(residual[i]);
    }
    // The CPU reference is computed once per (output type, residual) and
    // reused for every path.
    ThreadPool pool(0);
    const std::string key = absl::StrCat(sizeof(T), typeid(T).name(), with_residual);
    if (!ref_cache_.contains(key)) {
      std::vector<float> r(count);
      ASSERT_TRUE(quant::W4A4Linear(act_, weight_, with_residual ? residual_f.data() : nullptr, r.data(), &pool).ok());
      ref_cache_[key] = std::move(r);
    }
    if (mag_cache_.empty()) mag_cache_ = Magnitudes(act_, weight_, &pool);
    const std::vector<float>& ref = ref_cache_[key];
    const std::vector<double>& mag = mag_cache_;

    DeviceBuffer<T> d_y = Upload(residual);  // in place: y starts as the residual
    DeviceBuffer<T> d_res = Upload(residual);
    if (!in_place) ASSERT_TRUE(d_y.Fill(0xff, stream_).ok());  // NaN poison
    const T* res_ptr = !with_residual ? nullptr : in_place ? d_y.data() : d_res.data();
    absl::Status st = W4A4Gemm<T>(d_act_.view(), d_weight_.view(), res_ptr, d_y.data(), stream_, path);
    ASSERT_TRUE(st.ok()) << st;
    ATOMSERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const std::vector<T> y = Download(d_y);

    int64_t bad = 0;
    double worst = 0.0;
    for (int64_t i = 0; i < count; ++i) {
      const double got = ToFloat(y[i]);
      const double want = ref[i];
      const double tol = 1e-5 * mag[i] + (with_residual ? 1e-5 * std::fabs(residual_f[i]) : 0.0) +
                         Rounding<T>::kRel * std::fabs(want) * (1 + 1e-5) + Rounding<T>::kAbs;
      const double err = std::fabs(got - want);
      if (!(err <= tol)) {  // NaN fails
        if (bad < 5) {
          ADD_FAILURE() << PathName(path) << " t=" << i / s.n << " n=" << i % s.n << " got " << got << " want " << want
                        << " tol " << tol;
        }
        ++bad;
      }
      if (tol > 0) worst = std::max(worst, err / tol);
    }
    EXPECT_EQ(bad, 0) << PathName(path) << ": " << bad << " of " << count << " outputs out of tolerance";
    RecordProperty(absl::StrCat(PathName(path), "_worst_err_over_tol"), std::to_string(worst));
  }

  W4A4Matrix act_, weight_;
  std::map<std::string, std::vector<float>> ref_cache_;
  std::vector<double> mag_cache_;
  DeviceW4A4Storage d_act_, d_weight_;
  cudaStream_t stream_ = nullptr;
};

TEST_P(W4A4GemmTest, AccumulatorsAreBitExact) {
  const Shape s = GetParam();
  const int64_t per = act_.layout.accumulators();
  std::vector<int32_t> want(s.m * s.n * per);
  ASSERT_TRUE(quant::W4A4Accumulators(act_, weight_, 0, s.m, 0, s.n, want.data()).ok());
  // The extreme row really reaches the largest magnitudes.
  if (act_.layout.normal_k() >= 128) EXPECT_EQ(want[0], 128 * 64);
  if (act_.layout.keeper > 0) EXPECT_EQ(want[per - 1], act_.layout.keeper * 128 * 128);
  for (const W4A4GemmOptions& path : Paths()) {
    absl::StatusOr<DeviceBuffer<int32_t>> acc = DeviceBuffer<int32_t>::Create(want.size());
    ASSERT_TRUE(acc.ok());
    ASSERT_TRUE(acc->Fill(0xa5, stream_).ok());
    absl::Status st = W4A4GemmAccumulators(d_act_.view(), d_weight_.view(), acc->data(), stream_, path);
    ASSERT_TRUE(st.ok()) << st;
    ATOMSERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const std::vector<int32_t> got = Download(*acc);
    int64_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (got[i] != want[i]) {
        if (bad < 5) {
          ADD_FAILURE() << PathName(path) << " t=" << i / per / s.n << " n=" << (i / per) % s.n << " acc " << i % per
                        << ": got " << got[i] << " want " << want[i];
        }
        ++bad;
      }
    }
    EXPECT_EQ(bad, 0) << PathName(path) << ": " << bad << " of " << want.size() << " accumulators differ";
  }
}

TEST_P(W4A4GemmTest, Fp32MatchesReference) {
  for (const W4A4GemmOptions& path : Paths()) CheckOutputs<float>(path, /*with_residual=*/false, /*in_place=*/false);
}

TEST_P(W4A4GemmTest, Fp32WithResidualMatchesReference) {
  for (const W4A4GemmOptions& path : Paths()) CheckOutputs<float>(path, /*with_residual=*/true, /*in_place=*/false);
}

TEST_P(W4A4GemmTest, Bf16WithinOneRounding) {
  for (const W4A4GemmOptions& path : Paths()) {
    CheckOutputs<__nv_bfloat16>(path, /*with_residual=*/false, /*in_place=*/false);
    CheckOutputs<__nv_bfloat16>(path, /*with_residual=*/true, /*in_place=*/true);
  }
}

TEST_P(W4A4GemmTest, Fp16InPlaceResidualWithinOneRounding) {
  for (const W4A4GemmOptions& path : Paths()) CheckOutputs<__half>(path, /*with_residual=*/true, /*in_place=*/true);
}

TEST_P(W4A4GemmTest, RepeatedRunsAreBitwiseIdentical) {
  const Shape s = GetParam();
  for (const W4A4GemmOptions& path : Paths()) {
    absl::StatusOr<DeviceBuffer<float>> y1 = DeviceBuffer<float>::Create(s.m * s.n);
    absl::StatusOr<DeviceBuffer<float>> y2 = DeviceBuffer<float>::Create(s.m * s.n);
    ASSERT_TRUE(y1.ok() && y2.ok());
    ASSERT_TRUE(y1->Fill(0xff, stream_).ok() && y2->Fill(0x7f, stream_).ok());
    ASSERT_TRUE(W4A4Gemm<float>(d_act_.view(), d_weight_.view(), nullptr, y1->data(), stream_, path).ok());
    ASSERT_TRUE(W4A4Gemm<float>(d_act_.view(), d_weight_.view(), nullptr, y2->data(), stream_, path).ok());
    ATOMSERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const std::vector<float> a = Download(*y1), b = Download(*y2);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << PathName(path);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, W4A4GemmTest, testing::ValuesIn(kShapes),
                         [](const testing::TestParamInfo<Shape>& info) { return Name(info.param); });

// The wgmma path on the smallest shapes, with structured codes that expose a
// wrong k-slot or row mapping (each channel distinct per row), fp32 out.
TEST(W4A4GemmWgmmaTest, TinyStructuredShapesAreExact) {
  SKIP_WITHOUT_GPU();
  for (const Shape s : {Shape{1, 8, 128, 0}, Shape{64, 128, 128, 0}, Shape{70, 130, 256, 64}, Shape{3, 5, 64, 64}}) {
    SCOPED_TRACE(Name(s));
    const QuantLayout layout = *QuantLayout::Make(s.k, s.keeper);
    W4A4Matrix a, w;
    a.Resize(layout, s.m);
    w.Resize(layout, s.n);
    std::vector<int8_t> codes(layout.padded_normal_k());
    for (int pass = 0; pass < 2; ++pass) {
      W4A4Matrix& m = pass == 0 ? a : w;
      for (int64_t r = 0; r < m.rows; ++r) {
        for (int64_t i = 0; i < layout.padded_normal_k(); ++i) {
          codes[i] = i < layout.normal_k() ? static_cast<int8_t>(((i * (pass ? 5 : 3) + r * 7) % 16) - 8) : 0;
        }
        quant::PackInt4(codes.data(), layout.padded_normal_k(), m.packed_row(r));
        for (int64_t g = 0; g < layout.groups(); ++g) m.scale_row(r)[g] = quant::FloatToHalfBits(0.01f * (1 + (r + g) % 5));
        for (int64_t i = 0; i < layout.keeper; ++i) m.keeper_row(r)[i] = static_cast<int8_t>(((i * 11 + r * 3) % 256) - 128);
        if (layout.keeper > 0) m.keeper_scales[r] = quant::FloatToHalfBits(0.001f * (1 + r % 3));
      }
    }
    const int64_t per = layout.accumulators();
    std::vector<int32_t> want(s.m * s.n * per);
    ASSERT_TRUE(quant::W4A4Accumulators(a, w, 0, s.m, 0, s.n, want.data()).ok());
    absl::StatusOr<DeviceW4A4Storage> da = DeviceW4A4Storage::Upload(a, nullptr);
    absl::StatusOr<DeviceW4A4Storage> dw = DeviceW4A4Storage::Upload(w, nullptr);
    ASSERT_TRUE(da.ok() && dw.ok());
    for (W4A4TileConfig tile : {W4A4TileConfig::k128x128, W4A4TileConfig::k64x64, W4A4TileConfig::k128x128SplitN}) {
      W4A4GemmOptions o;
      o.path = W4A4GemmPath::kWgmma;
      o.tile = tile;
      absl::StatusOr<DeviceBuffer<int32_t>> acc = DeviceBuffer<int32_t>::Create(want.size());
      ASSERT_TRUE(acc.ok());
      ASSERT_TRUE(acc->Fill(0xa5, nullptr).ok());
      ASSERT_TRUE(W4A4GemmAccumulators(da->view(), dw->view(), acc->data(), nullptr, o).ok());
      ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<int32_t> got = Download(*acc);
      int64_t bad = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        if (got[i] != want[i] && bad++ < 5) {
          ADD_FAILURE() << "tile " << static_cast<int>(tile) << " t=" << i / per / s.n << " n=" << (i / per) % s.n
                        << " acc " << i % per << ": got " << got[i] << " want " << want[i];
        }
      }
      EXPECT_EQ(bad, 0);
      // fp32 output against the reference (poisoned first).
      std::vector<float> ref(s.m * s.n);
      ThreadPool pool(0);
      ASSERT_TRUE(quant::W4A4Linear(a, w, nullptr, ref.data(), &pool).ok());
      const std::vector<double> mag = Magnitudes(a, w, &pool);
      absl::StatusOr<DeviceBuffer<float>> y = DeviceBuffer<float>::Create(ref.size());
      ASSERT_TRUE(y.ok() && y->Fill(0xff, nullptr).ok());
      ASSERT_TRUE(W4A4Gemm<float>(da->view(), dw->view(), nullptr, y->data(), nullptr, o).ok());
      ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> yh = Download(*y);
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_LE(std::fabs(static_cast<double>(yh[i]) - ref[i]), 1e-5 * mag[i]) << "i=" << i;  // NaN fails
      }
    }
  }
}

TEST(W4A4GemmErrorsTest, BadArgumentsAreRejected) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<QuantLayout> l1 = QuantLayout::Make(576, 128), l2 = QuantLayout::Make(576, 64);
  ASSERT_TRUE(l1.ok() && l2.ok());
  absl::StatusOr<DeviceW4A4Storage> a = DeviceW4A4Storage::Allocate(*l1, 100);
  absl::StatusOr<DeviceW4A4Storage> w = DeviceW4A4Storage::Allocate(*l1, 64);
  absl::StatusOr<DeviceW4A4Storage> w2 = DeviceW4A4Storage::Allocate(*l2, 64);
  absl::StatusOr<DeviceBuffer<float>> y = DeviceBuffer<float>::Create(100 * 64);
  ASSERT_TRUE(a.ok() && w.ok() && w2.ok() && y.ok());
  // Layouts differ.
  EXPECT_EQ(W4A4Gemm<float>(a->view(), w2->view(), nullptr, y->data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // Too many tokens for the skinny kernel.
  W4A4GemmOptions skinny;
  skinny.path = W4A4GemmPath::kSkinny;
  EXPECT_EQ(W4A4Gemm<float>(a->view(), w->view(), nullptr, y->data(), nullptr, skinny).code(),
            absl::StatusCode::kInvalidArgument);
  // Missing output; misaligned codes.
  EXPECT_EQ(W4A4Gemm<float>(a->view(), w->view(), nullptr, static_cast<float*>(nullptr), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  DeviceW4A4Matrix shifted = a->view();
  shifted.packed += 8;
  EXPECT_EQ(W4A4Gemm<float>(shifted, w->view(), nullptr, y->data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // Zero tokens is a no-op.
  EXPECT_TRUE(W4A4Gemm<float>(a->view().Rows(0), w->view(), nullptr, y->data(), nullptr).ok());
  ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
}

TEST(W4A4GemmStorageTest, UploadDownloadRoundTrips) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<QuantLayout> layout = QuantLayout::Make(560, 48);
  ASSERT_TRUE(layout.ok());
  const W4A4Matrix host = RandomW4A4(*layout, 37, 3, false);
  absl::StatusOr<DeviceW4A4Storage> dev = DeviceW4A4Storage::Upload(host, nullptr);
  ASSERT_TRUE(dev.ok()) << dev.status();
  W4A4Matrix back;
  ASSERT_TRUE(DownloadW4A4(dev->view(), &back, nullptr).ok());
  EXPECT_EQ(back.layout, host.layout);
  EXPECT_EQ(back.packed, host.packed);
  EXPECT_EQ(back.scales, host.scales);
  EXPECT_EQ(back.keeper_codes, host.keeper_codes);
  EXPECT_EQ(back.keeper_scales, host.keeper_scales);
}

}  // namespace
}  // namespace atomserve::cuda
