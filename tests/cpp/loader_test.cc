// Checkpoint loader tests: synthetic GGUF and safetensors files written byte
// by byte here (a tiny 2-layer llama), valid and corrupted, plus the real
// SmolLM2 GGUF when it is available.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/checkpoint.h"
#include "runtime/dequant.h"
#include "runtime/gguf_internal.h"
#include "runtime/model_config.h"

namespace atomserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ------------------------------------------------------------ byte helpers

template <typename T>
std::string Bytes(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}

std::string Str(const std::string& s) { return Bytes<uint64_t>(s.size()) + s; }

// Float -> IEEE half for values exactly representable as normal halves (or 0).
uint16_t ToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  if ((bits & 0x7fffffffu) == 0) return static_cast<uint16_t>(sign);
  const int32_t exp = static_cast<int32_t>((bits >> 23) & 0xff) - 127 + 15;
  EXPECT_TRUE(exp > 0 && exp < 31 && (bits & 0x1fffu) == 0) << f << " is not an exact half";
  return static_cast<uint16_t>(sign | (exp << 10) | ((bits >> 13) & 0x3ffu));
}

uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  EXPECT_EQ(bits & 0xffffu, 0u) << f << " is not an exact bfloat16";
  return static_cast<uint16_t>(bits >> 16);
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// ------------------------------------------------------------ tensor data

// Encoded tensor bytes plus the float values they decode to (file order).
struct Encoded {
  std::string bytes;
  std::vector<float> values;
};

// Small multiples of 1/8 are exact in f32, f16 and bf16.
float Pattern(int64_t i, int seed) { return static_cast<float>((i * 7 + seed) % 23 - 11) * 0.125f; }

// Block scales and offsets, also exact halves.
float BlockD(int64_t b) { return 0.5f + static_cast<float>(b % 3) * 0.25f; }
float BlockM(int64_t b) { return -1.0f - static_cast<float>(b % 2) * 0.5f; }

Encoded Encode(GgmlType type, int64_t n, int seed) {
  Encoded e;
  const int64_t blocks = n / 32;
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const float v = Pattern(i, seed);
        e.values.push_back(v);
        if (type == GgmlType::kF32) e.bytes += Bytes(v);
        if (type == GgmlType::kF16) e.bytes += Bytes(ToHalf(v));
        if (type == GgmlType::kBF16) e.bytes += Bytes(ToBf16(v));
      }
      break;
    case GgmlType::kQ8_0:
      for (int64_t b = 0; b < blocks; ++b) {
        e.bytes += Bytes(ToHalf(BlockD(b)));
        for (int j = 0; j < 32; ++j) {
          const int8_t q = static_cast<int8_t>((j * 5 + b + seed) % 255 - 127);
          e.bytes += Bytes(q);
          e.values.push_back(static_cast<float>(q) * BlockD(b));
        }
      }
      break;
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1: {
      const bool q41 = type == GgmlType::kQ4_1;
      for (int64_t b = 0; b < blocks; ++b) {
        int code[32];
        for (int j = 0; j < 32; ++j) code[j] = static_cast<int>((j * 3 + b + seed) % 16);
        e.bytes += Bytes(ToHalf(BlockD(b)));
        if (q41) e.bytes += Bytes(ToHalf(BlockM(b)));
        // Byte k holds element k (low nibble) and element k + 16 (high).
        for (int k = 0; k < 16; ++k) e.bytes += static_cast<char>(code[k] | (code[k + 16] << 4));
        for (int j = 0; j < 32; ++j)
          e.values.push_back(q41 ? code[j] * BlockD(b) + BlockM(b) : (code[j] - 8) * BlockD(b));
      }
      break;
    }
  }
  return e;
}

// HF row r of a head-permuted matrix lives in GGUF row h*hd + 2*j + t, where
// r = h*hd + t*hd/2 + j (llama.cpp interleaves the two RoPE halves).
std::vector<float> HfOrder(const std::vector<float>& file, int64_t rows, int64_t cols, int64_t n_head) {
  const int64_t hd = rows / n_head, half = hd / 2;
  std::vector<float> out(file.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = r / hd, t = (r % hd) / half, j = r % half;
    const int64_t src = h * hd + 2 * j + t;
    std::copy(file.begin() + src * cols, file.begin() + (src + 1) * cols, out.begin() + r * cols);
  }
  return out;
}

// ------------------------------------------------------------ tiny llama

constexpr int64_t kHidden = 32, kHeads = 2, kKvHeads = 1, kInter = 64, kLayers = 2;
constexpr int64_t kHeadDim = kHidden / kHeads;
const std::vector<std::string> kTokens = {"a", "b", "c", "ab", "Ġ", "d", "<|endoftext|>", "<|im_end|>"};
constexpr int64_t kVocab = 8;

struct TensorDef {
  std::string gguf_name;
  std::string hf_name;
  std::vector<int64_t> shape;  // HF row-major
  GgmlType type;
};

// Every tensor of the tiny model, with a mix of storage types.
std::vector<TensorDef> TinyTensors(bool tied) {
  std::vector<TensorDef> t = {
      {"token_embd.weight", "model.embed_tokens.weight", {kVocab, kHidden}, GgmlType::kQ8_0},
      {"output_norm.weight", "model.norm.weight", {kHidden}, GgmlType::kF32},
  };
  if (!tied) t.push_back({"output.weight", "lm_head.weight", {kVocab, kHidden}, GgmlType::kQ4_1});
  for (int l = 0; l < kLayers; ++l) {
    const bool q = l == 0;  // layer 0 quantized, layer 1 16-bit/32-bit floats
    auto add = [&](const char* g, const char* h, std::vector<int64_t> shape, GgmlType quant, GgmlType plain) {
      t.push_back({absl::StrCat("blk.", l, ".", g), absl::StrCat("model.layers.", l, ".", h), shape,
                   q ? quant : plain});
    };
    add("attn_norm.weight", "input_layernorm.weight", {kHidden}, GgmlType::kF32, GgmlType::kF32);
    add("attn_q.weight", "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}, GgmlType::kQ4_0, GgmlType::kF16);
    add("attn_k.weight", "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}, GgmlType::kQ4_1,
        GgmlType::kBF16);
    add("attn_v.weight", "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}, GgmlType::kF16, GgmlType::kF32);
    add("attn_output.weight", "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}, GgmlType::kBF16,
        GgmlType::kF16);
    add("ffn_norm.weight", "post_attention_layernorm.weight", {kHidden}, GgmlType::kF32, GgmlType::kF32);
    add("ffn_gate.weight", "mlp.gate_proj.weight", {kInter, kHidden}, GgmlType::kQ8_0, GgmlType::kBF16);
    add("ffn_up.weight", "mlp.up_proj.weight", {kInter, kHidden}, GgmlType::kQ4_1, GgmlType::kF32);
    add("ffn_down.weight", "mlp.down_proj.weight", {kHidden, kInter}, GgmlType::kQ4_0, GgmlType::kF16);
  }
  return t;
}

int64_t Numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// ------------------------------------------------------------ GGUF writer

using loader_internal::GgufValueType;

class GgufBuilder {
 public:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;  // fastest first
    uint32_t type;
    std::string bytes;
    std::optional<uint64_t> offset_override;  // default: packed, aligned
  };
  struct Built {
    std::string bytes;
    uint64_t data_offset;  // start of the tensor data section
  };

  void SetKv(const std::string& key, GgufValueType type, const std::string& value) {
    RemoveKv(key);
    kvs_.push_back({key, Bytes(static_cast<uint32_t>(type)) + value});
  }
  void RemoveKv(const std::string& key) {
    std::erase_if(kvs_, [&](const auto& kv) { return kv.first == key; });
  }
  void SetString(const std::string& key, const std::string& v) { SetKv(key, GgufValueType::kString, Str(v)); }
  void SetU32(const std::string& key, uint32_t v) { SetKv(key, GgufValueType::kUint32, Bytes(v)); }
  void SetF32(const std::string& key, float v) { SetKv(key, GgufValueType::kFloat32, Bytes(v)); }
  void SetBool(const std::string& key, bool v) { SetKv(key, GgufValueType::kBool, Bytes<uint8_t>(v)); }
  void SetStringArray(const std::string& key, const std::vector<std::string>& v) {
    std::string s = Bytes(static_cast<uint32_t>(GgufValueType::kString)) + Bytes<uint64_t>(v.size());
    for (const auto& x : v) s += Str(x);
    SetKv(key, GgufValueType::kArray, s);
  }
  void SetI32Array(const std::string& key, const std::vector<int32_t>& v) {
    std::string s = Bytes(static_cast<uint32_t>(GgufValueType::kInt32)) + Bytes<uint64_t>(v.size());
    for (int32_t x : v) s += Bytes(x);
    SetKv(key, GgufValueType::kArray, s);
  }
  void AddTensor(Tensor t) { tensors_.push_back(std::move(t)); }
  std::vector<Tensor>& tensors() { return tensors_; }
  void set_alignment(uint64_t a) { alignment_ = a; }

  Built Build(uint32_t version = 3) const {
    std::string out = "GGUF" + Bytes(version) + Bytes<uint64_t>(tensors_.size()) + Bytes<uint64_t>(kvs_.size());
    for (const auto& [key, value] : kvs_) out += Str(key) + value;
    std::vector<uint64_t> offsets;
    uint64_t data_size = 0;
    for (const Tensor& t : tensors_) {
      offsets.push_back(data_size);
      data_size = Align(data_size + t.bytes.size());
    }
    for (size_t k = 0; k < tensors_.size(); ++k) {
      const Tensor& t = tensors_[k];
      out += Str(t.name) + Bytes<uint32_t>(t.ne.size());
      for (uint64_t d : t.ne) out += Bytes(d);
      out += Bytes(t.type);
      out += Bytes<uint64_t>(t.offset_override.value_or(offsets[k]));
    }
    out.resize(Align(out.size()), '\0');
    const uint64_t data_offset = out.size();
    for (size_t k = 0; k < tensors_.size(); ++k) {
      out.resize(data_offset + offsets[k], '\0');
      out += tensors_[k].bytes;
    }
    return {out, data_offset};
  }

 private:
  uint64_t Align(uint64_t x) const { return (x + alignment_ - 1) / alignment_ * alignment_; }

  std::vector<std::pair<std::string, std::string>> kvs_;
  std::vector<Tensor> tensors_;
  uint64_t alignment_ = 32;
};

// A valid tiny llama GGUF plus the HF-order values each tensor must load as.
struct TinyGguf {
  GgufBuilder builder;
  std::map<std::string, std::vector<float>> expected;  // HF name -> values
  std::map<std::string, std::vector<int64_t>> shapes;
};

TinyGguf MakeTinyGguf(bool tied = true) {
  TinyGguf m;
  GgufBuilder& b = m.builder;
  b.SetString("general.architecture", "llama");
  b.SetString("general.name", "tiny");
  b.SetU32("llama.block_count", kLayers);
  b.SetU32("llama.context_length", 512);
  b.SetU32("llama.embedding_length", kHidden);
  b.SetU32("llama.feed_forward_length", kInter);
  b.SetU32("llama.attention.head_count", kHeads);
  b.SetU32("llama.attention.head_count_kv", kKvHeads);
  b.SetF32("llama.rope.freq_base", 50000.0f);
  b.SetF32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  b.SetU32("llama.rope.dimension_count", kHeadDim);
  b.SetString("tokenizer.ggml.model", "gpt2");
  b.SetString("tokenizer.ggml.pre", "smollm");
  b.SetStringArray("tokenizer.ggml.tokens", kTokens);
  b.SetI32Array("tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 1, 3, 3});
  b.SetStringArray("tokenizer.ggml.merges", {"a b"});
  b.SetU32("tokenizer.ggml.bos_token_id", 6);
  b.SetU32("tokenizer.ggml.eos_token_id", 7);
  b.SetU32("tokenizer.ggml.padding_token_id", 7);
  b.SetBool("tokenizer.ggml.add_bos_token", true);
  b.SetString("tokenizer.chat_template", "{{ messages }}");
  int seed = 0;
  for (const TensorDef& d : TinyTensors(tied)) {
    Encoded e = Encode(d.type, Numel(d.shape), ++seed);
    std::vector<uint64_t> ne(d.shape.rbegin(), d.shape.rend());
    if (absl::StrContains(d.gguf_name, "attn_q"))
      e.values = HfOrder(e.values, d.shape[0], d.shape[1], kHeads);
    if (absl::StrContains(d.gguf_name, "attn_k"))
      e.values = HfOrder(e.values, d.shape[0], d.shape[1], kKvHeads);
    m.expected[d.hf_name] = e.values;
    m.shapes[d.hf_name] = d.shape;
    b.AddTensor({d.gguf_name, ne, static_cast<uint32_t>(d.type), e.bytes, std::nullopt});
  }
  return m;
}

GgufBuilder::Tensor* FindTensor(GgufBuilder& b, const std::string& name) {
  for (auto& t : b.tensors())
    if (t.name == name) return &t;
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

// ------------------------------------------------------------ fixture

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / absl::StrCat("atomserve_loader_test_", getpid(), "_", counter++);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteGguf(const std::string& bytes, const std::string& name = "model.gguf") {
    WriteFile(dir_ / name, bytes);
    return (dir_ / name).string();
  }

  fs::path dir_;
};

void ExpectError(const absl::Status& st, absl::StatusCode code, const std::string& needle = "") {
  EXPECT_EQ(st.code(), code) << st;
  if (!needle.empty()) {
    EXPECT_TRUE(absl::StrContains(st.message(), needle)) << st;
  }
}

// ------------------------------------------------------------ dequant units

TEST(DequantTest, HalfAndBFloat16) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x83ff), -std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xc0a0), -5.0f);
  EXPECT_EQ(BFloat16ToFloat(0x3e20), 0.15625f);
}

TEST(DequantTest, Q4_0Block) {
  // d = 0.5; byte 0 = 0x9f: element 0 is 15 -> (15-8)*0.5 = 3.5, element 16
  // is 9 -> 0.5. Byte 1 = 0x08: element 1 -> 0, element 17 -> -4.
  std::string block = Bytes<uint16_t>(0x3800);
  block += '\x9f';
  block += '\x08';
  block += std::string(14, '\x00');  // all remaining -> (0-8)*0.5 = -4
  std::vector<float> out(32);
  Dequantize(GgmlType::kQ4_0, reinterpret_cast<const uint8_t*>(block.data()), 32, out.data());
  EXPECT_EQ(out[0], 3.5f);
  EXPECT_EQ(out[16], 0.5f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[17], -4.0f);
  EXPECT_EQ(out[2], -4.0f);
  EXPECT_EQ(out[31], -4.0f);
}

TEST(DequantTest, Q4_1Block) {
  // d = 0.25, m = -1; byte 0 = 0x4c: element 0 = 12*0.25-1 = 2, element 16 =
  // 4*0.25-1 = 0; zero bytes give m.
  std::string block = Bytes<uint16_t>(0x3400) + Bytes<uint16_t>(0xbc00);
  block += '\x4c';
  block += std::string(15, '\x00');
  std::vector<float> out(32);
  Dequantize(GgmlType::kQ4_1, reinterpret_cast<const uint8_t*>(block.data()), 32, out.data());
  EXPECT_EQ(out[0], 2.0f);
  EXPECT_EQ(out[16], 0.0f);
  EXPECT_EQ(out[1], -1.0f);
  EXPECT_EQ(out[31], -1.0f);
}

TEST(DequantTest, Q8_0Block) {
  // d = 1.5; q = -128, 127, 3, then zeros.
  std::string block = Bytes<uint16_t>(0x3e00);
  block += '\x80';
  block += '\x7f';
  block += '\x03';
  block += std::string(29, '\x00');
  std::vector<float> out(32);
  Dequantize(GgmlType::kQ8_0, reinterpret_cast<const uint8_t*>(block.data()), 32, out.data());
  EXPECT_EQ(out[0], -192.0f);
  EXPECT_EQ(out[1], 190.5f);
  EXPECT_EQ(out[2], 4.5f);
  EXPECT_EQ(out[3], 0.0f);
}

TEST(DequantTest, LargeInputsMatchThePatternOnEveryType) {
  // Big enough to take the parallel path.
  constexpr int64_t n = 32 * 20000;
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
                        GgmlType::kQ8_0}) {
    const Encoded e = Encode(type, n, 3);
    std::vector<float> out(n);
    Dequantize(type, reinterpret_cast<const uint8_t*>(e.bytes.data()), n, out.data());
    EXPECT_EQ(out, e.values) << FindGgmlType(static_cast<uint32_t>(type))->name;
  }
}

TEST(DequantTest, TypeTable) {
  EXPECT_EQ(FindGgmlType(2)->block_bytes, 18);
  EXPECT_EQ(FindGgmlType(3)->block_bytes, 20);
  EXPECT_EQ(FindGgmlType(8)->block_bytes, 34);
  EXPECT_EQ(FindGgmlType(12), nullptr);
  EXPECT_STREQ(GgmlTypeName(12), "Q4_K");
  EXPECT_STREQ(GgmlTypeName(4), "unknown");
  EXPECT_STREQ(GgmlTypeName(1000), "unknown");
}

TEST(DequantTest, UnpermuteRopeRows) {
  // One head, head_dim 4: GGUF rows (0,1,2,3) hold HF rows (0,2,1,3).
  std::vector<float> rows = {0, 2, 1, 3};
  UnpermuteRopeRows(rows.data(), 4, 1, 1);
  EXPECT_EQ(rows, (std::vector<float>{0, 1, 2, 3}));
  // Two heads of head_dim 4, two columns.
  std::vector<float> two = {0, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7};
  UnpermuteRopeRows(two.data(), 8, 2, 2);
  EXPECT_EQ(two, (std::vector<float>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7}));
}

// ------------------------------------------------------------ config

ModelConfig ValidConfig() {
  ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 576;
  c.intermediate_size = 1536;
  c.num_layers = 2;
  c.num_heads = 9;
  c.num_kv_heads = 3;
  return c;
}

TEST(ModelConfigTest, Validate) {
  EXPECT_TRUE(ValidConfig().Validate("config.json").ok());
  ModelConfig c = ValidConfig();
  c.num_kv_heads = 5;
  ExpectError(c.Validate("dir/config.json"), absl::StatusCode::kInvalidArgument,
              "config.json: num_key_value_heads=5 does not divide num_attention_heads=9");
  ExpectError(c.Validate("m.gguf"), absl::StatusCode::kInvalidArgument,
              "m.gguf: llama.attention.head_count_kv=5 does not divide llama.attention.head_count=9");
  c = ValidConfig();
  c.num_heads = 7;
  c.num_kv_heads = 7;
  ExpectError(c.Validate("config.json"), absl::StatusCode::kInvalidArgument,
              "num_attention_heads=7 does not divide hidden_size=576");
  c.head_dim = 64;  // explicit head_dim: hidden need not divide
  EXPECT_TRUE(c.Validate("config.json").ok());
  c.head_dim = 63;
  ExpectError(c.Validate("config.json"), absl::StatusCode::kInvalidArgument, "head_dim=63");
  c = ValidConfig();
  c.hidden_size = 0;
  ExpectError(c.Validate("config.json"), absl::StatusCode::kInvalidArgument, "hidden_size=0");
  c = ValidConfig();
  c.num_layers = -1;
  ExpectError(c.Validate("config.json"), absl::StatusCode::kInvalidArgument, "num_hidden_layers=-1");
  c = ValidConfig();
  c.vocab_size = int64_t{1} << 40;
  ExpectError(c.Validate("config.json"), absl::StatusCode::kInvalidArgument, "vocab_size");
  c = ValidConfig();
  c.rms_norm_eps = 0;
  ExpectError(c.Validate("config.json"), absl::StatusCode::kInvalidArgument, "rms_norm_eps");
  c = ValidConfig();
  c.rope_scaling.type = RopeScalingType::kLlama3;
  c.rope_scaling.high_freq_factor = 0.5f;
  ExpectError(c.Validate("config.json"), absl::StatusCode::kInvalidArgument, "high_freq_factor");
}

// ------------------------------------------------------------ GGUF: valid

void ExpectTinyTensors(const Checkpoint& ckpt, const TinyGguf& m) {
  EXPECT_EQ(ckpt.tensors.size(), m.expected.size());
  for (const auto& [name, values] : m.expected) {
    auto t = ckpt.Get(name, m.shapes.at(name));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->data, values) << name;
  }
}

TEST_F(LoaderTest, GgufLoadsConfigTokenizerAndTensors) {
  TinyGguf m = MakeTinyGguf();
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->format, "gguf");
  const ModelConfig& c = ckpt->config;
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.num_layers, kLayers);
  EXPECT_EQ(c.hidden_size, kHidden);
  EXPECT_EQ(c.intermediate_size, kInter);
  EXPECT_EQ(c.num_heads, kHeads);
  EXPECT_EQ(c.num_kv_heads, kKvHeads);
  EXPECT_EQ(c.head_dim, kHeadDim);
  EXPECT_EQ(c.vocab_size, kVocab);  // no llama.vocab_size: the token count
  EXPECT_EQ(c.max_position, 512);
  EXPECT_EQ(c.rope_theta, 50000.0f);
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_TRUE(c.tie_word_embeddings);
  const TokenizerSpec& tok = ckpt->tokenizer;
  EXPECT_EQ(tok.model, "gpt2");
  EXPECT_EQ(tok.pre, "smollm");
  EXPECT_EQ(tok.tokens, kTokens);
  ASSERT_EQ(tok.token_types.size(), kTokens.size());
  EXPECT_EQ(tok.token_types[0], TokenType::kNormal);
  EXPECT_EQ(tok.token_types[6], TokenType::kControl);
  EXPECT_EQ(tok.merges, (std::vector<std::string>{"a b"}));
  EXPECT_EQ(tok.bos_id, 6);
  EXPECT_EQ(tok.eos_id, 7);
  EXPECT_EQ(tok.pad_id, 7);
  EXPECT_EQ(tok.unk_id, -1);
  EXPECT_TRUE(tok.add_bos);
  EXPECT_EQ(tok.chat_template, "{{ messages }}");
  EXPECT_EQ(tok.extra_eos_ids, (std::vector<int32_t>{6}));  // <|endoftext|>; <|im_end|> is eos
  ExpectTinyTensors(*ckpt, m);
  EXPECT_EQ(ckpt->tensors.count("lm_head.weight"), 0u);
}

TEST_F(LoaderTest, GgufUndoesTheRopePermutation) {
  // Spot checks independent of HfOrder: with head_dim 16, HF row 1 is GGUF
  // row 2 and HF row 8 (second half, j = 0) is GGUF row 1; the kv head of
  // layer 1's k_proj is BF16.
  TinyGguf m = MakeTinyGguf();
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  for (const char* name : {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"}) {
    const HostTensor& t = ckpt->tensors.at(name);
    GgufBuilder::Tensor* raw = FindTensor(m.builder, absl::StrContains(name, "q_proj") ? "blk.1.attn_q.weight"
                                                                                        : "blk.1.attn_k.weight");
    ASSERT_NE(raw, nullptr);
    const bool bf16 = raw->type == static_cast<uint32_t>(GgmlType::kBF16);
    auto file_value = [&](int64_t row, int64_t col) {
      uint16_t h;
      std::memcpy(&h, raw->bytes.data() + 2 * (row * kHidden + col), 2);
      return bf16 ? BFloat16ToFloat(h) : HalfToFloat(h);
    };
    for (int64_t col = 0; col < kHidden; ++col) {
      EXPECT_EQ(t.data[0 * kHidden + col], file_value(0, col));
      EXPECT_EQ(t.data[1 * kHidden + col], file_value(2, col));
      EXPECT_EQ(t.data[8 * kHidden + col], file_value(1, col));
      EXPECT_EQ(t.data[15 * kHidden + col], file_value(15, col));
    }
  }
}

TEST_F(LoaderTest, GgufUntiedHasLmHead) {
  TinyGguf m = MakeTinyGguf(/*tied=*/false);
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE(ckpt->config.tie_word_embeddings);
  ExpectTinyTensors(*ckpt, m);
}

TEST_F(LoaderTest, GgufVersion2AndCustomAlignment) {
  TinyGguf m = MakeTinyGguf();
  m.builder.set_alignment(64);
  m.builder.SetU32("general.alignment", 64);
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build(/*version=*/2).bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectTinyTensors(*ckpt, m);
}

TEST_F(LoaderTest, GgufOptionalKeysAndDefaults) {
  TinyGguf m = MakeTinyGguf();
  m.builder.RemoveKv("llama.attention.head_count_kv");
  m.builder.RemoveKv("llama.rope.freq_base");
  m.builder.RemoveKv("llama.rope.dimension_count");
  m.builder.RemoveKv("tokenizer.ggml.pre");
  m.builder.SetU32("llama.vocab_size", kVocab);
  // With head_count_kv defaulting to head_count, k/v need 2 heads' rows.
  for (const char* n : {"blk.0.attn_k.weight", "blk.1.attn_k.weight", "blk.0.attn_v.weight", "blk.1.attn_v.weight"}) {
    GgufBuilder::Tensor* t = FindTensor(m.builder, n);
    t->ne = {kHidden, kHidden};
    t->type = static_cast<uint32_t>(GgmlType::kF32);
    t->bytes = Encode(GgmlType::kF32, kHidden * kHidden, 1).bytes;
  }
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->config.num_kv_heads, kHeads);
  EXPECT_EQ(ckpt->config.rope_theta, 10000.0f);
  EXPECT_EQ(ckpt->config.head_dim, kHeadDim);
  EXPECT_EQ(ckpt->tokenizer.pre, "gpt2");
}

TEST_F(LoaderTest, GgufPreTokenizerNames) {
  for (auto [pre, family] : {std::pair{"llama-bpe", "llama3"}, std::pair{"llama3", "llama3"},
                             std::pair{"gpt2", "gpt2"}, std::pair{"default", "gpt2"}}) {
    TinyGguf m = MakeTinyGguf();
    m.builder.SetString("tokenizer.ggml.pre", pre);
    auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes));
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ(ckpt->tokenizer.pre, family) << pre;
  }
  TinyGguf m = MakeTinyGguf();
  m.builder.SetString("tokenizer.ggml.pre", "qwen2");
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kInvalidArgument, "qwen2");
}

TEST_F(LoaderTest, GgufRopeScaling) {
  TinyGguf m = MakeTinyGguf();
  m.builder.SetString("llama.rope.scaling.type", "linear");
  m.builder.SetF32("llama.rope.scaling.factor", 4.0f);
  m.builder.SetU32("llama.rope.scaling.original_context_length", 128);
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->config.rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_EQ(ckpt->config.rope_scaling.factor, 4.0f);
  EXPECT_EQ(ckpt->config.rope_scaling.original_max_position, 128);
  m.builder.SetString("llama.rope.scaling.type", "yarn");
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kInvalidArgument, "yarn");
}

// llama.cpp's Llama-3.1 rope_freqs: divisors of each inverse frequency.
std::vector<float> Llama3RopeDivisors(float theta, float factor, double original) {
  std::vector<float> out;
  for (int64_t i = 0; i < kHeadDim / 2; ++i) {
    const double freq = 1.0 / std::pow(theta, 2.0 * i / kHeadDim);
    const double wavelen = 2 * M_PI / freq;
    const double low_wavelen = original / 1.0, high_wavelen = original / 4.0;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(factor);
    } else {
      const double smooth = (original / wavelen - 1.0) / (4.0 - 1.0);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

TEST_F(LoaderTest, GgufRopeFreqsTensorBecomesLlama3Scaling) {
  TinyGguf m = MakeTinyGguf();
  m.builder.SetU32("llama.rope.scaling.original_context_length", 64);
  std::vector<float> div = Llama3RopeDivisors(50000.0f, 8.0f, 64);
  ASSERT_GT(div.back(), 1.0f);  // the table exercises more than the identity
  std::string bytes;
  for (float d : div) bytes += Bytes(d);
  m.builder.AddTensor({"rope_freqs.weight", {kHeadDim / 2}, 0, bytes, std::nullopt});
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const RopeScaling& r = ckpt->config.rope_scaling;
  EXPECT_EQ(r.type, RopeScalingType::kLlama3);
  EXPECT_EQ(r.factor, 8.0f);
  EXPECT_EQ(r.low_freq_factor, 1.0f);
  EXPECT_EQ(r.high_freq_factor, 4.0f);
  EXPECT_EQ(r.original_max_position, 64);
  EXPECT_EQ(ckpt->tensors.count("rope_freqs.weight"), 0u);
  // Arbitrary per-frequency factors are refused rather than ignored.
  div[1] = 3.0f;
  bytes.clear();
  for (float d : div) bytes += Bytes(d);
  FindTensor(m.builder, "rope_freqs.weight")->bytes = bytes;
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kInvalidArgument,
              "rope_freqs");
}

TEST_F(LoaderTest, GgufNestedArraysAndAllValueTypes) {
  TinyGguf m = MakeTinyGguf();
  // [[1, 2], [3]] of int16, and one key per scalar type.
  std::string inner1 = Bytes<uint32_t>(3) + Bytes<uint64_t>(2) + Bytes<int16_t>(1) + Bytes<int16_t>(2);
  std::string inner2 = Bytes<uint32_t>(3) + Bytes<uint64_t>(1) + Bytes<int16_t>(3);
  m.builder.SetKv("test.nested", GgufValueType::kArray, Bytes<uint32_t>(9) + Bytes<uint64_t>(2) + inner1 + inner2);
  m.builder.SetKv("test.u8", GgufValueType::kUint8, Bytes<uint8_t>(200));
  m.builder.SetKv("test.i8", GgufValueType::kInt8, Bytes<int8_t>(-5));
  m.builder.SetKv("test.u16", GgufValueType::kUint16, Bytes<uint16_t>(60000));
  m.builder.SetKv("test.i64", GgufValueType::kInt64, Bytes<int64_t>(-1234567890123));
  m.builder.SetKv("test.u64", GgufValueType::kUint64, Bytes<uint64_t>(1ull << 40));
  m.builder.SetKv("test.f64", GgufValueType::kFloat64, Bytes<double>(0.25));
  m.builder.SetKv("test.empty", GgufValueType::kArray, Bytes<uint32_t>(8) + Bytes<uint64_t>(0));
  const std::string bytes = m.builder.Build().bytes;
  auto f = loader_internal::ParseGguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem");
  ASSERT_TRUE(f.ok()) << f.status();
  const auto& nested = f->metadata.at("test.nested");
  ASSERT_EQ(nested.type, GgufValueType::kArray);
  ASSERT_EQ(nested.elem_type, GgufValueType::kArray);
  ASSERT_EQ(nested.array.size(), 2u);
  ASSERT_EQ(nested.array[0].array.size(), 2u);
  EXPECT_EQ(nested.array[0].array[1].i, 2);
  EXPECT_EQ(nested.array[1].array[0].i, 3);
  EXPECT_EQ(f->metadata.at("test.u8").u, 200u);
  EXPECT_EQ(f->metadata.at("test.i8").i, -5);
  EXPECT_EQ(f->metadata.at("test.u16").u, 60000u);
  EXPECT_EQ(f->metadata.at("test.i64").i, -1234567890123);
  EXPECT_EQ(f->metadata.at("test.u64").u, 1ull << 40);
  EXPECT_EQ(f->metadata.at("test.f64").f, 0.25);
  EXPECT_TRUE(f->metadata.at("test.empty").array.empty());
  EXPECT_EQ(f->metadata.at("general.architecture").s, "llama");
  EXPECT_EQ(f->tensors.size(), TinyTensors(true).size());
  // The full load ignores keys it does not know.
  EXPECT_TRUE(LoadGguf(WriteGguf(bytes)).ok());
}

TEST_F(LoaderTest, GgufReportsProgress) {
  TinyGguf m = MakeTinyGguf();
  uint64_t last = 0, total = 0;
  int calls = 0;
  auto ckpt = LoadGguf(WriteGguf(m.builder.Build().bytes), [&](uint64_t done, uint64_t t, const std::string& what) {
    EXPECT_GE(done, last);
    EXPECT_FALSE(what.empty());
    last = done;
    total = t;
    ++calls;
  });
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(calls, static_cast<int>(m.expected.size()));
  EXPECT_EQ(last, total);
  EXPECT_GT(total, 0u);
}

// ------------------------------------------------------------ GGUF: errors

TEST_F(LoaderTest, GgufBadMagic) {
  std::string bytes = MakeTinyGguf().builder.Build().bytes;
  bytes[0] = 'X';
  ExpectError(LoadGguf(WriteGguf(bytes)).status(), absl::StatusCode::kDataLoss, "magic");
  ExpectError(LoadGguf(WriteGguf("")).status(), absl::StatusCode::kDataLoss);
  ExpectError(LoadGguf((dir_ / "absent.gguf").string()).status(), absl::StatusCode::kNotFound);
}

TEST_F(LoaderTest, GgufUnsupportedVersion) {
  ExpectError(LoadGguf(WriteGguf(MakeTinyGguf().builder.Build(1).bytes)).status(),
              absl::StatusCode::kInvalidArgument, "version 1");
  // A big-endian v3 file reads as version 0x03000000.
  ExpectError(LoadGguf(WriteGguf(MakeTinyGguf().builder.Build(0x03000000).bytes)).status(),
              absl::StatusCode::kInvalidArgument, "version");
}

TEST_F(LoaderTest, GgufTruncatedAnywhereIsAnError) {
  const GgufBuilder::Built built = MakeTinyGguf().builder.Build();
  const std::string path = (dir_ / "cut.gguf").string();
  std::vector<uint64_t> cuts;
  for (uint64_t c = 0; c <= built.data_offset; ++c) cuts.push_back(c);  // every header byte
  for (uint64_t c = built.data_offset + 1; c < built.bytes.size(); c += 37) cuts.push_back(c);
  cuts.push_back(built.bytes.size() - 1);
  for (uint64_t cut : cuts) {
    WriteFile(path, built.bytes.substr(0, cut));
    auto ckpt = LoadGguf(path);
    ASSERT_FALSE(ckpt.ok()) << "cut at " << cut;
    ASSERT_EQ(ckpt.status().code(), absl::StatusCode::kDataLoss) << "cut at " << cut << ": " << ckpt.status();
  }
}

// Random byte changes in the header must give a status (usually an error),
// never a crash, hang or out-of-bounds read (run under ASan to be sure).
TEST_F(LoaderTest, GgufRandomCorruptionNeverCrashes) {
  const GgufBuilder::Built built = MakeTinyGguf().builder.Build();
  const std::string path = (dir_ / "fuzz.gguf").string();
  std::mt19937 rng(1234);
  int loaded = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string bytes = built.bytes;
    for (int f = 1 + rng() % 4; f > 0; --f) {
      const size_t pos = rng() % built.data_offset;
      bytes[pos] = static_cast<char>(rng() % 3 == 0 ? 0xff : rng() % 256);
    }
    WriteFile(path, bytes);
    loaded += LoadGguf(path).ok();
  }
  EXPECT_LT(loaded, 1500);
}

TEST_F(LoaderTest, GgufUnknownTensorType) {
  TinyGguf m = MakeTinyGguf();
  FindTensor(m.builder, "blk.1.ffn_up.weight")->type = 12;  // Q4_K
  const absl::Status st = LoadGguf(WriteGguf(m.builder.Build().bytes)).status();
  ExpectError(st, absl::StatusCode::kInvalidArgument, "blk.1.ffn_up.weight");
  EXPECT_TRUE(absl::StrContains(st.message(), "Q4_K")) << st;
  FindTensor(m.builder, "blk.1.ffn_up.weight")->type = 977;
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kInvalidArgument, "977");
}

TEST_F(LoaderTest, GgufShapeMismatch) {
  TinyGguf m = MakeTinyGguf();
  GgufBuilder::Tensor* t = FindTensor(m.builder, "blk.1.ffn_norm.weight");
  t->ne = {kHidden - 1};
  t->bytes.resize((kHidden - 1) * 4);
  const absl::Status st = LoadGguf(WriteGguf(m.builder.Build().bytes)).status();
  ExpectError(st, absl::StatusCode::kInvalidArgument, "blk.1.ffn_norm.weight");
  EXPECT_TRUE(absl::StrContains(st.message(), "[31]") && absl::StrContains(st.message(), "[32]")) << st;
  // Transposed matrix.
  TinyGguf m2 = MakeTinyGguf();
  FindTensor(m2.builder, "blk.0.ffn_down.weight")->ne = {kHidden, kInter};
  ExpectError(LoadGguf(WriteGguf(m2.builder.Build().bytes)).status(), absl::StatusCode::kInvalidArgument,
              "ffn_down");
}

TEST_F(LoaderTest, GgufTensorOutsideTheFile) {
  TinyGguf m = MakeTinyGguf();
  FindTensor(m.builder, "blk.0.attn_v.weight")->offset_override = 1 << 20;
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss,
              "blk.0.attn_v.weight");
  // Offset + size wrapping around 2^64.
  FindTensor(m.builder, "blk.0.attn_v.weight")->offset_override = ~uint64_t{63};
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss);
  // Misaligned offset.
  FindTensor(m.builder, "blk.0.attn_v.weight")->offset_override = 4;
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "aligned");
}

TEST_F(LoaderTest, GgufHugeLengthsAndCounts) {
  {  // string length far beyond the file
    TinyGguf m = MakeTinyGguf();
    m.builder.SetKv("test.s", GgufValueType::kString, Bytes<uint64_t>(1ull << 62) + "abc");
    ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "length");
  }
  {  // array count beyond the remaining bytes
    TinyGguf m = MakeTinyGguf();
    m.builder.SetKv("test.a", GgufValueType::kArray, Bytes<uint32_t>(4) + Bytes<uint64_t>(~0ull));
    ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "count");
  }
  {  // one array of 5M one-byte elements: fits the file, exceeds the element cap
    TinyGguf m = MakeTinyGguf();
    m.builder.SetKv("test.big", GgufValueType::kArray,
                    Bytes<uint32_t>(0) + Bytes<uint64_t>(5u << 20) + std::string(5u << 20, '\x01'));
    ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "elements");
  }
  {  // array of arrays nested beyond the depth limit
    TinyGguf m = MakeTinyGguf();
    std::string v;
    for (int d = 0; d < 64; ++d) v += Bytes<uint32_t>(9) + Bytes<uint64_t>(1);
    v += Bytes<uint32_t>(4) + Bytes<uint64_t>(0);
    m.builder.SetKv("test.deep", GgufValueType::kArray, v);
    ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "nested");
  }
  {  // unknown value type
    TinyGguf m = MakeTinyGguf();
    m.builder.SetKv("test.x", static_cast<GgufValueType>(99), "");
    ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "type 99");
  }
  {  // tensor and key counts beyond the file
    std::string bytes = MakeTinyGguf().builder.Build().bytes;
    std::string huge = Bytes<uint64_t>(1ull << 60);
    bytes.replace(8, 8, huge);
    ExpectError(LoadGguf(WriteGguf(bytes)).status(), absl::StatusCode::kDataLoss);
    bytes = MakeTinyGguf().builder.Build().bytes;
    bytes.replace(16, 8, huge);
    ExpectError(LoadGguf(WriteGguf(bytes)).status(), absl::StatusCode::kDataLoss);
  }
}

TEST_F(LoaderTest, GgufBadDims) {
  for (int variant = 0; variant < 4; ++variant) {
    TinyGguf m = MakeTinyGguf();
    GgufBuilder::Tensor* t = FindTensor(m.builder, "blk.0.attn_norm.weight");
    std::string needle = "blk.0.attn_norm.weight";
    absl::StatusCode code = absl::StatusCode::kDataLoss;
    switch (variant) {
      case 0: t->ne = {kHidden, 1, 1, 1, 1}; break;        // n_dims 5
      case 1: t->ne = {kHidden, 0}; break;                 // zero dim
      case 2: t->ne = {1ull << 32, 1ull << 32}; break;     // product overflows
      case 3:                                              // row not a block multiple
        t->type = static_cast<uint32_t>(GgmlType::kQ8_0);
        t->ne = {kHidden + 1};
        break;
    }
    ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), code, needle);
  }
  // n_dims 0.
  TinyGguf m = MakeTinyGguf();
  FindTensor(m.builder, "output_norm.weight")->ne = {};
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "n_dims");
}

TEST_F(LoaderTest, GgufDuplicateTensorAndKey) {
  TinyGguf m = MakeTinyGguf();
  GgufBuilder::Tensor copy = *FindTensor(m.builder, "output_norm.weight");
  m.builder.AddTensor(copy);
  ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), absl::StatusCode::kDataLoss, "duplicate");
  // Two keys of equal length; rename the second into the first.
  TinyGguf m2 = MakeTinyGguf();
  m2.builder.SetString("general.nbme", "x");
  std::string bytes = m2.builder.Build().bytes;
  const std::string key = Str("general.nbme");
  bytes.replace(bytes.find(key), key.size(), Str("general.name"));
  ExpectError(LoadGguf(WriteGguf(bytes)).status(), absl::StatusCode::kDataLoss, "duplicate metadata key");
}

TEST_F(LoaderTest, GgufMetadataErrors) {
  struct Case {
    std::function<void(GgufBuilder&)> edit;
    absl::StatusCode code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](GgufBuilder& b) { b.SetString("general.architecture", "qwen2"); }, absl::StatusCode::kInvalidArgument,
       "qwen2"},
      {[](GgufBuilder& b) { b.RemoveKv("general.architecture"); }, absl::StatusCode::kInvalidArgument,
       "general.architecture"},
      {[](GgufBuilder& b) { b.SetString("tokenizer.ggml.model", "llama"); }, absl::StatusCode::kInvalidArgument,
       "tokenizer.ggml.model"},
      {[](GgufBuilder& b) { b.RemoveKv("tokenizer.ggml.tokens"); }, absl::StatusCode::kInvalidArgument,
       "tokenizer.ggml.tokens"},
      {[](GgufBuilder& b) { b.RemoveKv("llama.block_count"); }, absl::StatusCode::kInvalidArgument,
       "llama.block_count"},
      {[](GgufBuilder& b) { b.SetString("llama.embedding_length", "32"); }, absl::StatusCode::kInvalidArgument,
       "llama.embedding_length"},
      {[](GgufBuilder& b) { b.SetU32("llama.attention.head_count_kv", 3); }, absl::StatusCode::kInvalidArgument,
       "llama.attention.head_count_kv=3"},
      {[](GgufBuilder& b) { b.SetU32("llama.block_count", 0); }, absl::StatusCode::kInvalidArgument,
       "llama.block_count=0"},
      {[](GgufBuilder& b) { b.SetU32("tokenizer.ggml.eos_token_id", 8); }, absl::StatusCode::kInvalidArgument,
       "eos_token_id"},
      {[](GgufBuilder& b) { b.SetI32Array("tokenizer.ggml.token_type", {1, 1}); },
       absl::StatusCode::kInvalidArgument, "token_type"},
      {[](GgufBuilder& b) { b.SetU32("llama.vocab_size", 4); }, absl::StatusCode::kInvalidArgument,
       "llama.vocab_size"},
      {[](GgufBuilder& b) { b.SetU32("general.alignment", 24); }, absl::StatusCode::kDataLoss, "alignment"},
      // Wrong vocab: token_embd has 8 rows.
      {[](GgufBuilder& b) {
         b.SetStringArray("tokenizer.ggml.tokens", {"a", "b", "c", "ab", "Ġ", "d", "<|endoftext|>"});
         b.RemoveKv("tokenizer.ggml.token_type");
         b.SetU32("tokenizer.ggml.eos_token_id", 6);
         b.SetU32("tokenizer.ggml.padding_token_id", 6);
       },
       absl::StatusCode::kInvalidArgument, "token_embd.weight"},
      // A 3-layer config where the file has 2 layers.
      {[](GgufBuilder& b) { b.SetU32("llama.block_count", 3); }, absl::StatusCode::kNotFound, "model.layers.2."},
      {[](GgufBuilder& b) { b.SetU32("llama.block_count", 1); }, absl::StatusCode::kInvalidArgument,
       "unexpected tensor 'blk.1."},
      {[](GgufBuilder& b) {
         std::erase_if(b.tensors(), [](const auto& t) { return t.name == "blk.1.ffn_up.weight"; });
       },
       absl::StatusCode::kNotFound, "model.layers.1.mlp.up_proj.weight"},
      {[](GgufBuilder& b) { b.tensors()[3].name = "blk.0.attn_qkv.weight"; }, absl::StatusCode::kInvalidArgument,
       "attn_qkv"},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    TinyGguf m = MakeTinyGguf();
    cases[k].edit(m.builder);
    SCOPED_TRACE(absl::StrCat("case ", k));
    ExpectError(LoadGguf(WriteGguf(m.builder.Build().bytes)).status(), cases[k].code, cases[k].needle);
  }
}

// ------------------------------------------------------------ safetensors

struct StTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Serializes tensors into a .safetensors image; `edit` may tamper with the
// header JSON first.
std::string BuildSafetensors(const std::map<std::string, StTensor>& tensors,
                             const std::function<void(json&)>& edit = nullptr) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  if (edit) edit(header);
  const std::string text = header.dump();
  return Bytes<uint64_t>(text.size()) + text + data;
}

json TinyConfigJson(bool tied = true) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", kVocab},
          {"hidden_size", kHidden},
          {"intermediate_size", kInter},
          {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads},
          {"num_key_value_heads", kKvHeads},
          {"max_position_embeddings", 1024},
          {"rope_theta", 100000.0},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", tied},
          {"head_dim", nullptr},
          {"rope_scaling", nullptr},
          {"bos_token_id", 6},
          {"eos_token_id", 7}};
}

json TinyTokenizerJson() {
  json vocab = json::object();
  for (size_t i = 0; i < 6; ++i) vocab[kTokens[i]] = i;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"added_tokens",
           {{{"id", 6}, {"content", "<|endoftext|>"}, {"special", true}},
            {{"id", 7}, {"content", "<|im_end|>"}, {"special", true}}}}};
}

// Tiny model tensors in HF names: F32, F16 and BF16 in turn.
std::map<std::string, StTensor> TinySafetensors(bool tied, std::map<std::string, std::vector<float>>* expected) {
  std::map<std::string, StTensor> out;
  int k = 0;
  for (const TensorDef& d : TinyTensors(tied)) {
    const GgmlType types[] = {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16};
    const char* names[] = {"F32", "F16", "BF16"};
    const int which = k++ % 3;
    Encoded e = Encode(types[which], Numel(d.shape), k);
    (*expected)[d.hf_name] = e.values;
    out[d.hf_name] = {names[which], d.shape, e.bytes};
  }
  return out;
}

class SafetensorsTest : public LoaderTest {
 protected:
  void SetUp() override {
    LoaderTest::SetUp();
    tensors_ = TinySafetensors(true, &expected_);
    WriteFile(dir_ / "config.json", TinyConfigJson().dump());
    WriteFile(dir_ / "tokenizer.json", TinyTokenizerJson().dump());
    WriteFile(dir_ / "tokenizer_config.json",
              json({{"bos_token", "<|endoftext|>"}, {"eos_token", "<|im_end|>"}, {"chat_template", "T"},
                    {"add_bos_token", false}})
                  .dump());
    Write();
  }
  void Write(const std::function<void(json&)>& edit = nullptr) {
    WriteFile(dir_ / "model.safetensors", BuildSafetensors(tensors_, edit));
  }
  absl::Status Load() { return LoadSafetensors(dir_.string()).status(); }

  std::map<std::string, StTensor> tensors_;
  std::map<std::string, std::vector<float>> expected_;
};

TEST_F(SafetensorsTest, LoadsConfigTokenizerAndTensors) {
  auto ckpt = LoadSafetensors(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->format, "safetensors");
  const ModelConfig& c = ckpt->config;
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.hidden_size, kHidden);
  EXPECT_EQ(c.intermediate_size, kInter);
  EXPECT_EQ(c.num_layers, kLayers);
  EXPECT_EQ(c.num_heads, kHeads);
  EXPECT_EQ(c.num_kv_heads, kKvHeads);
  EXPECT_EQ(c.head_dim, kHeadDim);
  EXPECT_EQ(c.max_position, 1024);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(ckpt->tokenizer.tokens, kTokens);
  EXPECT_EQ(ckpt->tokenizer.bos_id, 6);
  EXPECT_EQ(ckpt->tokenizer.eos_id, 7);
  EXPECT_EQ(ckpt->tokenizer.chat_template, "T");
  EXPECT_EQ(ckpt->tokenizer.extra_eos_ids, (std::vector<int32_t>{6}));
  ASSERT_EQ(ckpt->tensors.size(), expected_.size());
  for (const auto& [name, values] : expected_) {
    auto t = ckpt->Get(name, tensors_.at(name).shape);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->data, values) << name;  // no permutation for HF files
  }
}

TEST_F(SafetensorsTest, UntiedShardedWithExtraTensors) {
  tensors_ = TinySafetensors(false, &expected_);
  json cfg = TinyConfigJson(false);
  cfg["eos_token_id"] = {7, 6};  // Llama-3.1 style list
  cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  WriteFile(dir_ / "config.json", cfg.dump());
  fs::remove(dir_ / "model.safetensors");
  fs::remove(dir_ / "tokenizer_config.json");
  // Split into two shards; shard 2 also carries a buffer the loader skips.
  std::map<std::string, StTensor> a, b;
  json weight_map = json::object();
  int k = 0;
  for (auto& [name, t] : tensors_) {
    const bool first = k++ % 2 == 0;
    (first ? a : b)[name] = t;
    weight_map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  b["model.layers.0.self_attn.rotary_emb.inv_freq"] = {"I64", {2}, std::string(16, '\0')};
  WriteFile(dir_ / "model-00001-of-00002.safetensors", BuildSafetensors(a));
  WriteFile(dir_ / "model-00002-of-00002.safetensors", BuildSafetensors(b));
  WriteFile(dir_ / "model.safetensors.index.json", json({{"weight_map", weight_map}}).dump());
  auto ckpt = LoadCheckpoint(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE(ckpt->config.tie_word_embeddings);
  EXPECT_EQ(ckpt->config.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(ckpt->config.rope_scaling.factor, 8.0f);
  EXPECT_EQ(ckpt->config.rope_scaling.original_max_position, 8192);
  EXPECT_EQ(ckpt->tokenizer.bos_id, 6);  // from config.json
  EXPECT_EQ(ckpt->tokenizer.eos_id, 7);
  EXPECT_EQ(ckpt->tokenizer.extra_eos_ids, (std::vector<int32_t>{6}));
  ASSERT_EQ(ckpt->tensors.size(), expected_.size());
  for (const auto& [name, values] : expected_) EXPECT_EQ(ckpt->tensors.at(name).data, values) << name;
  // A shard name escaping the directory is refused.
  weight_map.begin().value() = "../evil.safetensors";
  WriteFile(dir_ / "model.safetensors.index.json", json({{"weight_map", weight_map}}).dump());
  ExpectError(Load(), absl::StatusCode::kInvalidArgument, "evil");
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  std::string bytes = BuildSafetensors(tensors_);
  bytes.replace(0, 8, Bytes<uint64_t>(bytes.size()));
  WriteFile(dir_ / "model.safetensors", bytes);
  ExpectError(Load(), absl::StatusCode::kDataLoss, "header length");
  bytes.replace(0, 8, Bytes<uint64_t>(~0ull));
  WriteFile(dir_ / "model.safetensors", bytes);
  ExpectError(Load(), absl::StatusCode::kDataLoss, "header length");
  WriteFile(dir_ / "model.safetensors", "abc");
  ExpectError(Load(), absl::StatusCode::kDataLoss);
}

TEST_F(SafetensorsTest, TruncatedAnywhereIsAnError) {
  const std::string bytes = BuildSafetensors(tensors_);
  for (size_t cut = 0; cut < bytes.size(); cut += (cut < 4096 ? 1 : 61)) {
    WriteFile(dir_ / "model.safetensors", bytes.substr(0, cut));
    const absl::Status st = Load();
    ASSERT_FALSE(st.ok()) << "cut at " << cut;
    ASSERT_EQ(st.code(), absl::StatusCode::kDataLoss) << "cut at " << cut << ": " << st;
  }
}

TEST_F(SafetensorsTest, RandomCorruptionNeverCrashes) {
  const std::string clean = BuildSafetensors(tensors_);
  uint64_t header_end;
  std::memcpy(&header_end, clean.data(), 8);
  header_end += 8;
  std::mt19937 rng(99);
  for (int iter = 0; iter < 1000; ++iter) {
    std::string bytes = clean;
    for (int f = 1 + rng() % 3; f > 0; --f) bytes[rng() % header_end] = static_cast<char>(rng() % 256);
    WriteFile(dir_ / "model.safetensors", bytes);
    (void)Load();  // any status, no crash
  }
}

TEST_F(SafetensorsTest, DataOffsetsOutside) {
  Write([](json& h) { h["model.norm.weight"]["data_offsets"] = {0, 1u << 30}; });
  ExpectError(Load(), absl::StatusCode::kDataLoss, "model.norm.weight");
  Write([](json& h) { h["model.norm.weight"]["data_offsets"] = {64, 0}; });
  ExpectError(Load(), absl::StatusCode::kDataLoss, "model.norm.weight");
  Write([](json& h) { h["model.norm.weight"]["data_offsets"] = {-4, 124}; });
  ExpectError(Load(), absl::StatusCode::kDataLoss, "model.norm.weight");
  Write([](json& h) { h["model.norm.weight"]["data_offsets"] = "x"; });
  ExpectError(Load(), absl::StatusCode::kDataLoss, "model.norm.weight");
}

TEST_F(SafetensorsTest, UnsupportedDtype) {
  tensors_["model.layers.1.mlp.up_proj.weight"].dtype = "I64";
  tensors_["model.layers.1.mlp.up_proj.weight"].bytes.resize(kInter * kHidden * 8);
  Write();
  const absl::Status st = Load();
  ExpectError(st, absl::StatusCode::kInvalidArgument, "model.layers.1.mlp.up_proj.weight");
  EXPECT_TRUE(absl::StrContains(st.message(), "I64")) << st;
}

TEST_F(SafetensorsTest, SizeMismatch) {
  tensors_["model.layers.0.mlp.down_proj.weight"].bytes.resize(10);
  Write();
  ExpectError(Load(), absl::StatusCode::kDataLoss, "model.layers.0.mlp.down_proj.weight");
}

TEST_F(SafetensorsTest, ShapeMismatch) {
  StTensor& t = tensors_["model.layers.0.self_attn.k_proj.weight"];
  t.shape = {kHidden, kKvHeads * kHeadDim};  // transposed; same size
  Write();
  ExpectError(Load(), absl::StatusCode::kInvalidArgument, "model.layers.0.self_attn.k_proj.weight");
}

TEST_F(SafetensorsTest, MissingTensor) {
  tensors_.erase("model.layers.1.post_attention_layernorm.weight");
  Write();
  ExpectError(Load(), absl::StatusCode::kNotFound, "model.layers.1.post_attention_layernorm.weight");
  // An untied config needs lm_head.
  tensors_ = TinySafetensors(true, &expected_);
  Write();
  WriteFile(dir_ / "config.json", TinyConfigJson(false).dump());
  ExpectError(Load(), absl::StatusCode::kNotFound, "lm_head.weight");
}

TEST_F(SafetensorsTest, ConfigErrors) {
  struct Case {
    std::function<void(json&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](json& c) { c.erase("hidden_size"); }, "config.json: key 'hidden_size' is missing"},
      {[](json& c) { c.erase("num_hidden_layers"); }, "num_hidden_layers"},
      {[](json& c) { c["vocab_size"] = "8"; }, "vocab_size"},
      {[](json& c) { c["num_key_value_heads"] = 3; }, "config.json: num_key_value_heads=3 does not divide"},
      {[](json& c) {
         c["architectures"] = {"Qwen2ForCausalLM"};
         c["model_type"] = "qwen2";
       },
       "Qwen2ForCausalLM"},
      {[](json& c) { c["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}}; }, "yarn"},
      {[](json& c) { c["rope_scaling"] = {{"type", "linear"}}; }, "rope_scaling.factor"},
      {[](json& c) { c["attention_bias"] = true; }, "attention_bias"},
      {[](json& c) { c["tie_word_embeddings"] = 1; }, "tie_word_embeddings"},
      {[](json& c) { c["vocab_size"] = 4; }, "vocab_size=4"},
      {[](json& c) { c["eos_token_id"] = 99; }, "eos_token_id"},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    json cfg = TinyConfigJson();
    cases[k].edit(cfg);
    WriteFile(dir_ / "config.json", cfg.dump());
    SCOPED_TRACE(absl::StrCat("case ", k));
    ExpectError(Load(), absl::StatusCode::kInvalidArgument, cases[k].needle);
  }
}

TEST_F(SafetensorsTest, BadJsonAndMissingFiles) {
  WriteFile(dir_ / "config.json", "{\"vocab_size\": ");
  ExpectError(Load(), absl::StatusCode::kInvalidArgument, "config.json");
  WriteFile(dir_ / "config.json", TinyConfigJson().dump());
  Write();
  std::string bytes = BuildSafetensors(tensors_);
  bytes[8] = '[';  // header no longer a JSON object
  WriteFile(dir_ / "model.safetensors", bytes);
  ExpectError(Load(), absl::StatusCode::kDataLoss, "JSON");
  Write([](json& h) { h["model.norm.weight"] = 5; });
  ExpectError(Load(), absl::StatusCode::kDataLoss, "model.norm.weight");
  Write();
  WriteFile(dir_ / "tokenizer.json", "not json");
  ExpectError(Load(), absl::StatusCode::kInvalidArgument, "tokenizer.json");
  fs::remove(dir_ / "tokenizer.json");
  ExpectError(Load(), absl::StatusCode::kNotFound, "tokenizer.json");
  WriteFile(dir_ / "tokenizer.json", TinyTokenizerJson().dump());
  fs::remove(dir_ / "model.safetensors");
  ExpectError(Load(), absl::StatusCode::kNotFound, "model.safetensors");
  fs::remove(dir_ / "config.json");
  ExpectError(Load(), absl::StatusCode::kNotFound, "config.json");
}

// ------------------------------------------------------------ dispatch, Get

TEST_F(LoaderTest, LoadCheckpointDispatches) {
  const std::string bytes = MakeTinyGguf().builder.Build().bytes;
  auto by_ext = LoadCheckpoint(WriteGguf(bytes, "m.gguf"));
  ASSERT_TRUE(by_ext.ok()) << by_ext.status();
  EXPECT_EQ(by_ext->format, "gguf");
  auto by_magic = LoadCheckpoint(WriteGguf(bytes, "model.bin"));
  ASSERT_TRUE(by_magic.ok()) << by_magic.status();
  ExpectError(LoadCheckpoint(WriteGguf("hello world", "notes.txt")).status(), absl::StatusCode::kInvalidArgument);
  ExpectError(LoadCheckpoint(WriteGguf("hello world", "bad.gguf")).status(), absl::StatusCode::kDataLoss);
  ExpectError(LoadCheckpoint((dir_ / "nothing").string()).status(), absl::StatusCode::kNotFound);
  // An empty directory is a safetensors directory without config.json.
  fs::create_directories(dir_ / "hf");
  ExpectError(LoadCheckpoint((dir_ / "hf").string()).status(), absl::StatusCode::kNotFound, "config.json");
}

TEST_F(LoaderTest, CheckpointGet) {
  auto ckpt = LoadGguf(WriteGguf(MakeTinyGguf().builder.Build().bytes));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE(ckpt->Get("model.norm.weight").ok());
  EXPECT_TRUE(ckpt->Get("model.norm.weight", {kHidden}).ok());
  ExpectError(ckpt->Get("model.norm.weight", {kHidden, 1}).status(), absl::StatusCode::kInvalidArgument,
              "[32, 1]");
  ExpectError(ckpt->Get("lm_head.weight").status(), absl::StatusCode::kNotFound, "lm_head.weight");
}

// ------------------------------------------------------------ real model

std::string SmolLm2Path() {
  if (const char* env = std::getenv("ATOMSERVE_MODEL"); env != nullptr && *env != '\0') return env;
  const char* src = std::getenv("ATOMSERVE_SOURCE_DIR");
  return absl::StrCat(src != nullptr ? src : ATOMSERVE_SOURCE_DIR, "/models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

TEST(RealModelTest, SmolLm2) {
  const std::string path = SmolLm2Path();
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent";
  auto ckpt = LoadCheckpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const ModelConfig& c = ckpt->config;
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_TRUE(c.tie_word_embeddings);
  const TokenizerSpec& tok = ckpt->tokenizer;
  EXPECT_EQ(tok.tokens.size(), 49152u);
  EXPECT_EQ(tok.token_types.size(), 49152u);
  EXPECT_EQ(tok.merges.size(), 48900u);
  EXPECT_EQ(tok.pre, "smollm");
  EXPECT_EQ(tok.bos_id, 1);
  EXPECT_EQ(tok.eos_id, 2);
  EXPECT_EQ(tok.tokens[2], "<|im_end|>");
  EXPECT_FALSE(tok.chat_template.empty());
  EXPECT_EQ(ckpt->tensors.size(), 2u + 9u * 30u);
  EXPECT_TRUE(ckpt->Get("model.embed_tokens.weight", {49152, 576}).ok());
  EXPECT_TRUE(ckpt->Get("model.layers.29.self_attn.k_proj.weight", {192, 576}).ok());
  for (const auto& [name, t] : ckpt->tensors) {
    ASSERT_EQ(static_cast<int64_t>(t.data.size()), t.numel()) << name;
    for (float v : t.data) ASSERT_TRUE(std::isfinite(v)) << name;
  }
}

}  // namespace
}  // namespace atomserve
