// Checkpoint accessors, the format dispatcher and the tensor-shape helpers
// both loaders share.
#include "runtime/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "runtime/gguf_internal.h"

namespace atomserve {
namespace loader_internal {

std::map<std::string, std::vector<int64_t>> ExpectedTensorShapes(const ModelConfig& c) {
  const int64_t q_out = c.num_heads * c.head_dim;
  const int64_t kv_out = c.num_kv_heads * c.head_dim;
  std::map<std::string, std::vector<int64_t>> shapes;
  shapes["model.embed_tokens.weight"] = {c.vocab_size, c.hidden_size};
  shapes["model.norm.weight"] = {c.hidden_size};
  if (!c.tie_word_embeddings) shapes["lm_head.weight"] = {c.vocab_size, c.hidden_size};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    shapes[p + "input_layernorm.weight"] = {c.hidden_size};
    shapes[p + "post_attention_layernorm.weight"] = {c.hidden_size};
    shapes[p + "self_attn.q_proj.weight"] = {q_out, c.hidden_size};
    shapes[p + "self_attn.k_proj.weight"] = {kv_out, c.hidden_size};
    shapes[p + "self_attn.v_proj.weight"] = {kv_out, c.hidden_size};
    shapes[p + "self_attn.o_proj.weight"] = {c.hidden_size, q_out};
    shapes[p + "mlp.gate_proj.weight"] = {c.intermediate_size, c.hidden_size};
    shapes[p + "mlp.up_proj.weight"] = {c.intermediate_size, c.hidden_size};
    shapes[p + "mlp.down_proj.weight"] = {c.hidden_size, c.intermediate_size};
  }
  return shapes;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckTensorShape(const std::string& source, const std::string& name,
                              const std::vector<int64_t>& got, const std::vector<int64_t>& expected) {
  if (got == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(source, ": tensor '", name, "' has shape ",
                                                 ShapeToString(got), ", expected ",
                                                 ShapeToString(expected)));
}

int64_t CheckedNumel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

}  // namespace loader_internal

absl::StatusOr<const HostTensor*> Checkpoint::Get(const std::string& name,
                                                  const std::vector<int64_t>& shape) const {
  auto it = tensors.find(name);
  if (it == tensors.end())
    return absl::NotFoundError(absl::StrCat(path, ": no tensor '", name, "'"));
  if (!shape.empty())
    ATOMSERVE_RETURN_IF_ERROR(loader_internal::CheckTensorShape(path, name, it->second.shape, shape));
  return &it->second;
}

namespace {

// True when the file starts with the GGUF magic, for files without the
// .gguf extension.
bool HasGgufMagic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string(magic, 4) == "GGUF";
}

}  // namespace

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path, const ProgressFn& progress) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st))
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  if (std::filesystem::is_directory(st)) return LoadSafetensors(path, progress);
  const bool gguf_name = path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
  if (gguf_name || HasGgufMagic(path)) return LoadGguf(path, progress);
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": not a GGUF file (*.gguf) or a model directory (safetensors)"));
}

}  // namespace atomserve
