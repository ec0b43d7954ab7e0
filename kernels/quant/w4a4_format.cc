#include "kernels/quant/w4a4_format.h"

#include <bit>
#include <string>

#include "absl/strings/str_cat.h"

namespace atomserve::quant {
namespace {

bool IsClipValid(float clip) { return clip > 0.0f && clip <= 1.0f; }

}  // namespace

absl::Status QuantRecipe::Validate() const {
  if (group_size != kGroupSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantRecipe.group_size must be ", kGroupSize, ", got ", group_size));
  }
  if (keeper < 0 || keeper % kKeeperAlign != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuantRecipe.keeper must be a non-negative multiple of ", kKeeperAlign, ", got ", keeper));
  }
  if (!IsClipValid(weight_clip) || !IsClipValid(act_clip)) {
    return absl::InvalidArgumentError(absl::StrCat("QuantRecipe clip ratios must be in (0, 1], got weight_clip=",
                                                   weight_clip, " act_clip=", act_clip));
  }
  if (!(gptq_damp >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("QuantRecipe.gptq_damp must be >= 0, got ", gptq_damp));
  }
  if (gptq_block <= 0 || gptq_block % group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuantRecipe.gptq_block must be a positive multiple of group_size, got ", gptq_block));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantLayout> QuantLayout::Make(int64_t k, int64_t keeper, int64_t group_size) {
  if (group_size != kGroupSize) {
    return absl::InvalidArgumentError(absl::StrCat("group size must be ", kGroupSize, ", got ", group_size));
  }
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("K must be >= 1, got ", k));
  if (keeper < 0 || keeper > k || keeper % kKeeperAlign != 0) {
    return absl::InvalidArgumentError(absl::StrCat("keeper must be a multiple of ", kKeeperAlign,
                                                   " in [0, K=", k, "], got ", keeper));
  }
  QuantLayout layout;
  layout.k = k;
  layout.keeper = keeper;
  layout.group_size = group_size;
  return layout;
}

absl::StatusOr<QuantLayout> QuantLayout::FromRecipe(const QuantRecipe& recipe, int64_t k) {
  if (absl::Status st = recipe.Validate(); !st.ok()) return st;
  return Make(k, recipe.keeper, recipe.group_size);
}

void W4A4Matrix::Resize(const QuantLayout& new_layout, int64_t new_rows) {
  layout = new_layout;
  rows = new_rows;
  packed.resize(rows * layout.packed_row_bytes());
  scales.resize(rows * layout.groups());
  keeper_codes.resize(rows * layout.keeper);
  keeper_scales.resize(layout.keeper > 0 ? rows : 0);
}

absl::Status W4A4Matrix::CheckConsistent() const {
  auto mismatch = [&](const char* what, size_t got, int64_t want) {
    return absl::InvalidArgumentError(absl::StrCat("W4A4Matrix.", what, " has ", got,
                                                   " entries, layout (K=", layout.k, ", keeper=",
                                                   layout.keeper, ") x ", rows, " rows needs ", want));
  };
  if (rows < 0) return absl::InvalidArgumentError(absl::StrCat("W4A4Matrix.rows < 0: ", rows));
  if (absl::Status st = QuantLayout::Make(layout.k, layout.keeper, layout.group_size).status(); !st.ok()) return st;
  const int64_t want_packed = rows * layout.packed_row_bytes();
  const int64_t want_scales = rows * layout.groups();
  const int64_t want_keeper = rows * layout.keeper;
  const int64_t want_keeper_scales = layout.keeper > 0 ? rows : 0;
  if (static_cast<int64_t>(packed.size()) != want_packed) return mismatch("packed", packed.size(), want_packed);
  if (static_cast<int64_t>(scales.size()) != want_scales) return mismatch("scales", scales.size(), want_scales);
  if (static_cast<int64_t>(keeper_codes.size()) != want_keeper) {
    return mismatch("keeper_codes", keeper_codes.size(), want_keeper);
  }
  if (static_cast<int64_t>(keeper_scales.size()) != want_keeper_scales) {
    return mismatch("keeper_scales", keeper_scales.size(), want_keeper_scales);
  }
  return absl::OkStatus();
}

uint64_t W4A4Matrix::bytes() const {
  return packed.size() + scales.size() * sizeof(uint16_t) + keeper_codes.size() +
         keeper_scales.size() * sizeof(uint16_t);
}

// On the bit patterns: for non-negative, non-NaN floats the unsigned integer
// order is the float order, and an integer max reduction vectorizes where a
// float one (NaN and signed-zero semantics) does not.
float AbsMax(const float* x, int64_t n) {
  constexpr uint32_t kAbsMask = 0x7fffffffu;
  constexpr uint32_t kInfBits = 0x7f800000u;
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(x[i]) & kAbsMask;
    // A mask rather than a select: GCC 12 vectorizes only this form.
    const uint32_t not_nan = 0u - static_cast<uint32_t>(bits <= kInfBits);
    m = std::max(m, bits & not_nan);
  }
  return std::bit_cast<float>(m);
}

void QuantizeSymmetricSpan(const float* x, int64_t n, float scale, int qmin, int qmax, int8_t* codes) {
  if (scale == 0.0f) {
    std::fill(codes, codes + n, 0);
    return;
  }
  for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<int8_t>(RoundClamp(x[i] / scale, qmin, qmax));
}

void PackInt4(const int8_t* codes, int64_t n, uint8_t* packed) {
  for (int64_t i = 0; i + 1 < n; i += 2) packed[i / 2] = PackInt4Pair(codes[i], codes[i + 1]);
  if (n % 2 != 0) packed[n / 2] = PackInt4Pair(codes[n - 1], 0);
}

void UnpackInt4(const uint8_t* packed, int64_t n, int8_t* codes) {
  for (int64_t i = 0; i + 1 < n; i += 2) {
    codes[i] = UnpackInt4Low(packed[i / 2]);
    codes[i + 1] = UnpackInt4High(packed[i / 2]);
  }
  if (n % 2 != 0) codes[n - 1] = UnpackInt4Low(packed[n / 2]);
}

}  // namespace atomserve::quant
