#include "runtime/llama_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/cpu/ops.h"

namespace atomserve {
namespace {

absl::StatusOr<HostTensor> Take(Checkpoint& ckpt, const std::string& name,
                                const std::vector<int64_t>& shape) {
  ATOMSERVE_ASSIGN_OR_RETURN(const HostTensor* t, ckpt.Get(name, shape));
  (void)t;
  HostTensor out = std::move(ckpt.tensors[name]);
  ckpt.tensors.erase(name);
  return out;
}

RopeParams RopeParamsFrom(const ModelConfig& c) {
  RopeParams p;
  p.head_dim = c.head_dim;
  p.theta = c.rope_theta;
  switch (c.rope_scaling.type) {
    case RopeScalingType::kNone: p.scaling_type = 0; break;
    case RopeScalingType::kLinear: p.scaling_type = 1; break;
    case RopeScalingType::kLlama3: p.scaling_type = 2; break;
  }
  p.factor = c.rope_scaling.factor;
  p.low_freq_factor = c.rope_scaling.low_freq_factor;
  p.high_freq_factor = c.rope_scaling.high_freq_factor;
  p.original_max_position = c.rope_scaling.original_max_position;
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(Checkpoint&& ckpt) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  const ModelConfig& c = ckpt.config;
  ATOMSERVE_RETURN_IF_ERROR(c.Validate(ckpt.path));
  m->config_ = c;
  const int64_t h = c.hidden_size, hd = c.head_dim;
  const int64_t q_out = c.num_heads * hd, kv_out = c.num_kv_heads * hd;
  ATOMSERVE_ASSIGN_OR_RETURN(m->embed_, Take(ckpt, "model.embed_tokens.weight", {c.vocab_size, h}));
  ATOMSERVE_ASSIGN_OR_RETURN(m->final_norm_, Take(ckpt, "model.norm.weight", {h}));
  if (!c.tie_word_embeddings) {
    ATOMSERVE_ASSIGN_OR_RETURN(m->lm_head_, Take(ckpt, "lm_head.weight", {c.vocab_size, h}));
  }
  m->layers_.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer& L = m->layers_[i];
    ATOMSERVE_ASSIGN_OR_RETURN(L.input_norm, Take(ckpt, p + "input_layernorm.weight", {h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.q, Take(ckpt, p + "self_attn.q_proj.weight", {q_out, h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.k, Take(ckpt, p + "self_attn.k_proj.weight", {kv_out, h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.v, Take(ckpt, p + "self_attn.v_proj.weight", {kv_out, h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.o, Take(ckpt, p + "self_attn.o_proj.weight", {h, q_out}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.post_norm, Take(ckpt, p + "post_attention_layernorm.weight", {h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.gate, Take(ckpt, p + "mlp.gate_proj.weight", {c.intermediate_size, h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.up, Take(ckpt, p + "mlp.up_proj.weight", {c.intermediate_size, h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.down, Take(ckpt, p + "mlp.down_proj.weight", {h, c.intermediate_size}));
  }
  m->rope_ = RopeTable::Build(RopeParamsFrom(c));
  return m;
}

DenseKvCache LlamaModel::NewCache(int64_t capacity) const {
  return DenseKvCache(config_.num_layers, config_.num_kv_heads, config_.head_dim, capacity);
}

void LlamaModel::AttentionBlock(const Layer& L, int64_t layer_index, const float* x, float* out,
                                std::span<const int32_t> positions, DenseKvCache& cache,
                                int64_t n) const {
  ThreadPool* pool = &ThreadPool::Default();
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, hd = c.head_dim;
  const int64_t q_out = c.num_heads * hd, kv_out = c.num_kv_heads * hd;
  std::vector<float> q(n * q_out), k(n * kv_out), v(n * kv_out), attn(n * q_out);
  cpu::Linear(x, L.q.data.data(), q.data(), n, q_out, h, pool);
  cpu::Linear(x, L.k.data.data(), k.data(), n, kv_out, h, pool);
  cpu::Linear(x, L.v.data.data(), v.data(), n, kv_out, h, pool);
  cpu::ApplyRope(q.data(), positions.data(), n, c.num_heads, hd, rope_);
  cpu::ApplyRope(k.data(), positions.data(), n, c.num_kv_heads, hd, rope_);
  // The caller checked capacity, so the write cannot fail.
  ATOMSERVE_CHECK(cache.Write(layer_index, positions[0], n, k.data(), v.data()).ok());
  cpu::Attention(q.data(), cache.keys(layer_index), cache.values(layer_index), attn.data(),
                 positions.data(), n, c.num_heads, c.num_kv_heads, hd,
                 1.0f / std::sqrt(static_cast<float>(hd)), pool);
  cpu::Linear(attn.data(), L.o.data.data(), out, n, h, q_out, pool, /*accumulate=*/true);
}

void LlamaModel::MlpBlock(const Layer& L, const float* x, float* out, int64_t n) const {
  ThreadPool* pool = &ThreadPool::Default();
  const int64_t h = config_.hidden_size, f = config_.intermediate_size;
  std::vector<float> gate(n * f), up(n * f);
  cpu::Linear(x, L.gate.data.data(), gate.data(), n, f, h, pool);
  cpu::Linear(x, L.up.data.data(), up.data(), n, f, h, pool);
  cpu::SiluMul(gate.data(), up.data(), gate.data(), n * f);
  cpu::Linear(gate.data(), L.down.data.data(), out, n, h, f, pool, /*accumulate=*/true);
}

absl::Status LlamaModel::Forward(std::span<const int32_t> ids, DenseKvCache& cache,
                                 std::vector<float>* logits, bool all_logits) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0) return absl::InvalidArgumentError("Forward: no tokens");
  for (int32_t id : ids) {
    if (id < 0 || id >= c.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
  }
  const int64_t start = cache.length();
  if (start + n > cache.capacity())
    return absl::ResourceExhaustedError(absl::StrCat("sequence of ", start + n,
                                                     " tokens exceeds the KV cache capacity ", cache.capacity()));
  std::vector<int32_t> positions(n);
  for (int64_t i = 0; i < n; ++i) positions[i] = static_cast<int32_t>(start + i);

  const int64_t h = c.hidden_size;
  std::vector<float> x(n * h), normed(n * h);
  cpu::Embed(embed_.data.data(), ids.data(), x.data(), n, h);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& L = layers_[l];
    cpu::RmsNorm(x.data(), L.input_norm.data.data(), normed.data(), n, h, c.rms_norm_eps);
    AttentionBlock(L, l, normed.data(), x.data(), positions, cache, n);
    cpu::RmsNorm(x.data(), L.post_norm.data.data(), normed.data(), n, h, c.rms_norm_eps);
    MlpBlock(L, normed.data(), x.data(), n);
  }
  ATOMSERVE_RETURN_IF_ERROR(cache.SetLength(start + n));

  const int64_t rows = all_logits ? n : 1;
  const float* last = x.data() + (n - rows) * h;
  cpu::RmsNorm(last, final_norm_.data.data(), normed.data(), rows, h, c.rms_norm_eps);
  const HostTensor& head = c.tie_word_embeddings ? embed_ : lm_head_;
  logits->resize(rows * c.vocab_size);
  cpu::Linear(normed.data(), head.data.data(), logits->data(), rows, c.vocab_size, h, &ThreadPool::Default());
  return absl::OkStatus();
}

}  // namespace atomserve
