// Calibration for Atom: runs the fp32 model over calibration text and
// collects, for every activation site of every layer (llama_model.h
// ActivationSite), the statistics the quantizer needs:
//
//   salience = diag(XᵀX)  -> the channel reorder (keepers = most salient)
//   hessian  = XᵀX        -> GPTQ (only when options.hessians)
//
// X is the site's input over all calibration tokens: q/k/v share one
// (kAttnIn), gate/up share one (kMlpIn), o_proj (kAttnOut) and down_proj
// (kMlpHidden: silu(gate) * up) have their own. All statistics come from the
// fp32 model ("non-sequential" GPTQ: later layers do not see the quantization
// error of earlier ones).
//
// Precision: salience is accumulated in double, token by token. The Hessian
// of each calibration sequence (<= seq_len tokens) is one fp32 GEMM (XᵀX with
// cpu::Linear, about 5x faster than a double rank-1 update per token on this
// CPU); the per-sequence results are summed in double and symmetrized.
//
//   CalibrationOptions opt;  // seq_len 512, hessians on
//   ATOMSERVE_ASSIGN_OR_RETURN(CalibrationStats stats,
//                              CollectCalibrationStats(*fp32_model, ids, opt, progress));
//
// Memory: with hessians, Σ_sites k² doubles per layer (SmolLM2-135M: 27 MB a
// layer, 0.8 GB in all). Thread safety: uses the model's activation hook, so
// the model must not run Forward() elsewhere meanwhile.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/progress.h"
#include "runtime/llama_model.h"

namespace atomserve {

struct CalibrationOptions {
  int64_t seq_len = 512;  // tokens per forward pass (each a fresh sequence)
  bool hessians = true;   // collect XᵀX (GPTQ); false: only the diagonal
};

struct SiteStatistics {
  int64_t k = 0;                // channels
  std::vector<double> salience;  // [k]  diag(XᵀX)
  std::vector<double> hessian;   // [k, k] XᵀX row-major, or empty
};

struct CalibrationStats {
  int64_t tokens = 0;
  int64_t sequences = 0;
  std::vector<std::array<SiteStatistics, kNumSites>> layers;
};

// Splits ids into consecutive sequences of options.seq_len tokens (the last
// may be shorter) and runs each from an empty cache.
// Errors: kInvalidArgument for an empty ids span, seq_len < 1, a W4A4 model
// or a model that already has an activation hook; model errors.
absl::StatusOr<CalibrationStats> CollectCalibrationStats(LlamaModel& model, std::span<const int32_t> ids,
                                                         const CalibrationOptions& options,
                                                         const ProgressFn& progress = nullptr);

}  // namespace atomserve
