#include "runtime/atom_quantizer.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/quant/fake_quant.h"
#include "kernels/quant/quantize.h"
#include "kernels/quant/reorder.h"
#include "kernels/quant/weight_quant.h"

namespace atomserve {
namespace {

std::vector<float> StackRows(std::initializer_list<const std::vector<float>*> parts) {
  std::vector<float> out;
  for (const std::vector<float>* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

std::vector<float> PermutedRows(const HostTensor& w, std::span<const int32_t> perm) {
  std::vector<float> out(w.data.size());
  quant::PermuteRows(w.data.data(), w.shape[1], perm, out.data());
  return out;
}

// Quantizes rows stacked from several linears sharing one input and hands
// each its slice.
absl::Status QuantizeStacked(const std::vector<float>& stacked, int64_t k, std::span<const int32_t> perm,
                             const SiteStatistics& stats, const quant::QuantRecipe& recipe,
                             std::initializer_list<LinearWeight*> outs) {
  const int64_t n = static_cast<int64_t>(stacked.size()) / k;
  std::span<const double> hessian = recipe.gptq ? std::span<const double>(stats.hessian) : std::span<const double>();
  ATOMSERVE_ASSIGN_OR_RETURN(quant::W4A4Matrix m, quant::QuantizeLinearWeight(stacked.data(), n, k, perm, hessian,
                                                                            recipe, &ThreadPool::Default()));
  int64_t row = 0;
  for (LinearWeight* out : outs) {
    const int64_t rows = out->dense.shape[0];
    out->packed = SliceRows(m, row, row + rows);
    out->dense = HostTensor();
    row += rows;
  }
  return absl::OkStatus();
}

absl::Status CheckStats(const std::array<SiteStatistics, kNumSites>& s, const ModelConfig& c, bool gptq,
                        int64_t layer) {
  const int64_t widths[kNumSites] = {c.hidden_size, c.num_heads * c.head_dim, c.hidden_size,
                                     c.intermediate_size};
  for (int i = 0; i < kNumSites; ++i) {
    const bool ok = s[i].k == widths[i] && static_cast<int64_t>(s[i].salience.size()) == widths[i] &&
                    (!gptq || static_cast<int64_t>(s[i].hessian.size()) == widths[i] * widths[i]);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "calibration statistics of layer ", layer, " site ", SiteName(static_cast<ActivationSite>(i)),
          " do not fit the model", gptq && s[i].hessian.empty() ? " (GPTQ needs Hessians)" : ""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerWeights> QuantizeLayer(const LayerWeights& L, const std::array<SiteStatistics, kNumSites>& s,
                                           const quant::QuantRecipe& recipe) {
  LayerWeights out = L;  // norms and (temporarily) the float weights for their shapes
  std::array<std::vector<int32_t>, kNumSites> perms;
  for (int i = 0; i < kNumSites; ++i) {
    ATOMSERVE_ASSIGN_OR_RETURN(perms[i], quant::SaliencePermutation(s[i].salience));
  }
  const int64_t h = L.q.dense.shape[1], q_out = L.o.dense.shape[1], f = L.down.dense.shape[1];
  using enum ActivationSite;
  const int a = static_cast<int>(kAttnIn), o = static_cast<int>(kAttnOut), m = static_cast<int>(kMlpIn),
            d = static_cast<int>(kMlpHidden);
  ATOMSERVE_RETURN_IF_ERROR(QuantizeStacked(StackRows({&L.q.dense.data, &L.k.dense.data, &L.v.dense.data}), h,
                                            perms[a], s[a], recipe, {&out.q, &out.k, &out.v}));
  ATOMSERVE_RETURN_IF_ERROR(QuantizeStacked(L.o.dense.data, q_out, perms[o], s[o], recipe, {&out.o}));
  ATOMSERVE_RETURN_IF_ERROR(QuantizeStacked(L.down.dense.data, f, perms[d], s[d], recipe, {&out.down}));
  // The free MLP reorder: gate/up outputs come out in down_proj's order.
  const std::vector<float> gate = PermutedRows(L.gate.dense, perms[d]);
  const std::vector<float> up = PermutedRows(L.up.dense, perms[d]);
  ATOMSERVE_RETURN_IF_ERROR(
      QuantizeStacked(StackRows({&gate, &up}), h, perms[m], s[m], recipe, {&out.gate, &out.up}));
  out.perms = {std::move(perms[a]), std::move(perms[o]), std::move(perms[m]), {}};
  return out;
}

absl::StatusOr<LinearWeight> DequantizeLinear(const LinearWeight& w, std::span<const int32_t> perm) {
  if (!w.quantized()) return absl::InvalidArgumentError("DequantizeModelWeights: the weights are not W4A4");
  LinearWeight out;
  out.dense.shape = {w.packed.rows, w.packed.layout.k};
  out.dense.data.resize(w.packed.rows * w.packed.layout.k);
  ATOMSERVE_RETURN_IF_ERROR(quant::Dequantize(w.packed, perm, out.dense.data.data(), &ThreadPool::Default()));
  return out;
}

}  // namespace

quant::W4A4Matrix SliceRows(const quant::W4A4Matrix& m, int64_t begin, int64_t end) {
  ATOMSERVE_CHECK(0 <= begin && begin <= end && end <= m.rows);
  quant::W4A4Matrix out;
  out.Resize(m.layout, end - begin);
  const int64_t pb = m.layout.packed_row_bytes(), g = m.layout.groups(), kk = m.layout.keeper;
  std::copy(m.packed.begin() + begin * pb, m.packed.begin() + end * pb, out.packed.begin());
  std::copy(m.scales.begin() + begin * g, m.scales.begin() + end * g, out.scales.begin());
  std::copy(m.keeper_codes.begin() + begin * kk, m.keeper_codes.begin() + end * kk, out.keeper_codes.begin());
  if (!m.keeper_scales.empty()) {
    std::copy(m.keeper_scales.begin() + begin, m.keeper_scales.begin() + end, out.keeper_scales.begin());
  }
  return out;
}

absl::StatusOr<ModelWeights> QuantizeModelWeights(const ModelConfig& config, const ModelWeights& fp32,
                                                  const CalibrationStats& stats, const quant::QuantRecipe& recipe,
                                                  const ProgressFn& progress) {
  ATOMSERVE_RETURN_IF_ERROR(recipe.Validate());
  if (static_cast<int64_t>(fp32.layers.size()) != config.num_layers ||
      static_cast<int64_t>(stats.layers.size()) != config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("quantize: config has ", config.num_layers, " layers, weights ",
                                                   fp32.layers.size(), ", statistics ", stats.layers.size()));
  }
  ModelWeights out;
  out.embed = fp32.embed;
  out.final_norm = fp32.final_norm;
  out.lm_head = fp32.lm_head;
  out.layers.reserve(config.num_layers);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    if (fp32.layers[l].q.quantized()) return absl::InvalidArgumentError("quantize: the weights are already W4A4");
    ATOMSERVE_RETURN_IF_ERROR(CheckStats(stats.layers[l], config, recipe.gptq, l));
    absl::StatusOr<LayerWeights> layer = QuantizeLayer(fp32.layers[l], stats.layers[l], recipe);
    if (!layer.ok()) {
      return absl::Status(layer.status().code(), absl::StrCat("layer ", l, ": ", layer.status().message()));
    }
    out.layers.push_back(std::move(*layer));
    if (progress) progress(l + 1, config.num_layers, absl::StrCat("layer ", l + 1, "/", config.num_layers));
  }
  return out;
}

absl::StatusOr<ModelWeights> DequantizeModelWeights(const ModelWeights& w) {
  ModelWeights out;
  out.embed = w.embed;
  out.final_norm = w.final_norm;
  out.lm_head = w.lm_head;
  using enum ActivationSite;
  for (const LayerWeights& L : w.layers) {
    LayerWeights f;
    f.input_norm = L.input_norm;
    f.post_norm = L.post_norm;
    const auto& p = L.perms;
    ATOMSERVE_ASSIGN_OR_RETURN(f.q, DequantizeLinear(L.q, p[static_cast<int>(kAttnIn)]));
    ATOMSERVE_ASSIGN_OR_RETURN(f.k, DequantizeLinear(L.k, p[static_cast<int>(kAttnIn)]));
    ATOMSERVE_ASSIGN_OR_RETURN(f.v, DequantizeLinear(L.v, p[static_cast<int>(kAttnIn)]));
    ATOMSERVE_ASSIGN_OR_RETURN(f.o, DequantizeLinear(L.o, p[static_cast<int>(kAttnOut)]));
    ATOMSERVE_ASSIGN_OR_RETURN(f.gate, DequantizeLinear(L.gate, p[static_cast<int>(kMlpIn)]));
    ATOMSERVE_ASSIGN_OR_RETURN(f.up, DequantizeLinear(L.up, p[static_cast<int>(kMlpIn)]));
    ATOMSERVE_ASSIGN_OR_RETURN(f.down, DequantizeLinear(L.down, {}));
    out.layers.push_back(std::move(f));
  }
  return out;
}

ActivationHook AtomFakeQuantHook(const ModelWeights& w4a4, const quant::QuantRecipe& recipe) {
  std::vector<std::array<std::vector<int32_t>, kNumSites>> perms;
  for (const LayerWeights& L : w4a4.layers) perms.push_back(L.perms);
  return [perms = std::move(perms), recipe](int64_t layer, ActivationSite site, float* x, int64_t tokens,
                                            int64_t k) {
    const std::vector<int32_t>& perm = perms[layer][static_cast<int>(site)];
    // Perms and recipe were validated when the W4A4 model was built.
    ATOMSERVE_CHECK(quant::FakeQuantActivationsAtom(x, tokens, k, perm, recipe, x, &ThreadPool::Default()).ok());
  };
}

absl::Status FakeQuantizeLinearsPerRow(ModelWeights& weights, int bits, float clip) {
  for (LayerWeights& L : weights.layers) {
    for (LinearWeight* w : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) {
      if (w->quantized()) return absl::InvalidArgumentError("per-row fake quantization needs fp32 weights");
      float* data = w->dense.data.data();
      ATOMSERVE_RETURN_IF_ERROR(quant::FakeQuantPerRow(data, w->dense.shape[0], w->dense.shape[1], bits, clip, data,
                                                       &ThreadPool::Default()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ActivationHook> PerRowFakeQuantHook(int bits, float clip) {
  float probe = 1.0f;
  ATOMSERVE_RETURN_IF_ERROR(quant::FakeQuantPerRow(&probe, 1, 1, bits, clip, &probe, nullptr));
  return ActivationHook([bits, clip](int64_t, ActivationSite, float* x, int64_t tokens, int64_t k) {
    // bits and clip were validated above.
    ATOMSERVE_CHECK(quant::FakeQuantPerRow(x, tokens, k, bits, clip, x, &ThreadPool::Default()).ok());
  });
}

absl::StatusOr<ModelWeights> CalibrateAndQuantize(LlamaModel& fp32, std::span<const int32_t> calibration_ids,
                                                  const quant::QuantRecipe& recipe, int64_t seq_len,
                                                  const ProgressFn& calibration_progress,
                                                  const ProgressFn& quantize_progress, CalibrationStats* stats_out) {
  ATOMSERVE_RETURN_IF_ERROR(recipe.Validate());
  CalibrationOptions options;
  options.seq_len = seq_len;
  options.hessians = recipe.gptq;
  ATOMSERVE_ASSIGN_OR_RETURN(CalibrationStats stats,
                             CollectCalibrationStats(fp32, calibration_ids, options, calibration_progress));
  ATOMSERVE_ASSIGN_OR_RETURN(ModelWeights w, QuantizeModelWeights(fp32.config(), fp32.weights(), stats, recipe,
                                                                  quantize_progress));
  if (stats_out) {
    stats.layers.clear();  // the Hessians are large; keep only the counts
    *stats_out = std::move(stats);
  }
  return w;
}

}  // namespace atomserve
