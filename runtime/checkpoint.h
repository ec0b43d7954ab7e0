// An in-memory model checkpoint: config, float32 weights, tokenizer data.
//
// Both loaders (GGUF, HF safetensors) produce this one form, so the model code
// never sees file formats. Weights are dequantized to float32 on load and use
// the Hugging Face Llama tensor names and layouts:
//
//   model.embed_tokens.weight                 [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight   [hidden]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight   [out, in]
//   model.layers.{i}.post_attention_layernorm.weight   [hidden]
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight    [out, in]
//   model.norm.weight                         [hidden]
//   lm_head.weight                            [vocab, hidden] (absent when tied)
//
// Shapes are row-major, outermost first (PyTorch order). q_proj/k_proj rows are
// in the HF order, which pairs dimension d with d + head_dim/2 for RoPE
// ("rotate half"); the GGUF loader undoes llama.cpp's interleaving permutation.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/progress.h"
#include "runtime/model_config.h"

namespace atomserve {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Token types as in GGUF's tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything needed to build a Tokenizer, independent of the file format.
struct TokenizerSpec {
  std::string model = "gpt2";  // only byte-level BPE ("gpt2") is supported
  // Pre-tokenizer family: "gpt2", "smollm" (digits split one by one, then
  // gpt2), "llama3". Loaders map GGUF's tokenizer.ggml.pre and tokenizer.json's
  // pre_tokenizer section onto these names.
  std::string pre = "gpt2";
  std::vector<std::string> tokens;      // id -> token string (byte-level alphabet)
  std::vector<TokenType> token_types;   // same length as tokens
  std::vector<std::string> merges;      // "a b", highest priority first
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  std::vector<int32_t> extra_eos_ids;   // e.g. <|eot_id|>, <|im_end|>
  bool add_bos = false;
  std::string chat_template;            // Jinja source, when the checkpoint has one
};

struct Checkpoint {
  std::string path;     // file or directory it was loaded from
  std::string format;   // "gguf" or "safetensors"
  ModelConfig config;
  std::map<std::string, HostTensor> tensors;
  TokenizerSpec tokenizer;

  // Returns the tensor or kNotFound naming it; checks the expected shape when
  // `shape` is non-empty (kInvalidArgument on mismatch, naming both shapes).
  absl::StatusOr<const HostTensor*> Get(const std::string& name,
                                        const std::vector<int64_t>& shape = {}) const;
};

// Loads a GGUF v2/v3 file. Supported tensor types: F32, F16, BF16, Q4_0,
// Q4_1, Q8_0 (dequantized to float32). Errors: kNotFound (no file),
// kDataLoss (bad magic, truncated, offsets outside the file),
// kInvalidArgument (unknown dtype, shape mismatch, unsupported architecture).
absl::StatusOr<Checkpoint> LoadGguf(const std::string& path, const ProgressFn& progress = nullptr);

// Loads a Hugging Face model directory: config.json, *.safetensors (single
// file or sharded with model.safetensors.index.json), tokenizer.json and,
// when present, tokenizer_config.json (chat template, bos/eos). Dtypes: F32,
// F16, BF16. Same error codes as LoadGguf.
absl::StatusOr<Checkpoint> LoadSafetensors(const std::string& dir, const ProgressFn& progress = nullptr);

// Dispatches on the path: a directory -> safetensors, *.gguf -> GGUF.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path, const ProgressFn& progress = nullptr);

}  // namespace atomserve
