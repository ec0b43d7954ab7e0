#include "runtime/calibration.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cpu/ops.h"
#include "kernels/quant/reorder.h"

namespace atomserve {
namespace {

// H += XᵀX for x[tokens, k]: one fp32 GEMM of the transposed rows, summed
// into the double accumulator (tmp and xt are scratch).
void AddGram(const float* x, int64_t tokens, int64_t k, double* h, std::vector<float>& xt,
             std::vector<float>& tmp) {
  xt.resize(k * tokens);
  tmp.resize(k * k);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < k; ++c) xt[c * tokens + t] = x[t * k + c];
  }
  cpu::Linear(xt.data(), xt.data(), tmp.data(), k, k, tokens, &ThreadPool::Default());
  for (int64_t i = 0; i < k * k; ++i) h[i] += tmp[i];
}

void Symmetrize(std::vector<double>& h, int64_t k) {
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = i + 1; j < k; ++j) {
      const double m = 0.5 * (h[i * k + j] + h[j * k + i]);
      h[i * k + j] = m;
      h[j * k + i] = m;
    }
  }
}

CalibrationStats EmptyStats(const ModelConfig& c, bool hessians) {
  const int64_t widths[kNumSites] = {c.hidden_size, c.num_heads * c.head_dim, c.hidden_size,
                                     c.intermediate_size};
  CalibrationStats stats;
  stats.layers.resize(c.num_layers);
  for (auto& layer : stats.layers) {
    for (int s = 0; s < kNumSites; ++s) {
      layer[s].k = widths[s];
      layer[s].salience.assign(widths[s], 0.0);
      if (hessians) layer[s].hessian.assign(widths[s] * widths[s], 0.0);
    }
  }
  return stats;
}

}  // namespace

absl::StatusOr<CalibrationStats> CollectCalibrationStats(LlamaModel& model, std::span<const int32_t> ids,
                                                         const CalibrationOptions& options,
                                                         const ProgressFn& progress) {
  if (ids.empty()) return absl::InvalidArgumentError("calibration: no tokens");
  if (options.seq_len < 1) return absl::InvalidArgumentError("calibration: seq_len must be >= 1");
  if (model.quantized()) return absl::InvalidArgumentError("calibration needs the fp32 model");
  if (model.has_activation_hook()) return absl::InvalidArgumentError("calibration: the model already has a hook");

  CalibrationStats stats = EmptyStats(model.config(), options.hessians);
  std::vector<float> xt, tmp;
  model.set_activation_hook([&](int64_t layer, ActivationSite site, float* x, int64_t tokens, int64_t k) {
    SiteStatistics& s = stats.layers[layer][static_cast<int>(site)];
    quant::AccumulateSalience(x, tokens, k, s.salience.data());
    if (options.hessians) AddGram(x, tokens, k, s.hessian.data(), xt, tmp);
  });

  const int64_t total = static_cast<int64_t>(ids.size());
  DenseKvCache cache = model.NewCache(std::min(total, options.seq_len));
  std::vector<float> logits;
  absl::Status status;
  for (int64_t begin = 0; begin < total && status.ok(); begin += options.seq_len) {
    const int64_t len = std::min(options.seq_len, total - begin);
    cache.Truncate(0);
    status = model.Forward(ids.subspan(begin, len), cache, &logits);
    stats.tokens += len;
    stats.sequences += 1;
    if (progress) progress(stats.tokens, total, absl::StrCat("sequence ", stats.sequences));
  }
  model.set_activation_hook(nullptr);
  ATOMSERVE_RETURN_IF_ERROR(status);
  if (options.hessians) {
    for (auto& layer : stats.layers) {
      for (SiteStatistics& s : layer) Symmetrize(s.hessian, s.k);
    }
  }
  return stats;
}

}  // namespace atomserve
