// `atomserve info`: print a checkpoint's configuration and tokenizer facts.
#include <cstdio>

#include "cli/commands.h"
#include "runtime/atom_checkpoint.h"
#include "runtime/checkpoint.h"
#include "runtime/model_path.h"

namespace atomserve::cli {
namespace {

// An Atom W4A4 checkpoint: its recipe, source and calibration.
int PrintAtomInfo(const std::string& path) {
  auto atom = LoadAtomCheckpoint(path);
  if (!atom.ok()) return Fail(atom.status());
  const ModelConfig& c = atom->config;
  const quant::QuantRecipe& r = atom->recipe;
  std::printf(
      "path: %s\nformat: atom (W4A4)\nname: %s\nlayers: %lld\nhidden: %lld\nheads: %lld\nkv_heads: %lld\n"
      "vocab: %lld\nrecipe: group %d, keeper %d, weight_clip %.3g, act_clip %.3g, %s\n"
      "source: %s (%llu bytes, weights fnv1a64 %016llx)\ncalibration: %s, %lld tokens (%lld x %lld)\n",
      path.c_str(), c.name.c_str(), static_cast<long long>(c.num_layers), static_cast<long long>(c.hidden_size),
      static_cast<long long>(c.num_heads), static_cast<long long>(c.num_kv_heads),
      static_cast<long long>(c.vocab_size), r.group_size, r.keeper, r.weight_clip, r.act_clip,
      r.gptq ? "GPTQ" : "RTN", atom->source.file.c_str(), static_cast<unsigned long long>(atom->source.bytes),
      static_cast<unsigned long long>(atom->source.tensors_fnv1a64), atom->calibration.file.c_str(),
      static_cast<long long>(atom->calibration.tokens), static_cast<long long>(atom->calibration.sequences),
      static_cast<long long>(atom->calibration.seq_len));
  return 0;
}

int RunInfo(const ParsedArgs& args) {
  absl::StatusOr<std::string> path = args.Has("model") ? args.Get("model") : DefaultModelPath();
  if (!path.ok()) return Fail(path.status());
  auto is_atom = IsAtomCheckpoint(*path);
  if (is_atom.ok() && *is_atom) return PrintAtomInfo(*path);
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
            "Loads a checkpoint (GGUF, safetensors directory or Atom .atom file) and prints its\n"
            "architecture, sizes and tokenizer facts (for .atom: the quantization recipe too).");
  c.Option({"model", "PATH", "GGUF file, safetensors directory or .atom file (default: SmolLM2-135M-Instruct)"});
  return {std::move(c), &RunInfo};
}

}  // namespace atomserve::cli
