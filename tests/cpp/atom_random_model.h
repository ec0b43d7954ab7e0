// A small random Llama built in memory for the Atom model tests
// (atom_model_test.cc, atom_checkpoint_test.cc): hidden 256, 2 layers,
// intermediate 512, vocab 300, 4 heads / 2 KV heads of 64, tied embeddings.
//
// Embedding rows are correlated (a rank-16 mix plus noise, like real
// activations, so GPTQ has structure to exploit) and a few norm channels are
// large (outlier channels, so the INT8 keepers matter).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/checkpoint.h"

namespace atomserve::testing {

struct RandomLlamaOptions {
  int64_t hidden = 256;
  int64_t layers = 2;
  int64_t intermediate = 512;
  int64_t vocab = 300;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  uint64_t seed = 7;
};

inline HostTensor RandomTensor(std::vector<int64_t> shape, float stddev, std::mt19937_64& rng) {
  HostTensor t;
  t.shape = std::move(shape);
  t.data.resize(t.numel());
  std::normal_distribution<float> nd(0.0f, stddev);
  for (float& v : t.data) v = nd(rng);
  return t;
}

// 1 + noise, with a few channels scaled up: outliers after RMSNorm.
inline HostTensor NormWeight(int64_t h, std::mt19937_64& rng) {
  HostTensor t = RandomTensor({h}, 0.1f, rng);
  for (float& v : t.data) v += 1.0f;
  for (int64_t c : {3, 77, 150, 201}) t.data[c % h] *= 6.0f;
  return t;
}

inline HostTensor CorrelatedEmbedding(int64_t vocab, int64_t h, std::mt19937_64& rng) {
  const int64_t rank = 16;
  HostTensor z = RandomTensor({vocab, rank}, 1.0f, rng);
  HostTensor a = RandomTensor({rank, h}, 1.0f / std::sqrt(static_cast<float>(rank)), rng);
  HostTensor e = RandomTensor({vocab, h}, 0.2f, rng);
  for (int64_t v = 0; v < vocab; ++v) {
    for (int64_t r = 0; r < rank; ++r) {
      for (int64_t c = 0; c < h; ++c) e.data[v * h + c] += z.data[v * rank + r] * a.data[r * h + c];
    }
  }
  return e;
}

inline TokenizerSpec RandomTokenizerSpec(int64_t vocab) {
  TokenizerSpec t;
  for (int64_t i = 0; i < vocab; ++i) {
    t.tokens.push_back(absl::StrCat("tok", i));
    t.token_types.push_back(i == 0 ? TokenType::kControl : TokenType::kNormal);
  }
  t.merges = {"t o", "to k"};
  t.bos_id = 0;
  t.eos_id = 1;
  t.extra_eos_ids = {2};
  t.chat_template = "{{ messages }}";
  return t;
}

inline Checkpoint RandomLlamaCheckpoint(const RandomLlamaOptions& o = {}) {
  std::mt19937_64 rng(o.seed);
  Checkpoint ck;
  ck.path = "random-llama";
  ck.format = "memory";
  ModelConfig& c = ck.config;
  c.name = "random-llama";
  c.vocab_size = o.vocab;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.intermediate;
  c.num_layers = o.layers;
  c.num_heads = o.heads;
  c.num_kv_heads = o.kv_heads;
  c.head_dim = o.hidden / o.heads;
  c.max_position = 4096;
  c.tie_word_embeddings = true;
  const int64_t h = o.hidden, f = o.intermediate, q_out = o.heads * c.head_dim, kv_out = o.kv_heads * c.head_dim;
  const float sh = 1.0f / std::sqrt(static_cast<float>(h)), sf = 1.0f / std::sqrt(static_cast<float>(f));
  ck.tensors["model.embed_tokens.weight"] = CorrelatedEmbedding(o.vocab, h, rng);
  ck.tensors["model.norm.weight"] = NormWeight(h, rng);
  for (int64_t i = 0; i < o.layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    ck.tensors[p + "input_layernorm.weight"] = NormWeight(h, rng);
    ck.tensors[p + "post_attention_layernorm.weight"] = NormWeight(h, rng);
    ck.tensors[p + "self_attn.q_proj.weight"] = RandomTensor({q_out, h}, sh, rng);
    ck.tensors[p + "self_attn.k_proj.weight"] = RandomTensor({kv_out, h}, sh, rng);
    ck.tensors[p + "self_attn.v_proj.weight"] = RandomTensor({kv_out, h}, sh, rng);
    ck.tensors[p + "self_attn.o_proj.weight"] = RandomTensor({h, q_out}, sh, rng);
    ck.tensors[p + "mlp.gate_proj.weight"] = RandomTensor({f, h}, sh, rng);
    ck.tensors[p + "mlp.up_proj.weight"] = RandomTensor({f, h}, sh, rng);
    ck.tensors[p + "mlp.down_proj.weight"] = RandomTensor({h, f}, sf, rng);
  }
  ck.tokenizer = RandomTokenizerSpec(o.vocab);
  return ck;
}

// Token ids drawn uniformly from [3, vocab).
inline std::vector<int32_t> RandomIds(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = d(rng);
  return ids;
}

}  // namespace atomserve::testing
