// The quantized checkpoint file (".atom"): a W4A4 model written once by
// `atomserve quantize` and loaded at every start instead of re-quantizing.
//
// Layout (all integers little-endian):
//   offset 0   magic         8 bytes  "ATOMW4A4"
//          8   version       u32      kAtomFormatVersion; a larger one is
//                                     rejected (written by a newer atomserve)
//         12   flags         u32      0
//         16   header_bytes  u64
//         24   payload_bytes u64
//         32   checksum      u64      FNV-1a 64 over header, padding and
//                                     payload bytes (everything after offset 40)
//         40   header        JSON (UTF-8), header_bytes long
//              zero padding to a multiple of 64
//              payload       payload_bytes; tensors at 64-byte aligned offsets
//                            relative to the payload start
//   The file ends exactly there.
//
// Header JSON: {"format": "atomserve-w4a4", "version", "recipe" {group_size,
// keeper, weight_clip, act_clip, gptq, gptq_damp, gptq_block}, "config"
// (ModelConfig), "tokenizer" (TokenizerSpec scalars and chat template),
// "source" {file, bytes, tensors_fnv1a64}, "calibration" {file, file_bytes,
// file_fnv1a64, tokens, sequences, seq_len}, "quantize_seconds", "tensors":
// [{name, dtype, shape, offset, bytes}]}. dtypes: f32, i32, u16, u8, i8, and
// str (shape [count]; each string a u32 length then its bytes).
//
// Tensors: the fp32 ones under their HF names (embed_tokens, norms, lm_head
// when untied); each W4A4 linear "model.layers.{i}.self_attn.q_proj" as
//   <name>.packed [rows, packed_row_bytes] u8   <name>.scales [rows, G] u16
//   <name>.keeper_codes [rows, keeper] i8       <name>.keeper_scales [rows] u16
//   (the last two only when keeper > 0; layouts as in w4a4_format.h)
// site perms "model.layers.{i}.{attn_in,attn_out,mlp_in}.perm" [k] i32; and
// tokenizer.tokens / tokenizer.merges (str), tokenizer.token_types and
// tokenizer.extra_eos_ids (i32).
//
// Loading maps the file and bounds-checks every read (ByteReader). Errors
// name the file: kNotFound (no file); kDataLoss for a bad magic, truncation,
// trailing bytes, a checksum mismatch ("corrupt"), a malformed header or
// tensor directory; kFailedPrecondition for a newer format version;
// kInvalidArgument for tensors that do not fit the config and recipe, or a
// recipe other than the one the caller expects.
//
// Thread safety: the functions are independent and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/quant/w4a4_format.h"
#include "runtime/checkpoint.h"
#include "runtime/llama_model.h"

namespace atomserve {

inline constexpr char kAtomMagic[8] = {'A', 'T', 'O', 'M', 'W', '4', 'A', '4'};
inline constexpr uint32_t kAtomFormatVersion = 1;
inline constexpr uint64_t kAtomPreludeBytes = 40;
inline constexpr uint64_t kFnv1a64Offset = 0xcbf29ce484222325ull;

// 64-bit FNV-1a; pass a previous result as `seed` to continue a hash.
uint64_t Fnv1a64(const void* data, size_t size, uint64_t seed = kFnv1a64Offset);

// Where the fp32 weights came from.
struct AtomSource {
  std::string file;              // base name of the model path
  uint64_t bytes = 0;            // its size (a directory: sum of its files)
  uint64_t tensors_fnv1a64 = 0;  // HashModelWeights of the fp32 weights
};

struct AtomCalibrationInfo {
  std::string file;  // base name of the calibration text
  uint64_t file_bytes = 0;
  uint64_t file_fnv1a64 = 0;
  int64_t tokens = 0;
  int64_t sequences = 0;
  int64_t seq_len = 0;
};

struct AtomCheckpoint {
  std::string path;  // the file it was loaded from (empty when built)
  ModelConfig config;
  TokenizerSpec tokenizer;
  quant::QuantRecipe recipe;
  ModelWeights weights;  // W4A4 (ValidateModelWeights with recipe)
  AtomSource source;
  AtomCalibrationInfo calibration;
  double quantize_seconds = 0.0;
};

// FNV-1a 64 over every tensor of fp32 weights (names, shapes and values, in
// model order): the source identity recorded in the header.
uint64_t HashModelWeights(const ModelWeights& weights);

// Size in bytes of a file, or of the regular files in a directory.
absl::StatusOr<uint64_t> PathBytes(const std::string& path);

// Writes path + ".tmp" and renames it over path. Errors: kInvalidArgument
// when the weights do not fit config and recipe; kInternal on I/O errors.
absl::Status SaveAtomCheckpoint(const AtomCheckpoint& checkpoint, const std::string& path);

struct AtomLoadOptions {
  // When set, the file's recipe must equal it (kInvalidArgument otherwise).
  std::optional<quant::QuantRecipe> expect_recipe;
};
absl::StatusOr<AtomCheckpoint> LoadAtomCheckpoint(const std::string& path, const AtomLoadOptions& options = {});

// True when the file starts with kAtomMagic (false for directories and
// shorter files). Errors: kNotFound when path does not exist.
absl::StatusOr<bool> IsAtomCheckpoint(const std::string& path);

// "keeper=128 weight_clip=0.85 act_clip=0.9 gptq=on damp=0.01 block=128".
std::string RecipeString(const quant::QuantRecipe& recipe);

}  // namespace atomserve
