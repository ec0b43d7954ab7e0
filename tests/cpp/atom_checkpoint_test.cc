// The quantized checkpoint file (runtime/atom_checkpoint.h): round trip, and
// rejection of corrupt, truncated, foreign, newer and mismatched files.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "atom_random_model.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/atom_checkpoint.h"
#include "runtime/atom_quantizer.h"
#include "runtime/model_loader.h"

namespace atomserve {
namespace {

// A directory of this process: ctest runs each test as its own process, in
// parallel, and the files must not collide.
std::filesystem::path TempDirectory() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path d = std::filesystem::path(::testing::TempDir()) /
                              absl::StrCat("atom_checkpoint_test_", ::getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

std::string TempPath(const std::string& name) { return (TempDirectory() / name).string(); }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
}

// Recomputes the checksum after an edit, so that only the edit is tested.
void Reseal(std::string& bytes) {
  const uint64_t sum = Fnv1a64(bytes.data() + kAtomPreludeBytes, bytes.size() - kAtomPreludeBytes);
  std::memcpy(bytes.data() + 32, &sum, 8);
}

class AtomCheckpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Checkpoint source = testing::RandomLlamaCheckpoint();
    ckpt_ = new AtomCheckpoint();
    ckpt_->config = source.config;
    ckpt_->tokenizer = source.tokenizer;
    ckpt_->recipe.keeper = 64;
    ckpt_->recipe.gptq = false;
    auto fp32 = LlamaModel::Create(std::move(source));
    ASSERT_TRUE(fp32.ok());
    ckpt_->source = {"random-llama", 1234, HashModelWeights((*fp32)->weights())};
    auto w = CalibrateAndQuantize(**fp32, testing::RandomIds(256, 300, 3), ckpt_->recipe, 128);
    ASSERT_TRUE(w.ok()) << w.status();
    ckpt_->weights = std::move(*w);
    ckpt_->calibration = {"calib.txt", 999, 0xabcdef0123456789ull, 256, 2, 128};
    ckpt_->quantize_seconds = 1.5;
    path_ = new std::string(TempPath("model.atom"));
    ASSERT_TRUE(SaveAtomCheckpoint(*ckpt_, *path_).ok());
    bytes_ = new std::string(ReadAll(*path_));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(TempDirectory(), ec);
    delete ckpt_;
    delete path_;
    delete bytes_;
  }

  // Writes modified bytes to a fresh file and loads it.
  absl::Status LoadBytes(const std::string& bytes, const AtomLoadOptions& options = {}) {
    const std::string path = TempPath("edited.atom");
    WriteAll(path, bytes);
    return LoadAtomCheckpoint(path, options).status();
  }

  static AtomCheckpoint* ckpt_;
  static std::string* path_;
  static std::string* bytes_;
};

AtomCheckpoint* AtomCheckpointTest::ckpt_ = nullptr;
std::string* AtomCheckpointTest::path_ = nullptr;
std::string* AtomCheckpointTest::bytes_ = nullptr;

void ExpectSameMatrix(const quant::W4A4Matrix& a, const quant::W4A4Matrix& b) {
  EXPECT_EQ(a.layout, b.layout);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.keeper_codes, b.keeper_codes);
  EXPECT_EQ(a.keeper_scales, b.keeper_scales);
}

TEST_F(AtomCheckpointTest, RoundTrip) {
  auto loaded = LoadAtomCheckpoint(*path_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const AtomCheckpoint& a = *ckpt_;
  const AtomCheckpoint& b = *loaded;
  EXPECT_EQ(b.path, *path_);
  EXPECT_EQ(b.config.hidden_size, a.config.hidden_size);
  EXPECT_EQ(b.config.num_kv_heads, a.config.num_kv_heads);
  EXPECT_EQ(b.config.rope_theta, a.config.rope_theta);
  EXPECT_EQ(b.config.tie_word_embeddings, a.config.tie_word_embeddings);
  EXPECT_EQ(b.recipe.keeper, 64);
  EXPECT_FALSE(b.recipe.gptq);
  EXPECT_EQ(b.recipe.weight_clip, a.recipe.weight_clip);
  EXPECT_EQ(b.tokenizer.tokens, a.tokenizer.tokens);
  EXPECT_EQ(b.tokenizer.merges, a.tokenizer.merges);
  EXPECT_EQ(b.tokenizer.token_types, a.tokenizer.token_types);
  EXPECT_EQ(b.tokenizer.extra_eos_ids, a.tokenizer.extra_eos_ids);
  EXPECT_EQ(b.tokenizer.chat_template, a.tokenizer.chat_template);
  EXPECT_EQ(b.tokenizer.bos_id, a.tokenizer.bos_id);
  EXPECT_EQ(b.source.tensors_fnv1a64, a.source.tensors_fnv1a64);
  EXPECT_EQ(b.source.bytes, 1234u);
  EXPECT_EQ(b.calibration.file_fnv1a64, a.calibration.file_fnv1a64);
  EXPECT_EQ(b.calibration.tokens, 256);
  EXPECT_EQ(b.quantize_seconds, 1.5);
  EXPECT_EQ(b.weights.embed.data, a.weights.embed.data);
  ASSERT_EQ(b.weights.layers.size(), a.weights.layers.size());
  for (size_t i = 0; i < a.weights.layers.size(); ++i) {
    const LayerWeights &la = a.weights.layers[i], &lb = b.weights.layers[i];
    EXPECT_EQ(lb.perms, la.perms);
    EXPECT_EQ(lb.input_norm.data, la.input_norm.data);
    ExpectSameMatrix(lb.q.packed, la.q.packed);
    ExpectSameMatrix(lb.up.packed, la.up.packed);
    ExpectSameMatrix(lb.down.packed, la.down.packed);
  }
  // Saving the loaded checkpoint reproduces the file byte for byte.
  const std::string again = TempPath("again.atom");
  ASSERT_TRUE(SaveAtomCheckpoint(b, again).ok());
  EXPECT_EQ(ReadAll(again), *bytes_);
}

TEST_F(AtomCheckpointTest, LoadModelRunsTheIntegerPath) {
  auto m = LoadModel(*path_);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->atom.has_value());
  EXPECT_TRUE(m->model->quantized());
  EXPECT_EQ(m->tokenizer.tokens.size(), 300u);
  auto in_memory = LlamaModel::Create(ckpt_->config, ModelWeights(ckpt_->weights), ckpt_->recipe);
  ASSERT_TRUE(in_memory.ok());
  const std::vector<int32_t> ids = {5, 17, 42, 99};
  std::vector<float> a, b;
  DenseKvCache ca = m->model->NewCache(4), cb = (*in_memory)->NewCache(4);
  ASSERT_TRUE(m->model->Forward(ids, ca, &a, true).ok());
  ASSERT_TRUE((*in_memory)->Forward(ids, cb, &b, true).ok());
  EXPECT_EQ(a, b);
}

TEST_F(AtomCheckpointTest, FlippedByteIsCorrupt) {
  for (size_t offset : {kAtomPreludeBytes + 5, bytes_->size() / 2, bytes_->size() - 1}) {
    std::string bytes = *bytes_;
    bytes[offset] ^= 0x10;
    absl::Status st = LoadBytes(bytes);
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << offset;
    EXPECT_NE(st.message().find("checksum mismatch (file corrupt)"), std::string::npos) << st;
    EXPECT_NE(st.message().find("edited.atom"), std::string::npos) << st;
  }
}

TEST_F(AtomCheckpointTest, Truncated) {
  for (size_t size : {size_t{0}, size_t{7}, size_t{20}, size_t{kAtomPreludeBytes}, bytes_->size() / 3,
                      bytes_->size() - 1}) {
    absl::Status st = LoadBytes(bytes_->substr(0, size));
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << size << " " << st;
    if (size >= 8) EXPECT_NE(st.message().find("truncated"), std::string::npos) << st;
  }
  absl::Status st = LoadBytes(*bytes_ + "x");
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("trailing bytes"), std::string::npos) << st;
}

TEST_F(AtomCheckpointTest, BadMagic) {
  std::string bytes = *bytes_;
  bytes[0] = 'G';
  absl::Status st = LoadBytes(bytes);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("bad magic"), std::string::npos) << st;
  EXPECT_FALSE(*IsAtomCheckpoint(TempPath("edited.atom")));
  EXPECT_TRUE(*IsAtomCheckpoint(*path_));
  EXPECT_EQ(IsAtomCheckpoint(TempPath("missing.atom")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadAtomCheckpoint(TempPath("missing.atom")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AtomCheckpointTest, FutureVersion) {
  std::string bytes = *bytes_;
  const uint32_t version = kAtomFormatVersion + 1;
  std::memcpy(bytes.data() + 8, &version, 4);
  absl::Status st = LoadBytes(bytes);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("newer than this atomserve reads"), std::string::npos) << st;
}

TEST_F(AtomCheckpointTest, ExpectedRecipeMismatch) {
  AtomLoadOptions options;
  options.expect_recipe = ckpt_->recipe;
  EXPECT_TRUE(LoadBytes(*bytes_, options).ok());
  options.expect_recipe->gptq = true;
  absl::Status st = LoadBytes(*bytes_, options);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("recipe mismatch"), std::string::npos) << st;
  EXPECT_NE(st.message().find("gptq=off"), std::string::npos) << st;
}

TEST_F(AtomCheckpointTest, HeaderRecipeDisagreesWithTensors) {
  // The header claims keeper 48 (same length: the offsets stay valid), but
  // the matrices were written with 64 keepers.
  std::string bytes = *bytes_;
  const size_t at = bytes.find("\"keeper\":64");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 11, "\"keeper\":48");
  Reseal(bytes);
  absl::Status st = LoadBytes(bytes);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("expected"), std::string::npos) << st;
  EXPECT_NE(st.message().find("for this config and recipe"), std::string::npos) << st;
}

TEST_F(AtomCheckpointTest, MalformedHeaderAndDirectory) {
  std::string bytes = *bytes_;
  const size_t at = bytes.find("\"tensors\":[");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 10] = '{';  // "tensors" is no longer an array; JSON breaks
  Reseal(bytes);
  EXPECT_EQ(LoadBytes(bytes).code(), absl::StatusCode::kDataLoss);

  // An unknown dtype.
  bytes = *bytes_;
  const size_t dtype = bytes.find("\"dtype\":\"f32\"");
  ASSERT_NE(dtype, std::string::npos);
  bytes.replace(dtype, 13, "\"dtype\":\"q9\" ");
  Reseal(bytes);
  absl::Status st = LoadBytes(bytes);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find("unknown dtype"), std::string::npos) << st;

  // A tensor claiming more bytes than the payload holds (shape unchanged):
  // rejected before any read.
  bytes = *bytes_;
  const size_t key = bytes.find("\"bytes\":", bytes.find("\"tensors\":["));
  ASSERT_NE(key, std::string::npos);
  const size_t digits = key + 8, digits_end = bytes.find_first_not_of("0123456789", digits);
  bytes.replace(digits, digits_end - digits, std::string(digits_end - digits, '9'));
  Reseal(bytes);
  st = LoadBytes(bytes);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find("corrupt tensor directory"), std::string::npos) << st;
}

TEST_F(AtomCheckpointTest, SaveRejectsInconsistentWeights) {
  AtomCheckpoint bad = *ckpt_;
  bad.recipe.keeper = 128;
  absl::Status st = SaveAtomCheckpoint(bad, TempPath("bad.atom"));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(TempPath("bad.atom")));
}

TEST(Fnv1a64, KnownVectors) {
  EXPECT_EQ(Fnv1a64("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("foobar", 6), 0x85944171f73967e8ull);
  // Continuing a hash equals hashing the concatenation.
  EXPECT_EQ(Fnv1a64("bar", 3, Fnv1a64("foo", 3)), Fnv1a64("foobar", 6));
}

TEST(RecipeString, Describes) {
  quant::QuantRecipe r;
  EXPECT_EQ(RecipeString(r), "keeper=128 weight_clip=0.85 act_clip=0.9 gptq=on damp=0.01 block=128");
  r.gptq = false;
  r.keeper = 0;
  EXPECT_EQ(RecipeString(r), "keeper=0 weight_clip=0.85 act_clip=0.9 gptq=off");
}

}  // namespace
}  // namespace atomserve
