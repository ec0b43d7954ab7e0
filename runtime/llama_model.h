// Llama-family decoder (Llama-2/3, Mistral, SmolLM2) on the CPU kernels.
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
// Thread safety: Forward() may run concurrently on different caches; each
// call uses the shared ThreadPool (calls are serialized inside parallel
// regions).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/rope.h"
#include "kvstore/dense_kv_cache.h"
#include "runtime/checkpoint.h"

namespace atomserve {

class LlamaModel {
 public:
  // Takes the weights out of the checkpoint (the tensors map is left empty).
  // Errors: kNotFound / kInvalidArgument for missing or mis-shaped tensors.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(Checkpoint&& checkpoint);

  const ModelConfig& config() const { return config_; }
  DenseKvCache NewCache(int64_t capacity) const;

  // Runs ids at positions [cache.length(), cache.length() + ids.size()),
  // appends their K/V and advances the cache. logits receives
  // [ids.size(), vocab] when all_logits, else [vocab] for the last token.
  // Errors: kInvalidArgument for ids outside the vocabulary or an empty
  // chunk; kResourceExhausted when the cache is full.
  absl::Status Forward(std::span<const int32_t> ids, DenseKvCache& cache, std::vector<float>* logits,
                       bool all_logits = false) const;

 private:
  struct Layer {
    HostTensor input_norm, q, k, v, o, post_norm, gate, up, down;
  };
  LlamaModel() = default;

  void AttentionBlock(const Layer& layer, int64_t layer_index, const float* x, float* out,
                      std::span<const int32_t> positions, DenseKvCache& cache, int64_t n) const;
  void MlpBlock(const Layer& layer, const float* x, float* out, int64_t n) const;

  ModelConfig config_;
  HostTensor embed_, final_norm_, lm_head_;  // lm_head_ empty when tied
  std::vector<Layer> layers_;
  RopeTable rope_;
};

}  // namespace atomserve
