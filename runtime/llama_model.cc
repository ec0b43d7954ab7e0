#include "runtime/llama_model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/quant/activation_quant.h"
#include "kernels/quant/kv_quant.h"
#include "kernels/quant/reorder.h"
#include "kernels/quant/w4a4_linear.h"

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

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

absl::Status CheckShape(const HostTensor& t, const std::vector<int64_t>& shape, const std::string& name) {
  if (t.shape == shape && static_cast<int64_t>(t.data.size()) == t.numel()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeString(t.shape), " (", t.data.size(),
                                                 " values), expected ", ShapeString(shape)));
}

absl::Status CheckLinear(const LinearWeight& w, int64_t out, int64_t in,
                         const std::optional<quant::QuantRecipe>& recipe, const std::string& name) {
  if (!recipe) {
    if (w.quantized()) return absl::InvalidArgumentError(absl::StrCat(name, " is W4A4 in an fp32 model"));
    return CheckShape(w.dense, {out, in}, name);
  }
  if (!w.quantized()) return absl::InvalidArgumentError(absl::StrCat(name, " is fp32 in a W4A4 model"));
  ATOMSERVE_ASSIGN_OR_RETURN(quant::QuantLayout layout, quant::QuantLayout::FromRecipe(*recipe, in));
  if (w.packed.layout != layout || w.packed.rows != out) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": W4A4 [", w.packed.rows, " rows, k ", w.packed.layout.k, ", keeper ", w.packed.layout.keeper,
        "], expected [", out, " rows, k ", in, ", keeper ", layout.keeper, "]"));
  }
  absl::Status st = w.packed.CheckConsistent();
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", st.message()));
  return absl::OkStatus();
}

// Site perms: W4A4 needs one per site with k entries (kMlpHidden: none, it
// is baked into gate/up rows); the float path uses none.
absl::Status CheckPerms(const LayerWeights& L, const ModelConfig& c, bool quantized, const std::string& prefix) {
  const int64_t widths[kNumSites] = {c.hidden_size, c.num_heads * c.head_dim, c.hidden_size, 0};
  for (int s = 0; s < kNumSites; ++s) {
    const std::vector<int32_t>& perm = L.perms[s];
    const std::string name = absl::StrCat(prefix, SiteName(static_cast<ActivationSite>(s)), ".perm");
    if (!quantized || widths[s] == 0) {
      if (!perm.empty()) return absl::InvalidArgumentError(absl::StrCat(name, " must be empty"));
      continue;
    }
    absl::Status st = quant::ValidatePermutation(perm, widths[s]);
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", st.message()));
  }
  return absl::OkStatus();
}

absl::Status CheckLayer(const LayerWeights& L, const ModelConfig& c, const std::optional<quant::QuantRecipe>& recipe,
                        int64_t index) {
  const std::string p = absl::StrCat("model.layers.", index, ".");
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  ATOMSERVE_RETURN_IF_ERROR(CheckShape(L.input_norm, {h}, p + "input_layernorm.weight"));
  ATOMSERVE_RETURN_IF_ERROR(CheckShape(L.post_norm, {h}, p + "post_attention_layernorm.weight"));
  ATOMSERVE_RETURN_IF_ERROR(CheckLinear(L.q, q_out, h, recipe, p + "self_attn.q_proj"));
  ATOMSERVE_RETURN_IF_ERROR(CheckLinear(L.k, kv_out, h, recipe, p + "self_attn.k_proj"));
  ATOMSERVE_RETURN_IF_ERROR(CheckLinear(L.v, kv_out, h, recipe, p + "self_attn.v_proj"));
  ATOMSERVE_RETURN_IF_ERROR(CheckLinear(L.o, h, q_out, recipe, p + "self_attn.o_proj"));
  ATOMSERVE_RETURN_IF_ERROR(CheckLinear(L.gate, f, h, recipe, p + "mlp.gate_proj"));
  ATOMSERVE_RETURN_IF_ERROR(CheckLinear(L.up, f, h, recipe, p + "mlp.up_proj"));
  ATOMSERVE_RETURN_IF_ERROR(CheckLinear(L.down, h, f, recipe, p + "mlp.down_proj"));
  return CheckPerms(L, c, recipe.has_value(), p);
}

absl::StatusOr<LinearWeight> TakeLinear(Checkpoint& ckpt, const std::string& name, int64_t out, int64_t in) {
  LinearWeight w;
  ATOMSERVE_ASSIGN_OR_RETURN(w.dense, Take(ckpt, name, {out, in}));
  return w;
}

}  // namespace

const char* KvPrecisionName(KvPrecision p) {
  switch (p) {
    case KvPrecision::kFp32: return "fp32";
    case KvPrecision::kInt4PostRope: return "int4-post-rope";
    case KvPrecision::kInt4PreRope: return "int4-pre-rope";
  }
  return "?";
}

const char* SiteName(ActivationSite site) {
  switch (site) {
    case ActivationSite::kAttnIn: return "attn_in";
    case ActivationSite::kAttnOut: return "attn_out";
    case ActivationSite::kMlpIn: return "mlp_in";
    case ActivationSite::kMlpHidden: return "mlp_hidden";
  }
  return "?";
}

absl::Status ValidateModelWeights(const ModelConfig& c, const ModelWeights& w,
                                  const std::optional<quant::QuantRecipe>& recipe) {
  if (recipe) ATOMSERVE_RETURN_IF_ERROR(recipe->Validate());
  const int64_t h = c.hidden_size;
  ATOMSERVE_RETURN_IF_ERROR(CheckShape(w.embed, {c.vocab_size, h}, "model.embed_tokens.weight"));
  ATOMSERVE_RETURN_IF_ERROR(CheckShape(w.final_norm, {h}, "model.norm.weight"));
  if (!c.tie_word_embeddings) ATOMSERVE_RETURN_IF_ERROR(CheckShape(w.lm_head, {c.vocab_size, h}, "lm_head.weight"));
  if (static_cast<int64_t>(w.layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights have ", w.layers.size(), " layers, the config ", c.num_layers));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) ATOMSERVE_RETURN_IF_ERROR(CheckLayer(w.layers[i], c, recipe, i));
  return absl::OkStatus();
}

absl::StatusOr<ModelWeights> TakeModelWeights(Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config;
  ATOMSERVE_RETURN_IF_ERROR(c.Validate(ckpt.path));
  const int64_t h = c.hidden_size, hd = c.head_dim, f = c.intermediate_size;
  const int64_t q_out = c.num_heads * hd, kv_out = c.num_kv_heads * hd;
  ModelWeights w;
  ATOMSERVE_ASSIGN_OR_RETURN(w.embed, Take(ckpt, "model.embed_tokens.weight", {c.vocab_size, h}));
  ATOMSERVE_ASSIGN_OR_RETURN(w.final_norm, Take(ckpt, "model.norm.weight", {h}));
  if (!c.tie_word_embeddings) {
    ATOMSERVE_ASSIGN_OR_RETURN(w.lm_head, Take(ckpt, "lm_head.weight", {c.vocab_size, h}));
  }
  w.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights& L = w.layers[i];
    ATOMSERVE_ASSIGN_OR_RETURN(L.input_norm, Take(ckpt, p + "input_layernorm.weight", {h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.q, TakeLinear(ckpt, p + "self_attn.q_proj.weight", q_out, h));
    ATOMSERVE_ASSIGN_OR_RETURN(L.k, TakeLinear(ckpt, p + "self_attn.k_proj.weight", kv_out, h));
    ATOMSERVE_ASSIGN_OR_RETURN(L.v, TakeLinear(ckpt, p + "self_attn.v_proj.weight", kv_out, h));
    ATOMSERVE_ASSIGN_OR_RETURN(L.o, TakeLinear(ckpt, p + "self_attn.o_proj.weight", h, q_out));
    ATOMSERVE_ASSIGN_OR_RETURN(L.post_norm, Take(ckpt, p + "post_attention_layernorm.weight", {h}));
    ATOMSERVE_ASSIGN_OR_RETURN(L.gate, TakeLinear(ckpt, p + "mlp.gate_proj.weight", f, h));
    ATOMSERVE_ASSIGN_OR_RETURN(L.up, TakeLinear(ckpt, p + "mlp.up_proj.weight", f, h));
    ATOMSERVE_ASSIGN_OR_RETURN(L.down, TakeLinear(ckpt, p + "mlp.down_proj.weight", h, f));
  }
  return w;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(Checkpoint&& ckpt) {
  ATOMSERVE_ASSIGN_OR_RETURN(ModelWeights w, TakeModelWeights(ckpt));
  return Create(ckpt.config, std::move(w), std::nullopt);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(const ModelConfig& c, ModelWeights&& w,
                                                               std::optional<quant::QuantRecipe> recipe) {
  ATOMSERVE_RETURN_IF_ERROR(c.Validate(c.name));
  ATOMSERVE_RETURN_IF_ERROR(ValidateModelWeights(c, w, recipe));
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->config_ = c;
  m->weights_ = std::move(w);
  m->recipe_ = recipe;
  m->rope_ = RopeTable::Build(RopeParamsFrom(c));
  return m;
}

DenseKvCache LlamaModel::NewCache(int64_t capacity) const {
  return DenseKvCache(config_.num_layers, config_.num_kv_heads, config_.head_dim, capacity);
}

absl::Status LlamaModel::NormInput(const float* x, const HostTensor& norm, int64_t layer, ActivationSite site,
                                   int64_t n, float* scratch, SiteInput* in) const {
  const int64_t h = config_.hidden_size;
  const float eps = config_.rms_norm_eps;
  if (quantized()) {
    return quant::RmsNormReorderQuantize(x, norm.data.data(), eps, n, h,
                                         weights_.layers[layer].perms[static_cast<int>(site)], *recipe_,
                                         &in->packed, &ThreadPool::Default());
  }
  cpu::RmsNorm(x, norm.data.data(), scratch, n, h, config_.rms_norm_eps);
  return RowsInput(scratch, layer, site, n, h, in);
}

absl::Status LlamaModel::RowsInput(float* x, int64_t layer, ActivationSite site, int64_t n, int64_t k,
                                   SiteInput* in) const {
  if (quantized()) {
    return quant::ReorderQuantize(x, n, k, weights_.layers[layer].perms[static_cast<int>(site)], *recipe_,
                                  &in->packed, &ThreadPool::Default());
  }
  if (hook_) hook_(layer, site, x, n, k);
  in->dense = x;
  return absl::OkStatus();
}

absl::Status LlamaModel::Apply(const LinearWeight& w, const SiteInput& in, int64_t n, int64_t k, float* y,
                               bool accumulate) const {
  ThreadPool* pool = &ThreadPool::Default();
  if (w.quantized()) return quant::W4A4Linear(in.packed, w.packed, accumulate ? y : nullptr, y, pool);
  cpu::Linear(in.dense, w.dense.data.data(), y, n, w.dense.shape[0], k, pool, accumulate);
  return absl::OkStatus();
}

// Quantize-dequantize each (token, kv head) vector of x[n, kv_heads, head_dim].
void LlamaModel::RoundTripKv4(float* x, int64_t n) const {
  const int64_t hd = config_.head_dim, vectors = n * config_.num_kv_heads;
  std::vector<uint8_t> codes(quant::KvPackedBytes(hd));
  for (int64_t i = 0; i < vectors; ++i) {
    uint16_t scale = 0, zero = 0;
    quant::QuantizeKvHead(x + i * hd, hd, codes.data(), &scale, &zero);
    quant::DequantizeKvHead(codes.data(), hd, scale, zero, x + i * hd);
  }
}

absl::Status LlamaModel::AttentionBlock(int64_t layer, const SiteInput& in, float* out,
                                        std::span<const int32_t> positions, DenseKvCache& cache, int64_t n) const {
  const LayerWeights& L = weights_.layers[layer];
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, hd = c.head_dim;
  const int64_t q_out = c.num_heads * hd, kv_out = c.num_kv_heads * hd;
  std::vector<float> q(n * q_out), k(n * kv_out), v(n * kv_out), attn(n * q_out);
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.q, in, n, h, q.data(), false));
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.k, in, n, h, k.data(), false));
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.v, in, n, h, v.data(), false));
  if (kv_ == KvPrecision::kInt4PreRope) RoundTripKv4(k.data(), n);
  cpu::ApplyRope(q.data(), positions.data(), n, c.num_heads, hd, rope_);
  cpu::ApplyRope(k.data(), positions.data(), n, c.num_kv_heads, hd, rope_);
  if (kv_ == KvPrecision::kInt4PostRope) RoundTripKv4(k.data(), n);
  if (kv_ != KvPrecision::kFp32) RoundTripKv4(v.data(), n);
  // The caller checked capacity, so the write cannot fail.
  ATOMSERVE_CHECK(cache.Write(layer, positions[0], n, k.data(), v.data()).ok());
  cpu::Attention(q.data(), cache.keys(layer), cache.values(layer), attn.data(), positions.data(), n, c.num_heads,
                 c.num_kv_heads, hd, 1.0f / std::sqrt(static_cast<float>(hd)), &ThreadPool::Default());
  SiteInput o_in;
  ATOMSERVE_RETURN_IF_ERROR(RowsInput(attn.data(), layer, ActivationSite::kAttnOut, n, q_out, &o_in));
  return Apply(L.o, o_in, n, q_out, out, /*accumulate=*/true);
}

absl::Status LlamaModel::MlpBlock(int64_t layer, const SiteInput& in, float* out, int64_t n) const {
  const LayerWeights& L = weights_.layers[layer];
  const int64_t h = config_.hidden_size, f = config_.intermediate_size;
  std::vector<float> gate(n * f), up(n * f);
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.gate, in, n, h, gate.data(), false));
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.up, in, n, h, up.data(), false));
  SiteInput hidden;
  if (quantized()) {
    // Empty perm: gate/up rows already come in down_proj's reordered order.
    ATOMSERVE_RETURN_IF_ERROR(quant::SiluMulQuantize(gate.data(), up.data(), n, f, {}, *recipe_, &hidden.packed,
                                                     &ThreadPool::Default()));
  } else {
    cpu::SiluMul(gate.data(), up.data(), gate.data(), n * f);
    ATOMSERVE_RETURN_IF_ERROR(RowsInput(gate.data(), layer, ActivationSite::kMlpHidden, n, f, &hidden));
  }
  return Apply(L.down, hidden, n, f, out, /*accumulate=*/true);
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
  cpu::Embed(weights_.embed.data.data(), ids.data(), x.data(), n, h);
  SiteInput in;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    ATOMSERVE_RETURN_IF_ERROR(NormInput(x.data(), L.input_norm, l, ActivationSite::kAttnIn, n, normed.data(), &in));
    ATOMSERVE_RETURN_IF_ERROR(AttentionBlock(l, in, x.data(), positions, cache, n));
    ATOMSERVE_RETURN_IF_ERROR(NormInput(x.data(), L.post_norm, l, ActivationSite::kMlpIn, n, normed.data(), &in));
    ATOMSERVE_RETURN_IF_ERROR(MlpBlock(l, in, x.data(), n));
  }
  ATOMSERVE_RETURN_IF_ERROR(cache.SetLength(start + n));

  const int64_t rows = all_logits ? n : 1;
  const float* last = x.data() + (n - rows) * h;
  cpu::RmsNorm(last, weights_.final_norm.data.data(), normed.data(), rows, h, c.rms_norm_eps);
  const HostTensor& head = c.tie_word_embeddings ? weights_.embed : weights_.lm_head;
  logits->resize(rows * c.vocab_size);
  cpu::Linear(normed.data(), head.data.data(), logits->data(), rows, c.vocab_size, h, &ThreadPool::Default());
  return absl::OkStatus();
}

}  // namespace atomserve

namespace atomserve {

absl::Status LlamaModel::PagedAttentionBlock(int64_t layer, const SiteInput& in, float* out, const int32_t* positions,
                                             const int32_t* slots, const cpu::PagedAttentionBatch& batch,
                                             const cpu::PagedKvCache& cache, int64_t n) const {
  const LayerWeights& L = weights_.layers[layer];
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, hd = c.head_dim;
  const int64_t q_out = c.num_heads * hd, kv_out = c.num_kv_heads * hd;
  ThreadPool* pool = &ThreadPool::Default();
  std::vector<float> q(n * q_out), k(n * kv_out), v(n * kv_out), attn(n * q_out);
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.q, in, n, h, q.data(), false));
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.k, in, n, h, k.data(), false));
  ATOMSERVE_RETURN_IF_ERROR(Apply(L.v, in, n, h, v.data(), false));
  const bool pre_rope = kv_ == KvPrecision::kInt4PreRope;
  cpu::ApplyRope(q.data(), positions, n, c.num_heads, hd, rope_);
  if (!pre_rope) cpu::ApplyRope(k.data(), positions, n, c.num_kv_heads, hd, rope_);
  ATOMSERVE_RETURN_IF_ERROR(cpu::WritePagedKv(cache, layer, slots, n, k.data(), v.data(), pool));
  ATOMSERVE_RETURN_IF_ERROR(cpu::PagedAttention(q.data(), cache, layer, batch, c.num_heads,
                                                1.0f / std::sqrt(static_cast<float>(hd)), attn.data(), pool,
                                                pre_rope ? &rope_ : nullptr));
  SiteInput o_in;
  ATOMSERVE_RETURN_IF_ERROR(RowsInput(attn.data(), layer, ActivationSite::kAttnOut, n, q_out, &o_in));
  return Apply(L.o, o_in, n, q_out, out, /*accumulate=*/true);
}

absl::Status LlamaModel::ForwardBatch(const BatchStep& step, kvstore::KvManager& kv,
                                      std::vector<float>* logits) const {
  const ModelConfig& c = config_;
  const int64_t n = step.num_tokens();
  if (n == 0 || step.seqs.empty()) return absl::InvalidArgumentError("ForwardBatch: no tokens");
  const kvstore::PageLayout& layout = kv.layout();
  if (layout.num_layers != c.num_layers || layout.num_kv_heads != c.num_kv_heads || layout.head_dim != c.head_dim)
    return absl::InvalidArgumentError("ForwardBatch: the KV pool's geometry does not match the model");
  for (int32_t id : step.ids) {
    if (id < 0 || id >= c.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
  }
  const int64_t num_seqs = static_cast<int64_t>(step.seqs.size());
  std::vector<int32_t> q_indptr(num_seqs + 1, 0), positions(n), slots(n);
  std::vector<kvstore::SeqId> ids(num_seqs);
  std::vector<int64_t> logit_rows;
  int64_t row = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const BatchSeq& s = step.seqs[i];
    for (int64_t j = 0; j < i; ++j) {
      if (ids[j] == s.seq) return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: sequence ", s.seq, " twice"));
    }
    ids[i] = s.seq;
    if (s.count < 1 || row + s.count > n)
      return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: bad chunk of ", s.count, " tokens"));
    ATOMSERVE_ASSIGN_OR_RETURN(kvstore::SequenceView view, kv.sequence(s.seq));
    if (view.num_computed != s.start || s.start + s.count > static_cast<int64_t>(view.tokens.size()))
      return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: sequence ", s.seq, " chunk [", s.start, ", ",
                                                     s.start + s.count, ") but ", view.num_computed,
                                                     " computed of ", view.tokens.size()));
    if (s.start + s.count > c.max_position)
      return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: position ", s.start + s.count - 1,
                                                     " beyond max_position ", c.max_position));
    for (int64_t t = 0; t < s.count; ++t) positions[row + t] = static_cast<int32_t>(s.start + t);
    ATOMSERVE_RETURN_IF_ERROR(kv.GetSlots(s.seq, s.start, s.count, slots.data() + row));
    row += s.count;
    q_indptr[i + 1] = static_cast<int32_t>(row);
    if (s.want_logits) logit_rows.push_back(row - 1);
  }
  if (row != n) return absl::InvalidArgumentError("ForwardBatch: chunk counts do not add up to the ids");
  std::vector<int32_t> page_indptr, page_ids;
  ATOMSERVE_RETURN_IF_ERROR(kv.BlockTablesCsr(ids, &page_indptr, &page_ids));
  cpu::PagedAttentionBatch batch;
  batch.num_seqs = num_seqs;
  batch.q_indptr = q_indptr.data();
  batch.q_pos = positions.data();
  batch.page_indptr = page_indptr.data();
  batch.page_ids = page_ids.data();
  const cpu::PagedKvCache cache = kv.paged_kv();

  const int64_t h = c.hidden_size;
  std::vector<float> x(n * h), normed(n * h);
  cpu::Embed(weights_.embed.data.data(), step.ids.data(), x.data(), n, h);
  SiteInput in;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    ATOMSERVE_RETURN_IF_ERROR(NormInput(x.data(), L.input_norm, l, ActivationSite::kAttnIn, n, normed.data(), &in));
    ATOMSERVE_RETURN_IF_ERROR(
        PagedAttentionBlock(l, in, x.data(), positions.data(), slots.data(), batch, cache, n));
    ATOMSERVE_RETURN_IF_ERROR(NormInput(x.data(), L.post_norm, l, ActivationSite::kMlpIn, n, normed.data(), &in));
    ATOMSERVE_RETURN_IF_ERROR(MlpBlock(l, in, x.data(), n));
  }
  for (const BatchSeq& s : step.seqs) ATOMSERVE_RETURN_IF_ERROR(kv.Commit(s.seq, s.count));

  const int64_t rows = static_cast<int64_t>(logit_rows.size());
  logits->resize(rows * c.vocab_size);
  if (rows == 0) return absl::OkStatus();
  std::vector<float> last(rows * h);
  for (int64_t r = 0; r < rows; ++r)
    std::copy(x.data() + logit_rows[r] * h, x.data() + (logit_rows[r] + 1) * h, last.data() + r * h);
  cpu::RmsNorm(last.data(), weights_.final_norm.data.data(), normed.data(), rows, h, c.rms_norm_eps);
  const HostTensor& head = c.tie_word_embeddings ? weights_.embed : weights_.lm_head;
  cpu::Linear(normed.data(), head.data.data(), logits->data(), rows, c.vocab_size, h, &ThreadPool::Default());
  return absl::OkStatus();
}

}  // namespace atomserve
