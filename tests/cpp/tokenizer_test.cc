// Unit tests of the byte-level BPE tokenizer, its pre-tokenizers and UTF-8
// helpers, and tokenizer.json parsing. Parity with HF `tokenizers` on real
// and trained vocabularies is tests/python/test_tokenizer_parity.py.
#include "runtime/tokenizer.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/checkpoint.h"
#include "runtime/tokenizer_json.h"
#include "runtime/unicode.h"

namespace atomserve {
namespace {

using unicode::CharClass;
using unicode::PreTokenizer;

// GPT-2's bytes_to_unicode(), written out independently of tokenizer.cc.
std::string ByteChar(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int k = 0; k < b; ++k)
      if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  unicode::AppendUtf8(static_cast<uint32_t>(cp), &s);
  return s;
}

// Byte-level form of a text: each byte replaced by its stand-in character.
std::string Bl(std::string_view text) {
  std::string s;
  for (unsigned char b : text) s += ByteChar(b);
  return s;
}

// A small vocabulary: the 256 byte tokens, a few merges and special tokens.
TokenizerSpec SmallSpec(const std::string& pre = "gpt2") {
  TokenizerSpec spec;
  spec.pre = pre;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(ByteChar(b));
  spec.token_types.assign(256, TokenType::kNormal);
  auto add = [&](const std::string& tok, TokenType type = TokenType::kNormal) {
    spec.tokens.push_back(tok);
    spec.token_types.push_back(type);
  };
  for (const char* t : {"he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "bc", "ab"}) add(t);
  spec.merges = {"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "b c", "a b"};
  add("<|end|>", TokenType::kControl);       // 267
  add("<|end|>!", TokenType::kControl);      // 268: overlaps the one above
  add("<user>", TokenType::kUserDefined);    // 269
  add("<|sp ace|>", TokenType::kControl);    // 270: a space outside the byte alphabet
  spec.eos_id = 267;
  spec.bos_id = 269;
  spec.extra_eos_ids = {268, 267};
  return spec;
}

std::unique_ptr<Tokenizer> Make(const TokenizerSpec& spec) {
  auto tok = Tokenizer::Create(spec);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

using Strings = std::vector<std::string>;

Strings Pieces(PreTokenizer family, std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : unicode::PreTokenize(family, text)) out.emplace_back(p);
  return out;
}

// ------------------------------------------------------------ UTF-8, classes

TEST(Unicode, DecodesValidAndRejectsMalformedSequences) {
  uint32_t cp;
  EXPECT_EQ(unicode::DecodeUtf8("A", 0, &cp), 1u);
  EXPECT_EQ(cp, 'A');
  EXPECT_EQ(unicode::DecodeUtf8("\xC3\xA9", 0, &cp), 2u);
  EXPECT_EQ(cp, 0xE9u);
  EXPECT_EQ(unicode::DecodeUtf8("\xF0\x9F\x98\x80", 0, &cp), 4u);
  EXPECT_EQ(cp, 0x1F600u);
  for (std::string bad : {"\xC0\x80", "\xE0\x80\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", "\xFF",
                          "\xE2\x82", "\xF0\x9F\x98"}) {
    EXPECT_EQ(unicode::DecodeUtf8(bad, 0, &cp), 1u) << bad;
    EXPECT_EQ(cp, unicode::kInvalidCodepoint);
    EXPECT_FALSE(unicode::IsValidUtf8(bad));
  }
  EXPECT_TRUE(unicode::IsValidUtf8("héllo 😀"));
}

TEST(Unicode, CharacterClasses) {
  EXPECT_EQ(unicode::ClassOf('a'), CharClass::kLetter);
  EXPECT_EQ(unicode::ClassOf(0x4F60), CharClass::kLetter);   // 你
  EXPECT_EQ(unicode::ClassOf('7'), CharClass::kNumber);
  EXPECT_EQ(unicode::ClassOf(0x00BD), CharClass::kNumber);   // ½ (No)
  EXPECT_EQ(unicode::ClassOf(0x2167), CharClass::kNumber);   // Ⅷ (Nl)
  EXPECT_EQ(unicode::ClassOf(0x3000), CharClass::kSpace);
  EXPECT_EQ(unicode::ClassOf(0x0085), CharClass::kSpace);
  EXPECT_EQ(unicode::ClassOf(0x001C), CharClass::kOther);    // isspace() in Python, not White_Space
  EXPECT_EQ(unicode::ClassOf(0x200B), CharClass::kOther);    // zero width space is not White_Space
  EXPECT_EQ(unicode::ClassOf(0x0301), CharClass::kOther);    // combining mark
  EXPECT_EQ(unicode::ClassOf(0x1F600), CharClass::kOther);
  EXPECT_EQ(unicode::ClassOf(unicode::kInvalidCodepoint), CharClass::kOther);
  EXPECT_STRNE(unicode::TablesVersion(), "");
}

// ------------------------------------------------------------ pre-tokenizers

TEST(PreTokenize, Gpt2) {
  EXPECT_EQ(Pieces(PreTokenizer::kGpt2, "Hello world! It's 42"), (Strings{"Hello", " world", "!", " It", "'s", " 42"}));
  // A whitespace run before a word gives its last space to the word...
  EXPECT_EQ(Pieces(PreTokenizer::kGpt2, "a   b"), (Strings{"a", "  ", " b"}));
  // ...but only a literal space attaches as the prefix.
  EXPECT_EQ(Pieces(PreTokenizer::kGpt2, "a \tb"), (Strings{"a", " ", "\t", "b"}));
  EXPECT_EQ(Pieces(PreTokenizer::kGpt2, "a\tb"), (Strings{"a", "\t", "b"}));
  EXPECT_EQ(Pieces(PreTokenizer::kGpt2, "a  "), (Strings{"a", "  "}));
  EXPECT_EQ(Pieces(PreTokenizer::kGpt2, "x\n\n y"), (Strings{"x", "\n\n", " y"}));
  EXPECT_EQ(Pieces(PreTokenizer::kGpt2, "don't 'Re 're ?!x"), (Strings{"don", "'t", " '", "Re", " '", "re", " ?!", "x"}));
  EXPECT_TRUE(Pieces(PreTokenizer::kGpt2, "").empty());
}

TEST(PreTokenize, SmollmIsolatesDigits) {
  EXPECT_EQ(Pieces(PreTokenizer::kSmollm, "abc 123x ½"), (Strings{"abc", " ", "1", "2", "3", "x", " ", "½"}));
}

TEST(PreTokenize, Llama3) {
  EXPECT_EQ(Pieces(PreTokenizer::kLlama3, "Hello 12345 world"), (Strings{"Hello", " ", "123", "45", " world"}));
  EXPECT_EQ(Pieces(PreTokenizer::kLlama3, "I'M x'ſt \"quoted\""), (Strings{"I", "'M", " x", "'ſ", "t", " \"", "quoted", "\""}));
  EXPECT_EQ(Pieces(PreTokenizer::kLlama3, "x  \n \t y"), (Strings{"x", "  \n", " \t", " y"}));
  EXPECT_EQ(Pieces(PreTokenizer::kLlama3, " !!\n\nx"), (Strings{" !!\n\n", "x"}));
  EXPECT_EQ(Pieces(PreTokenizer::kLlama3, "\tfoo\n\nbar"), (Strings{"\tfoo", "\n\n", "bar"}));
}

TEST(PreTokenize, PiecesPartitionArbitraryBytes) {
  std::mt19937 rng(7);
  for (PreTokenizer family : {PreTokenizer::kGpt2, PreTokenizer::kSmollm, PreTokenizer::kLlama3}) {
    for (int iter = 0; iter < 300; ++iter) {
      std::string text(rng() % 64, '\0');
      for (char& c : text) c = static_cast<char>(rng() % 4 == 0 ? " \n\t'a1"[rng() % 6] : rng() % 256);
      std::string joined;
      for (std::string_view p : unicode::PreTokenize(family, text)) {
        EXPECT_FALSE(p.empty());
        joined += p;
      }
      EXPECT_EQ(joined, text);
    }
  }
}

// ------------------------------------------------------------ BPE

TEST(Tokenizer, AppliesMergesByRank) {
  auto tok = Make(SmallSpec());
  ASSERT_TRUE(tok);
  int32_t hello = tok->TokenId("hello"), world = tok->TokenId(Bl(" world"));
  EXPECT_EQ(tok->Encode("hello world"), (std::vector<int32_t>{hello, world}));
  // "bc" outranks "ab", so "abc" is a + bc; with the ranks swapped, ab + c.
  EXPECT_EQ(tok->Encode("abc"), (std::vector<int32_t>{'a', tok->TokenId("bc")}));
  TokenizerSpec swapped = SmallSpec();
  std::swap(swapped.merges[9], swapped.merges[10]);
  auto tok2 = Make(swapped);
  EXPECT_EQ(tok2->Encode("abc"), (std::vector<int32_t>{tok2->TokenId("ab"), 'c'}));
  // Unmerged bytes come out as byte tokens, space included.
  EXPECT_EQ(tok->Encode(" x"), (std::vector<int32_t>{tok->TokenId("Ġ"), 'x'}));
}

TEST(Tokenizer, SplitsSpecialTokensLongestFirst) {
  auto tok = Make(SmallSpec());
  ASSERT_TRUE(tok);
  int32_t hello = tok->TokenId("hello");
  EXPECT_EQ(tok->Encode("hello<|end|>hello"), (std::vector<int32_t>{hello, 267, hello}));
  EXPECT_EQ(tok->Encode("<|end|>!!"), (std::vector<int32_t>{268, '!'}));
  EXPECT_EQ(tok->Encode("<user><|end|"), (std::vector<int32_t>{269, '<', '|', 'e', 'n', 'd', '|'}));
  // Without allow_special they are text like any other.
  std::vector<int32_t> plain = tok->Encode("<|end|>", /*allow_special=*/false);
  EXPECT_EQ(tok->Decode(plain), "<|end|>");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 267), 0);
}

TEST(Tokenizer, DecodeRoundTripsArbitraryBytes) {
  for (const char* pre : {"gpt2", "smollm", "llama3"}) {
    auto tok = Make(SmallSpec(pre));
    ASSERT_TRUE(tok);
    std::mt19937 rng(11);
    for (int iter = 0; iter < 500; ++iter) {
      std::string text(rng() % 80, '\0');
      for (char& c : text) c = static_cast<char>(rng() % 3 == 0 ? "hello world<|end|>"[rng() % 18] : rng() % 256);
      EXPECT_EQ(tok->Decode(tok->Encode(text)), text) << pre;
      EXPECT_EQ(tok->Decode(tok->Encode(text, false)), text) << pre;
    }
  }
}

TEST(Tokenizer, DecodeDetails) {
  auto tok = Make(SmallSpec());
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->DecodeToken(tok->TokenId("Ġworld")), " world");
  EXPECT_EQ(tok->DecodeToken(0xE9), "\xE9");  // a lone byte, not valid UTF-8
  EXPECT_EQ(tok->DecodeToken(270), "<|sp ace|>");             // outside the alphabet: verbatim
  EXPECT_EQ(tok->DecodeToken(-1), "");
  std::vector<int32_t> ids = tok->Encode("hello<|end|> world<user>");
  EXPECT_EQ(tok->Decode(ids), "hello<|end|> world<user>");
  EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true), "hello world<user>");  // <user> is not special
  EXPECT_EQ(tok->Decode({tok->TokenId("hello"), 99999, -5}), "hello");
}

TEST(Tokenizer, Accessors) {
  auto tok = Make(SmallSpec());
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->vocab_size(), 271);
  EXPECT_EQ(tok->eos_id(), 267);
  EXPECT_EQ(tok->bos_id(), 269);
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->stop_ids(), (std::vector<int32_t>{267, 268}));
  EXPECT_TRUE(tok->IsSpecial(267));
  EXPECT_FALSE(tok->IsSpecial(269));
  EXPECT_FALSE(tok->IsSpecial(5000));
  EXPECT_EQ(tok->TokenId("hello"), 259);
  EXPECT_EQ(tok->TokenId("nope"), -1);
}

TEST(Tokenizer, MissingByteTokenUsesUnkOrIsSkipped) {
  TokenizerSpec spec = SmallSpec();
  spec.tokens['z'] = "";  // no token for byte 'z'
  auto tok = Make(spec);
  EXPECT_EQ(tok->Encode("zz"), std::vector<int32_t>{});
  spec.unk_id = 267;
  auto with_unk = Make(spec);
  EXPECT_EQ(with_unk->Encode("az"), (std::vector<int32_t>{'a', 267}));
}

TEST(Tokenizer, IgnoreMergesForLlama3) {
  TokenizerSpec spec = SmallSpec("llama3");
  spec.tokens.push_back("abc");  // in the vocabulary, but no merge builds it
  spec.token_types.push_back(TokenType::kNormal);
  auto tok = Make(spec);
  EXPECT_EQ(tok->Encode("abc"), (std::vector<int32_t>{271}));
  auto gpt2 = Make([&] { spec.pre = "gpt2"; return spec; }());
  EXPECT_EQ(gpt2->Encode("abc"), (std::vector<int32_t>{'a', gpt2->TokenId("bc")}));
}

TEST(Tokenizer, RejectsBadSpecs) {
  auto expect_invalid = [](const TokenizerSpec& spec, const char* what) {
    auto tok = Tokenizer::Create(spec);
    ASSERT_FALSE(tok.ok()) << what;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << what;
  };
  TokenizerSpec empty;
  expect_invalid(empty, "empty vocabulary");
  TokenizerSpec spec = SmallSpec();
  spec.model = "llama";
  expect_invalid(spec, "sentencepiece model");
  spec = SmallSpec("qwen2");
  expect_invalid(spec, "unknown pre-tokenizer");
  spec = SmallSpec();
  spec.merges.push_back("x yz");
  expect_invalid(spec, "merge part not in vocabulary");
  spec = SmallSpec();
  spec.merges.push_back("x y");
  expect_invalid(spec, "merge result not in vocabulary");
  spec = SmallSpec();
  spec.merges.push_back("nospace");
  expect_invalid(spec, "merge without a space");
  spec = SmallSpec();
  spec.token_types.pop_back();
  expect_invalid(spec, "token types of the wrong length");
  spec = SmallSpec();
  spec.eos_id = 100000;
  expect_invalid(spec, "eos outside the vocabulary");
}

TEST(Tokenizer, ConcurrentEncodeIsConsistent) {
  auto tok = Make(SmallSpec());
  ASSERT_TRUE(tok);
  const std::string text = "hello world <|end|> hello  world\n\tabc 123 héllo wörld";
  const std::vector<int32_t> want = tok->Encode(text);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i)
        if (tok->Encode(text) != want) ++bad;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

// ------------------------------------------------------------ tokenizer.json

std::string MiniTokenizerJson(const std::string& pre_tokenizer, const std::string& extra_model = "") {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string c = ByteChar(b);
    std::string escaped = c == "\"" ? "\\\"" : c == "\\" ? "\\\\" : c;
    vocab += "\"" + escaped + "\": " + std::to_string(b) + ", ";
  }
  vocab += "\"he\": 256";
  return R"({"model": {"type": "BPE", "vocab": {)" + vocab + R"(}, "merges": [["h", "e"]])" + extra_model +
         R"(}, "added_tokens": [{"id": 257, "content": "<|end|>", "special": true},
                                 {"id": 258, "content": "<x>", "special": false}],
             "pre_tokenizer": )" + pre_tokenizer + "}";
}

constexpr const char* kByteLevel = R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";

TEST(TokenizerJson, ReadsSpecAndFamilies) {
  auto spec = TokenizerSpecFromJson(MiniTokenizerJson(kByteLevel),
                                    R"({"eos_token": "<|end|>", "bos_token": {"content": "<x>"},
                                        "add_bos_token": true, "chat_template": "T"})",
                                    "t.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pre, "gpt2");
  EXPECT_EQ(spec->tokens.size(), 259u);
  EXPECT_EQ(spec->token_types[257], TokenType::kControl);
  EXPECT_EQ(spec->token_types[258], TokenType::kUserDefined);
  EXPECT_EQ(spec->merges, (Strings{"h e"}));
  EXPECT_EQ(spec->eos_id, 257);
  EXPECT_EQ(spec->bos_id, 258);
  EXPECT_TRUE(spec->add_bos);
  EXPECT_EQ(spec->chat_template, "T");
  auto tok = Make(*spec);
  EXPECT_EQ(tok->Encode("he<|end|>"), (std::vector<int32_t>{256, 257}));

  auto smollm = TokenizerSpecFromJson(
      MiniTokenizerJson(std::string(R"({"type": "Sequence", "pretokenizers": [
          {"type": "Digits", "individual_digits": true}, )") + kByteLevel + "]}"), "", "t.json");
  ASSERT_TRUE(smollm.ok()) << smollm.status();
  EXPECT_EQ(smollm->pre, "smollm");
}

TEST(TokenizerJson, Llama3NeedsIgnoreMerges) {
  const std::string pre = R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})";
  auto spec = TokenizerSpecFromJson(MiniTokenizerJson(pre, R"(, "ignore_merges": true)"), "", "t.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pre, "llama3");
  EXPECT_FALSE(TokenizerSpecFromJson(MiniTokenizerJson(pre), "", "t.json").ok());
}

TEST(TokenizerJson, RejectsUnsupportedOrMalformedInput) {
  auto invalid = [](const std::string& json, const std::string& cfg = "") {
    auto spec = TokenizerSpecFromJson(json, cfg, "t.json");
    return !spec.ok() && spec.status().code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(invalid("not json"));
  EXPECT_TRUE(invalid("[]"));
  EXPECT_TRUE(invalid(R"({"model": {"type": "Unigram"}})"));
  EXPECT_TRUE(invalid(R"({"model": {"type": 5}})"));  // wrong types must not throw
  EXPECT_TRUE(invalid(R"({"model": {"type": "BPE", "vocab": {"a": "x"}}, "pre_tokenizer": )" +
                      std::string(kByteLevel) + "}"));
  EXPECT_TRUE(invalid(MiniTokenizerJson(R"({"type": "Whitespace"})")));
  EXPECT_TRUE(invalid(MiniTokenizerJson(R"({"type": "ByteLevel", "add_prefix_space": true})")));
  EXPECT_TRUE(invalid(MiniTokenizerJson(R"({"type": "ByteLevel", "use_regex": false})")));
  EXPECT_TRUE(invalid(MiniTokenizerJson(kByteLevel, R"(, "byte_fallback": true)")));
  std::string with_norm = MiniTokenizerJson(kByteLevel);
  with_norm.insert(1, R"("normalizer": {"type": "NFC"}, )");
  EXPECT_TRUE(invalid(with_norm));
  EXPECT_TRUE(invalid(MiniTokenizerJson(kByteLevel), "{bad"));
  std::string bad_added = MiniTokenizerJson(kByteLevel);
  bad_added.replace(bad_added.find("\"id\": 257"), 9, "\"id\": \"x\"");
  EXPECT_TRUE(invalid(bad_added));
}

// ------------------------------------------------------------ SmolLM2

std::string SmolLm2Path() {
  if (const char* env = std::getenv("ATOMSERVE_MODEL")) return env;
  return std::string(ATOMSERVE_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

class SmolLm2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(SmolLm2Path())) return;
    auto ckpt = LoadGguf(SmolLm2Path());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    auto tok = Tokenizer::Create(ckpt->tokenizer);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::move(*tok).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    if (!tok_) GTEST_SKIP() << "SmolLM2 GGUF not found at " << SmolLm2Path();
  }
  static Tokenizer* tok_;
};
Tokenizer* SmolLm2::tok_ = nullptr;

// Ids from HF tokenizers with SmolLM2's tokenizer.json.
TEST_F(SmolLm2, KnownEncodings) {
  const std::vector<std::pair<std::string, std::vector<int32_t>>> cases = {
      {"Hello world! It's 12345 <|im_start|>user\n  hi",
       {19556, 905, 17, 657, 506, 216, 33, 34, 35, 36, 37, 216, 1, 4093, 3805, 15876}},
      {"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
       {1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198}},
      {"def f(x):\n    return x  \n", {1604, 275, 24, 104, 727, 472, 1003, 1792, 32057}},
      {"naïve café 你好 👍🏽", {3546, 46494, 37366, 216, 18645, 250, 48392, 138, 15107, 235, 231, 10813, 233, 138}},
      {"I'm 3.14 you're", {57, 5248, 216, 35, 30, 33, 36, 346, 2316}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tok_->Encode(text), ids) << text;
    EXPECT_EQ(tok_->Decode(ids), text);
  }
  EXPECT_EQ(tok_->vocab_size(), 49152);
  EXPECT_EQ(tok_->TokenId("<|im_end|>"), 2);
  EXPECT_TRUE(tok_->IsSpecial(1));
  EXPECT_EQ(tok_->Decode({1, 4093, 2}, /*skip_special=*/true), "user");
}

TEST_F(SmolLm2, EncodesLongTextRoundTrip) {
  std::string text;
  for (int i = 0; text.size() < 100000; ++i)
    text += "The quick brown fox (number " + std::to_string(i) + ") jumps over the lazy dog; "
            "naïve café, 你好世界.\n\t  ";
  auto start = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = tok_->Encode(text);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(ids.size(), 20000u);
  // Reported, not asserted: timings depend on the machine.
  RecordProperty("encode_seconds", std::to_string(seconds));
  std::printf("encoded %zu tokens in %.3f s\n", ids.size(), seconds);
  EXPECT_EQ(tok_->Decode(ids), text);
}

}  // namespace
}  // namespace atomserve
