// Llama-family decoder (Llama-2/3, Mistral, SmolLM2) on the CPU kernels, in
// fp32 or with Atom W4A4 linears.
//
// Supports GQA, RoPE with the config's theta and scaling, RMSNorm, SwiGLU and
// tied embeddings. Forward() runs a chunk of new tokens of one sequence,
// appends their K/V to the sequence's cache and returns logits.
//
//   ATOMSERVE_ASSIGN_OR_RETURN(auto model, LlamaModel::Create(std::move(ckpt)));
//   DenseKvCache cache = model->NewCache(2048);
//   std::vector<float> logits;
//   ATOMSERVE_RETURN_IF_ERROR(model->Forward(ids, cache, &logits));
//
// One forward pass serves every precision. Each layer has four activation
// sites, each feeding one or more linears (ActivationSite). On the float
// path the site's producer writes fp32 rows (RMSNorm, attention, SiLU·up) and
// an optional ActivationHook may observe them (calibration) or replace them
// (fake quantization); the linears are cpu::Linear. On the W4A4 path (weights
// quantized, recipe given) the producer is the fused Atom quantizer and the
// linears are the integer reference quant::W4A4Linear:
//
//   input_layernorm  -> RmsNormReorderQuantize(perm kAttnIn)  -> q, k, v
//   attention output -> ReorderQuantize(perm kAttnOut)        -> o_proj (+x)
//   post_attn_norm   -> RmsNormReorderQuantize(perm kMlpIn)   -> gate, up
//   silu(gate) * up  -> SiluMulQuantize(identity)             -> down (+x)
//
// down_proj's input reorder costs nothing at run time: its permutation was
// applied offline to the rows of gate/up_proj (reorder.h PermuteRows), so
// their outputs come out already in down_proj's reordered channel order.
// Embeddings, norms and the LM head stay fp32.
//
// KV4 (set_kv_precision): K and V are quantized per token per head to 4 bits
// (quant::QuantizeKvHead) and stored dequantized in the float cache:
// numerically what a 4-bit cache returns on read. K is quantized after RoPE
// (kInt4PostRope, as QServe does: the attention kernel stays a plain
// dequantize-then-dot) or before it (kInt4PreRope, as Atom does: the kernel
// must rotate after dequantizing). On SmolLM2-135M, before RoPE costs less
// perplexity (docs/accuracy.md).
//
// Thread safety: Forward() may run concurrently on different caches; each
// call uses the shared ThreadPool (calls are serialized inside parallel
// regions) and the hook, which must then be thread-safe itself. The setters
// must not race with Forward().
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/quant/w4a4_format.h"
#include "kernels/rope.h"
#include "kvstore/dense_kv_cache.h"
#include "kvstore/kv_manager.h"
#include "runtime/checkpoint.h"

namespace atomserve {

// Where an activation feeds linears; one of each per layer.
enum class ActivationSite : int {
  kAttnIn = 0,     // input_layernorm output -> q_proj, k_proj, v_proj
  kAttnOut = 1,    // attention output -> o_proj
  kMlpIn = 2,      // post_attention_layernorm output -> gate_proj, up_proj
  kMlpHidden = 3,  // silu(gate) * up -> down_proj
};
inline constexpr int kNumSites = 4;

// How the KV cache holds K and V (see the header comment).
enum class KvPrecision { kFp32, kInt4PostRope, kInt4PreRope };
// "fp32", "int4-post-rope", "int4-pre-rope".
const char* KvPrecisionName(KvPrecision precision);
// "attn_in", "attn_out", "mlp_in", "mlp_hidden".
const char* SiteName(ActivationSite site);

// One projection (bias-free nn.Linear) in either precision.
struct LinearWeight {
  HostTensor dense;          // [out, in] fp32: the float path
  quant::W4A4Matrix packed;  // rows = out, input channels reordered: the W4A4 path
  bool quantized() const { return dense.data.empty(); }
  int64_t out_features() const { return quantized() ? packed.rows : dense.shape.at(0); }
};

struct LayerWeights {
  HostTensor input_norm, post_norm;
  LinearWeight q, k, v, o, gate, up, down;
  // W4A4 only: the input-channel permutation of each site (reorder.h
  // convention, perm[j] = original channel at reordered position j).
  // perms[kMlpHidden] is always empty: it is baked into gate/up rows.
  std::array<std::vector<int32_t>, kNumSites> perms;
};

struct ModelWeights {
  HostTensor embed;       // [vocab, hidden]
  HostTensor final_norm;  // [hidden]
  HostTensor lm_head;     // [vocab, hidden]; empty when tied to embed
  std::vector<LayerWeights> layers;
};

// Called on the float path with the rows x[tokens, k] that feed the linears
// of (layer, site), after their producer. It may rewrite x in place (fake
// quantization) or only read it (calibration statistics).
using ActivationHook = std::function<void(int64_t layer, ActivationSite site, float* x, int64_t tokens, int64_t k)>;

// Checks weights against the config: every shape; with a recipe, that every
// linear is W4A4 in the recipe's layout and every site perm is valid;
// without, that every linear is fp32 and no perms are set.
// Errors: kInvalidArgument naming the tensor.
absl::Status ValidateModelWeights(const ModelConfig& config, const ModelWeights& weights,
                                  const std::optional<quant::QuantRecipe>& recipe);

// Moves the fp32 weights out of a checkpoint (HF names, checkpoint.h).
// Errors: kNotFound / kInvalidArgument for missing or mis-shaped tensors.
absl::StatusOr<ModelWeights> TakeModelWeights(Checkpoint& checkpoint);

// One step of the batched paged forward (LlamaModel::ForwardBatch): the new
// tokens of several sequences, flattened. Sequence i owns the token rows
// [offset_i, offset_i + count) where offset_i is the sum of the earlier
// counts; its tokens sit at positions [start, start + count) (start must be
// the sequence's num_computed in the KvManager). A decode token is a
// chunk of 1, a prefill chunk is longer; both mix freely in one step.
struct BatchSeq {
  kvstore::SeqId seq = 0;
  int64_t start = 0;
  int64_t count = 0;
  bool want_logits = true;  // logits of the chunk's last token
};
struct BatchStep {
  std::vector<int32_t> ids;    // [sum of counts]
  std::vector<BatchSeq> seqs;  // in row order
  int64_t num_tokens() const { return static_cast<int64_t>(ids.size()); }
};

class LlamaModel {
 public:
  // fp32 model. Takes the weights out of the checkpoint (the tensors map is
  // left empty). Errors: kNotFound / kInvalidArgument for missing or
  // mis-shaped tensors.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(Checkpoint&& checkpoint);

  // From weights in memory. recipe must be given iff every linear is W4A4
  // (the activation quantizers use its keeper and act_clip; the weights'
  // layouts must match it). Errors: kInvalidArgument naming the tensor for a
  // shape, layout, permutation or precision mismatch.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(const ModelConfig& config, ModelWeights&& weights,
                                                            std::optional<quant::QuantRecipe> recipe);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  bool quantized() const { return recipe_.has_value(); }
  // The W4A4 recipe; only when quantized().
  const quant::QuantRecipe& recipe() const { return *recipe_; }
  DenseKvCache NewCache(int64_t capacity) const;

  // 4-bit K/V (see the header comment); kFp32 by default.
  void set_kv_precision(KvPrecision precision) { kv_ = precision; }
  KvPrecision kv_precision() const { return kv_; }
  // Float path only (ignored when quantized()); nullptr removes it.
  void set_activation_hook(ActivationHook hook) { hook_ = std::move(hook); }
  bool has_activation_hook() const { return static_cast<bool>(hook_); }

  // Runs ids at positions [cache.length(), cache.length() + ids.size()),
  // appends their K/V and advances the cache. logits receives
  // [ids.size(), vocab] when all_logits, else [vocab] for the last token.
  // Errors: kInvalidArgument for ids outside the vocabulary or an empty
  // chunk; kResourceExhausted when the cache is full.
  absl::Status Forward(std::span<const int32_t> ids, DenseKvCache& cache, std::vector<float>* logits,
                       bool all_logits = false) const;

  // Batched paged forward (the engine's step). Every linear runs once over
  // all step.num_tokens() rows (float or W4A4, the same per-layer code as
  // Forward); K/V go into the sequences' 4-bit (or fp16) pages of `kv`
  // through cpu::WritePagedKv, and attention reads them with
  // cpu::PagedAttention. With kv_precision() == kInt4PreRope K is stored
  // before RoPE (the kernel rotates after dequantizing); otherwise after.
  // The caller must have called kv.Reserve(seq, count) for every sequence;
  // ForwardBatch Commit()s each one on success. logits receives one row
  // [vocab] per sequence with want_logits, in order.
  // Errors: kInvalidArgument for ids outside the vocabulary, empty or
  // inconsistent chunks (count < 1, start != num_computed, a sequence twice,
  // rows not matching ids), a KV geometry that does not match the model;
  // KvManager errors (kFailedPrecondition for unreserved pages). On error
  // nothing is committed (page bytes past num_computed may hold garbage).
  absl::Status ForwardBatch(const BatchStep& step, kvstore::KvManager& kv, std::vector<float>* logits) const;

 private:
  // The rows feeding the linears of one site: fp32 (float path) or their
  // W4A4 quantization.
  struct SiteInput {
    const float* dense = nullptr;
    quant::W4A4Matrix packed;
  };
  LlamaModel() = default;

  absl::Status NormInput(const float* x, const HostTensor& norm, int64_t layer, ActivationSite site,
                         int64_t n, float* scratch, SiteInput* in) const;
  absl::Status RowsInput(float* x, int64_t layer, ActivationSite site, int64_t n, int64_t k, SiteInput* in) const;
  absl::Status Apply(const LinearWeight& w, const SiteInput& in, int64_t n, int64_t k, float* y,
                     bool accumulate) const;
  absl::Status AttentionBlock(int64_t layer, const SiteInput& in, float* out, std::span<const int32_t> positions,
                              DenseKvCache& cache, int64_t n) const;
  absl::Status PagedAttentionBlock(int64_t layer, const SiteInput& in, float* out, const int32_t* positions,
                                   const int32_t* slots, const cpu::PagedAttentionBatch& batch,
                                   const cpu::PagedKvCache& cache, int64_t n) const;
  absl::Status MlpBlock(int64_t layer, const SiteInput& in, float* out, int64_t n) const;
  void RoundTripKv4(float* x, int64_t n) const;

  ModelConfig config_;
  ModelWeights weights_;
  std::optional<quant::QuantRecipe> recipe_;
  RopeTable rope_;
  KvPrecision kv_ = KvPrecision::kFp32;
  ActivationHook hook_;
};

}  // namespace atomserve
