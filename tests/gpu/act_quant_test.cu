// GPU fused activation quantization (kernels/cuda/act_quant.h) against the
// CPU fused ops of kernels/quant/activation_quant.h on the same float values
// (bf16 inputs are converted exactly for the CPU), with a random permutation
// and the identity, K values with a zero-padded group, keeper 0 / 16 / 48 /
// 128 / K, and K values that force the scalar load path. Reorder must match
// bit for bit; RMSNorm and SiLU·up (different reduction order / expf) may
// differ by one code at rounding boundaries and by one fp16 ulp in at most
// 0.1% of the group scales (the bound stated in act_quant.h). Outputs are
// poisoned first, padding nibbles must be 0, and rows past `tokens` must stay
// untouched. Every test skips when there is no CUDA device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/cuda/act_quant.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/w4a4_gemm.h"
#include "kernels/quant/activation_quant.h"
#include "kernels/quant/w4a4_linear.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::cuda {
namespace {

using quant::QuantLayout;
using quant::QuantRecipe;
using quant::W4A4Matrix;

#define SKIP_WITHOUT_GPU() \
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device"

constexpr uint8_t kPoison = 0xab;

std::vector<float> RandomNormal(int64_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Activations with a few large outlier channels, like real hidden states.
std::vector<float> RandomActivations(int64_t tokens, int64_t k, uint32_t seed) {
  std::vector<float> x = RandomNormal(tokens * k, seed);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 3; c < k; c += 97) x[t * k + c] *= 20.0f;
  }
  return x;
}

std::vector<int32_t> RandomPermutation(int64_t k, uint32_t seed) {
  std::vector<int32_t> perm(k);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(perm.begin(), perm.end(), rng);
  return perm;
}

template <typename T>
T FromFloat(float v);
template <>
float FromFloat<float>(float v) { return v; }
template <>
__nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
float ToFloat(float v) { return v; }
float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

// Rounds x to T; returns the device copy and overwrites x with the exact
// float values the GPU sees.
template <typename T>
DeviceBuffer<T> UploadAs(std::vector<float>* x) {
  std::vector<T> host(x->size());
  for (size_t i = 0; i < x->size(); ++i) {
    host[i] = FromFloat<T>((*x)[i]);
    (*x)[i] = ToFloat(host[i]);
  }
  absl::StatusOr<DeviceBuffer<T>> buf = DeviceBuffer<T>::Create(host.size());
  EXPECT_TRUE(buf.ok()) << buf.status();
  EXPECT_TRUE(buf->CopyFromHost(host.data(), host.size(), nullptr).ok());
  ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  return std::move(*buf);
}

DeviceBuffer<int32_t> UploadPerm(const std::vector<int32_t>& perm) {
  absl::StatusOr<DeviceBuffer<int32_t>> buf = DeviceBuffer<int32_t>::Create(perm.size());
  EXPECT_TRUE(buf.ok());
  EXPECT_TRUE(buf->CopyFromHost(perm.data(), perm.size(), nullptr).ok());
  ATOMSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  return std::move(*buf);
}

void Poison(const DeviceW4A4Matrix& m) {
  const QuantLayout& l = m.layout;
  if (m.packed) ATOMSERVE_CUDA_CHECK(cudaMemset(m.packed, kPoison, m.rows * l.packed_row_bytes()));
  if (m.scales) ATOMSERVE_CUDA_CHECK(cudaMemset(m.scales, kPoison, m.rows * l.groups() * 2));
  if (m.keeper_codes) ATOMSERVE_CUDA_CHECK(cudaMemset(m.keeper_codes, kPoison, m.rows * l.keeper));
  if (m.keeper_scales) ATOMSERVE_CUDA_CHECK(cudaMemset(m.keeper_scales, kPoison, m.rows * 2));
}

struct Differences {
  int64_t groups = 0;          // INT4 groups + keeper groups compared
  int64_t scales = 0;          // scale bits differ
  int64_t scales_far = 0;      // ... by more than one fp16 ulp
  int64_t codes = 0;           // codes differ
  int64_t codes_far = 0;       // ... by more than 1
  int64_t bad_padding = 0;     // padding nibble not 0
  std::string first;           // description of the first difference
};

void NoteScale(uint16_t got, uint16_t want, const std::string& where, Differences* d) {
  ++d->groups;
  if (got == want) return;
  ++d->scales;
  // Both positive (or zero) fp16: adjacent values have adjacent bit patterns.
  if (std::abs(static_cast<int>(got) - static_cast<int>(want)) > 1 || (got | want) & 0x8000) ++d->scales_far;
  if (d->first.empty()) d->first = absl::StrCat(where, ": scale bits ", got, " vs ", want);
}
void NoteCode(int got, int want, const std::string& where, Differences* d) {
  if (got == want) return;
  ++d->codes;
  if (std::abs(got - want) > 1) ++d->codes_far;
  if (d->first.empty()) d->first = absl::StrCat(where, ": code ", got, " vs ", want);
}

Differences Compare(const W4A4Matrix& got, const W4A4Matrix& want) {
  Differences d;
  const QuantLayout& l = want.layout;
  std::vector<int8_t> cg(l.padded_normal_k()), cw(l.padded_normal_k());
  for (int64_t r = 0; r < want.rows; ++r) {
    quant::UnpackInt4(got.packed_row(r), l.padded_normal_k(), cg.data());
    quant::UnpackInt4(want.packed_row(r), l.padded_normal_k(), cw.data());
    for (int64_t g = 0; g < l.groups(); ++g) {
      const std::string where = absl::StrCat("row ", r, " group ", g);
      NoteScale(got.scale_row(r)[g], want.scale_row(r)[g], where, &d);
      for (int64_t i = g * 128; i < (g + 1) * 128; ++i) {
        if (i >= l.normal_k()) {
          d.bad_padding += cg[i] != 0;
        } else {
          NoteCode(cg[i], cw[i], absl::StrCat(where, " channel ", i), &d);
        }
      }
    }
    if (l.keeper > 0) {
      NoteScale(got.keeper_scales[r], want.keeper_scales[r], absl::StrCat("row ", r, " keepers"), &d);
      for (int64_t i = 0; i < l.keeper; ++i) {
        NoteCode(got.keeper_row(r)[i], want.keeper_row(r)[i], absl::StrCat("row ", r, " keeper ", i), &d);
      }
    }
  }
  return d;
}

void ExpectIdentical(const Differences& d) {
  EXPECT_EQ(d.scales, 0) << d.first;
  EXPECT_EQ(d.codes, 0) << d.first;
  EXPECT_EQ(d.bad_padding, 0);
}
// The documented bound for RMSNorm / SiLU: codes within 1, scales within one
// ulp, and identical scales in at least 99.9% of the groups.
void ExpectWithinBound(const Differences& d) {
  EXPECT_EQ(d.codes_far, 0) << d.first;
  EXPECT_EQ(d.scales_far, 0) << d.first;
  EXPECT_LE(d.scales * 1000, d.groups) << d.scales << " of " << d.groups << " scales differ; " << d.first;
  EXPECT_EQ(d.bad_padding, 0);
}

struct Shape {
  int64_t tokens, k, keeper;
  friend void PrintTo(const Shape& s, std::ostream* os) {
    *os << "tokens=" << s.tokens << " K=" << s.k << " keeper=" << s.keeper;
  }
};
const Shape kShapes[] = {
    {1, 576, 128},    // SmolLM2 hidden: 448 INT4 channels, padded last group
    {37, 1536, 0},    // pure INT4
    {130, 4224, 128}, // 4096 + 128
    {5, 560, 48},     // 48 keepers
    {3, 256, 256},    // keeper == K
    {9, 11008, 128},  // Llama-2-7B intermediate: 85 groups
    {6, 580, 64},     // K % 8 != 0: scalar loads for 16-bit inputs
    {4, 593, 16},     // odd K: scalar loads for every type
};

class ActQuantTest : public testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    ATOMSERVE_CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) ATOMSERVE_CUDA_CHECK(cudaStreamDestroy(stream_));
  }
  QuantRecipe Recipe() const {
    QuantRecipe r;
    r.keeper = static_cast<int>(GetParam().keeper);
    return r;
  }
  // Output storage with two spare rows that must stay poisoned.
  DeviceW4A4Storage MakeOutput() {
    const Shape s = GetParam();
    absl::StatusOr<DeviceW4A4Storage> out = DeviceW4A4Storage::Allocate(*QuantLayout::Make(s.k, s.keeper), s.tokens + 2);
    EXPECT_TRUE(out.ok()) << out.status();
    Poison(out->view());
    return std::move(*out);
  }
  W4A4Matrix Fetch(const DeviceW4A4Storage& out) {
    ATOMSERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    W4A4Matrix all;
    EXPECT_TRUE(DownloadW4A4(out.view(), &all, nullptr).ok());
    const int64_t tokens = GetParam().tokens;
    const QuantLayout& l = all.layout;
    // Rows past `tokens` untouched.
    int64_t touched = 0;
    for (int64_t r = tokens; r < all.rows; ++r) {
      for (int64_t i = 0; i < l.packed_row_bytes(); ++i) touched += all.packed_row(r)[i] != kPoison;
      for (int64_t i = 0; i < l.keeper; ++i) touched += static_cast<uint8_t>(all.keeper_row(r)[i]) != kPoison;
    }
    EXPECT_EQ(touched, 0) << "bytes written past the last token row";
    W4A4Matrix head;
    EXPECT_TRUE(DownloadW4A4(out.view().Rows(tokens), &head, nullptr).ok());
    return head;
  }

  template <typename T>
  void CheckRmsNorm() {
    const Shape s = GetParam();
    std::vector<float> x = RandomActivations(s.tokens, s.k, 11 + s.k);
    std::vector<float> w(s.k);
    std::mt19937 rng(12);
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    for (float& v : w) v = u(rng);
    DeviceBuffer<T> dx = UploadAs<T>(&x), dw = UploadAs<T>(&w);
    for (const std::vector<int32_t>& perm : {RandomPermutation(s.k, 13), std::vector<int32_t>{}}) {
      DeviceBuffer<int32_t> dperm = UploadPerm(perm);
      DeviceW4A4Storage out = MakeOutput();
      absl::Status st = RmsNormReorderQuantize<T>(dx.data(), dw.data(), 1e-5f, s.tokens,
                                                  perm.empty() ? nullptr : dperm.data(), Recipe().act_clip,
                                                  out.view(), stream_);
      ASSERT_TRUE(st.ok()) << st;
      W4A4Matrix want;
      ASSERT_TRUE(quant::RmsNormReorderQuantize(x.data(), w.data(), 1e-5f, s.tokens, s.k, perm, Recipe(), &want,
                                                nullptr).ok());
      ExpectWithinBound(Compare(Fetch(out), want));
    }
  }

  template <typename T>
  void CheckSiluMul(bool fused_gate_up) {
    const Shape s = GetParam();
    std::vector<float> gate = RandomNormal(s.tokens * s.k, 21 + s.k, 3.0f);
    std::vector<float> up = RandomActivations(s.tokens, s.k, 22 + s.k);
    // [tokens][2k] with gate then up in each row, or two [tokens][k] arrays.
    std::vector<float> both(s.tokens * 2 * s.k);
    for (int64_t t = 0; t < s.tokens; ++t) {
      std::copy_n(&gate[t * s.k], s.k, &both[t * 2 * s.k]);
      std::copy_n(&up[t * s.k], s.k, &both[t * 2 * s.k + s.k]);
    }
    DeviceBuffer<T> dg = UploadAs<T>(&gate), du = UploadAs<T>(&up), dboth = UploadAs<T>(&both);
    for (const std::vector<int32_t>& perm : {RandomPermutation(s.k, 23), std::vector<int32_t>{}}) {
      DeviceBuffer<int32_t> dperm = UploadPerm(perm);
      DeviceW4A4Storage out = MakeOutput();
      const int32_t* p = perm.empty() ? nullptr : dperm.data();
      absl::Status st = fused_gate_up ? SiluMulQuantize<T>(dboth.data(), dboth.data() + s.k, 2 * s.k, s.tokens, p,
                                                           Recipe().act_clip, out.view(), stream_)
                                      : SiluMulQuantize<T>(dg.data(), du.data(), s.k, s.tokens, p,
                                                           Recipe().act_clip, out.view(), stream_);
      ASSERT_TRUE(st.ok()) << st;
      W4A4Matrix want;
      ASSERT_TRUE(quant::SiluMulQuantize(gate.data(), up.data(), s.tokens, s.k, perm, Recipe(), &want, nullptr).ok());
      ExpectWithinBound(Compare(Fetch(out), want));
    }
  }

  template <typename T>
  void CheckReorder() {
    const Shape s = GetParam();
    std::vector<float> x = RandomActivations(s.tokens, s.k, 31 + s.k);
    DeviceBuffer<T> dx = UploadAs<T>(&x);
    for (const std::vector<int32_t>& perm : {RandomPermutation(s.k, 33), std::vector<int32_t>{}}) {
      DeviceBuffer<int32_t> dperm = UploadPerm(perm);
      DeviceW4A4Storage out = MakeOutput();
      absl::Status st = ReorderQuantize<T>(dx.data(), s.tokens, perm.empty() ? nullptr : dperm.data(),
                                           Recipe().act_clip, out.view(), stream_);
      ASSERT_TRUE(st.ok()) << st;
      W4A4Matrix want;
      ASSERT_TRUE(quant::ReorderQuantize(x.data(), s.tokens, s.k, perm, Recipe(), &want, nullptr).ok());
      ExpectIdentical(Compare(Fetch(out), want));
    }
  }

  cudaStream_t stream_ = nullptr;
};

TEST_P(ActQuantTest, RmsNormReorderQuantizeFloat) { CheckRmsNorm<float>(); }
TEST_P(ActQuantTest, RmsNormReorderQuantizeBf16) { CheckRmsNorm<__nv_bfloat16>(); }
TEST_P(ActQuantTest, SiluMulQuantizeFloat) { CheckSiluMul<float>(/*fused_gate_up=*/false); }
TEST_P(ActQuantTest, SiluMulQuantizeBf16FusedGateUp) { CheckSiluMul<__nv_bfloat16>(/*fused_gate_up=*/true); }
TEST_P(ActQuantTest, ReorderQuantizeFloatIsExact) { CheckReorder<float>(); }
TEST_P(ActQuantTest, ReorderQuantizeBf16IsExact) { CheckReorder<__nv_bfloat16>(); }

INSTANTIATE_TEST_SUITE_P(Shapes, ActQuantTest, testing::ValuesIn(kShapes),
                         [](const testing::TestParamInfo<Shape>& info) {
                           return absl::StrCat("T", info.param.tokens, "_K", info.param.k, "_keeper",
                                               info.param.keeper);
                         });

TEST(ActQuantErrorsTest, BadArgumentsAreRejected) {
  SKIP_WITHOUT_GPU();
  absl::StatusOr<DeviceW4A4Storage> out = DeviceW4A4Storage::Allocate(*QuantLayout::Make(576, 128), 4);
  absl::StatusOr<DeviceBuffer<float>> x = DeviceBuffer<float>::Create(8 * 576);
  ASSERT_TRUE(out.ok() && x.ok());
  EXPECT_EQ(ReorderQuantize<float>(x->data(), 5, nullptr, 0.9f, out->view(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // more tokens than rows
  EXPECT_EQ(ReorderQuantize<float>(x->data(), 4, nullptr, 0.0f, out->view(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // clip
  EXPECT_EQ(RmsNormReorderQuantize<float>(x->data(), nullptr, 1e-5f, 4, nullptr, 0.9f, out->view(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // no norm weight
  EXPECT_EQ(SiluMulQuantize<float>(x->data(), x->data(), 100, 4, nullptr, 0.9f, out->view(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // stride < K
  EXPECT_TRUE(ReorderQuantize<float>(x->data(), 0, nullptr, 0.9f, out->view(), nullptr).ok());
}

// The quantized activations feed the GEMM: GPU act-quant + GPU GEMM equals
// the CPU pipeline's integer accumulators (given identical codes).
TEST(ActQuantPipelineTest, QuantizedActivationsFeedTheGemm) {
  SKIP_WITHOUT_GPU();
  const int64_t tokens = 24, k = 576, n = 72;
  const QuantLayout layout = *QuantLayout::Make(k, 128);
  std::vector<float> x = RandomActivations(tokens, k, 51);
  DeviceBuffer<float> dx = UploadAs<float>(&x);
  const std::vector<int32_t> perm = RandomPermutation(k, 52);
  DeviceBuffer<int32_t> dperm = UploadPerm(perm);
  absl::StatusOr<DeviceW4A4Storage> act = DeviceW4A4Storage::Allocate(layout, tokens);
  ASSERT_TRUE(act.ok());
  ASSERT_TRUE(ReorderQuantize<float>(dx.data(), tokens, dperm.data(), 0.9f, act->view(), nullptr).ok());
  QuantRecipe recipe;
  W4A4Matrix act_cpu, weight;
  ASSERT_TRUE(quant::ReorderQuantize(x.data(), tokens, k, perm, recipe, &act_cpu, nullptr).ok());
  std::vector<float> w = RandomNormal(n * k, 53, 0.05f);
  ASSERT_TRUE(quant::ReorderQuantize(w.data(), n, k, {}, recipe, &weight, nullptr).ok());
  absl::StatusOr<DeviceW4A4Storage> dweight = DeviceW4A4Storage::Upload(weight, nullptr);
  ASSERT_TRUE(dweight.ok());
  std::vector<int32_t> want(tokens * n * layout.accumulators());
  ASSERT_TRUE(quant::W4A4Accumulators(act_cpu, weight, 0, tokens, 0, n, want.data()).ok());
  absl::StatusOr<DeviceBuffer<int32_t>> acc = DeviceBuffer<int32_t>::Create(want.size());
  ASSERT_TRUE(acc.ok());
  ASSERT_TRUE(W4A4GemmAccumulators(act->view(), dweight->view(), acc->data(), nullptr).ok());
  std::vector<int32_t> got(want.size());
  ASSERT_TRUE(acc->CopyToHost(got.data(), got.size(), nullptr).ok());
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace atomserve::cuda
