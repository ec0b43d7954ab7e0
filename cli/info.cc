// `atomserve info`: print a checkpoint's configuration and tokenizer facts.
#include <cstdio>

#include "cli/commands.h"
#include "runtime/checkpoint.h"
#include "runtime/model_path.h"

namespace atomserve::cli {
namespace {

int RunInfo(const ParsedArgs& args) {
  absl::StatusOr<std::string> path = args.Has("model") ? args.Get("model") : DefaultModelPath();
  if (!path.ok()) return Fail(path.status());
  auto ckpt = LoadCheckpoint(*path);
  if (!ckpt.ok()) return Fail(ckpt.status());
  const ModelConfig& c = ckpt->config;
  int64_t params = 0;
  for (const auto& [name, t] : ckpt->tensors) params += t.numel();
  std::printf(
      "path: %s\nformat: %s\nname: %s\nparameters: %lld\nlayers: %lld\nhidden: %lld\n"
      "intermediate: %lld\nheads: %lld\nkv_heads: %lld\nhead_dim: %lld\nvocab: %lld\n"
      "context: %lld\nrope_theta: %g\nrms_norm_eps: %g\ntied_embeddings: %s\n"
      "tokenizer: %s/%s, %zu tokens, %zu merges, bos %d, eos %d\nchat_template: %s\n",
      ckpt->path.c_str(), ckpt->format.c_str(), c.name.c_str(), static_cast<long long>(params),
      static_cast<long long>(c.num_layers), static_cast<long long>(c.hidden_size),
      static_cast<long long>(c.intermediate_size), static_cast<long long>(c.num_heads),
      static_cast<long long>(c.num_kv_heads), static_cast<long long>(c.head_dim),
      static_cast<long long>(c.vocab_size), static_cast<long long>(c.max_position), c.rope_theta,
      c.rms_norm_eps, c.tie_word_embeddings ? "yes" : "no", ckpt->tokenizer.model.c_str(),
      ckpt->tokenizer.pre.c_str(), ckpt->tokenizer.tokens.size(), ckpt->tokenizer.merges.size(),
      ckpt->tokenizer.bos_id, ckpt->tokenizer.eos_id, ckpt->tokenizer.chat_template.empty() ? "none" : "yes");
  return 0;
}

}  // namespace

Subcommand InfoCommand() {
  Command c("info", "describe a model checkpoint",
            "Loads a checkpoint and prints its architecture, sizes and tokenizer facts.");
  c.Option({"model", "PATH", "GGUF file or safetensors directory (default: SmolLM2-135M-Instruct)"});
  return {std::move(c), &RunInfo};
}

}  // namespace atomserve::cli
