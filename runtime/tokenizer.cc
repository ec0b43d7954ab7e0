#include "runtime/tokenizer.h"

#include <algorithm>
#include <array>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "runtime/unicode.h"

namespace atomserve {
namespace {

using unicode::PreTokenizer;

// Debian's Abseil has its own string_view type; hash-map lookups take it.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// GPT-2's bytes_to_unicode(): every byte gets a printable stand-in character
// so that tokens are readable strings. Printable Latin-1 bytes stand for
// themselves; the other 68 bytes map to U+0100.. in byte order.
class ByteAlphabet {
 public:
  ByteAlphabet() {
    cp_to_byte_.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? b : next++;
      unicode::AppendUtf8(cp, &byte_to_utf8_[b]);
      cp_to_byte_[cp] = static_cast<int16_t>(b);
    }
  }

  // UTF-8 of the stand-in character of byte b.
  const std::string& Encode(uint8_t b) const { return byte_to_utf8_[b]; }

  // Bytes a token string stands for. As in HF's ByteLevel decoder, a token
  // with any character outside the alphabet (an added token such as
  // "<|reserved special token 0|>" with real spaces) is taken verbatim.
  std::string Decode(const std::string& token) const {
    std::string bytes;
    bytes.reserve(token.size());
    for (size_t pos = 0; pos < token.size();) {
      uint32_t cp;
      pos += unicode::DecodeUtf8(token, pos, &cp);
      if (cp >= cp_to_byte_.size() || cp_to_byte_[cp] < 0) return token;
      bytes.push_back(static_cast<char>(cp_to_byte_[cp]));
    }
    return bytes;
  }

 private:
  std::array<std::string, 256> byte_to_utf8_;
  std::array<int16_t, 324> cp_to_byte_;  // the stand-ins end at U+0143
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// Finds added/special tokens in text: a byte trie walked from each position,
// which gives HF's leftmost-longest matching (the earliest start wins, then
// the longest token starting there).
class SpecialMatcher {
 public:
  void Add(const std::string& token, int32_t id) {
    if (token.empty()) return;
    if (nodes_.empty()) nodes_.push_back(-1);
    first_byte_[static_cast<uint8_t>(token[0])] = true;
    int32_t node = 0;
    for (char ch : token) {
      auto [it, inserted] = edges_.try_emplace(EdgeKey(node, ch), static_cast<int32_t>(nodes_.size()));
      if (inserted) nodes_.push_back(-1);
      node = it->second;
    }
    if (nodes_[node] < 0) nodes_[node] = id;  // first id wins for duplicate strings
  }

  bool empty() const { return nodes_.empty(); }

  // Length and id of the longest token starting at text[pos]; {0, -1} if none.
  std::pair<size_t, int32_t> LongestAt(std::string_view text, size_t pos) const {
    std::pair<size_t, int32_t> best{0, -1};
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) return best;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = edges_.find(EdgeKey(node, text[i]));
      if (it == edges_.end()) break;
      node = it->second;
      if (nodes_[node] >= 0) best = {i + 1 - pos, nodes_[node]};
    }
    return best;
  }

 private:
  static uint64_t EdgeKey(int32_t node, char ch) {
    return (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(ch);
  }

  std::vector<int32_t> nodes_;  // node -> token id ending there, or -1
  absl::flat_hash_map<uint64_t, int32_t> edges_;
  std::array<bool, 256> first_byte_{};
};

// One BPE symbol in a doubly linked list over the word; id < 0 once merged
// into its left neighbour.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
};

// A pair that may merge: lowest rank first, then leftmost (as HF does).
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator>(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

// Per-Encode buffers, reused across the words of one call.
struct Scratch {
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::string word;
};

}  // namespace

class Tokenizer::Impl {
 public:
  static absl::StatusOr<std::unique_ptr<Impl>> Build(const TokenizerSpec& spec);

  std::vector<int32_t> Encode(std::string_view text, bool allow_special) const;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const;
  std::string DecodeToken(int32_t id) const;
  int32_t TokenId(std::string_view token) const;
  bool IsSpecial(int32_t id) const {
    return id >= 0 && id < vocab_size() && types_[id] == TokenType::kControl;
  }
  int32_t vocab_size() const { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;
  };

  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::Status BuildVocab(const TokenizerSpec& spec);
  absl::Status BuildMerges(const std::vector<std::string>& merges);
  absl::Status CheckIds(const TokenizerSpec& spec) const;

  void EncodeOrdinary(std::string_view text, Scratch* s, std::vector<int32_t>* out) const;
  void EncodeWord(std::string_view word, Scratch* s, std::vector<int32_t>* out) const;
  void PushCandidate(const Scratch& s, int32_t pos, std::vector<Candidate>* heap) const;

  PreTokenizer pre_ = PreTokenizer::kGpt2;
  // Llama-3's tokenizer.json sets BPE ignore_merges: a pre-token that is
  // itself in the vocabulary becomes that token without running merges
  // (llama.cpp does the same for this family). The spec has no field for it.
  bool ignore_merges_ = false;
  std::vector<TokenType> types_;
  std::vector<std::string> token_bytes_;  // what each id decodes to
  absl::flat_hash_map<std::string, int32_t> ids_;
  std::array<int32_t, 256> byte_ids_;  // id of each single-byte symbol, or -1
  absl::flat_hash_map<uint64_t, Merge> merges_;
  SpecialMatcher specials_;
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> stop_ids_;  // eos, then the extra end-of-turn ids
};

absl::StatusOr<std::unique_ptr<Tokenizer::Impl>> Tokenizer::Impl::Build(const TokenizerSpec& spec) {
  if (spec.model != "gpt2")
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer model '", spec.model, "' is not supported (byte-level BPE 'gpt2' only)"));
  std::optional<PreTokenizer> pre = unicode::ParsePreTokenizer(spec.pre);
  if (!pre)
    return absl::InvalidArgumentError(absl::StrCat("unknown pre-tokenizer '", spec.pre,
                                                   "' (supported: gpt2, smollm, llama3)"));
  auto impl = std::make_unique<Impl>();
  impl->pre_ = *pre;
  impl->ignore_merges_ = (*pre == PreTokenizer::kLlama3);
  ATOMSERVE_RETURN_IF_ERROR(impl->BuildVocab(spec));
  ATOMSERVE_RETURN_IF_ERROR(impl->BuildMerges(spec.merges));
  ATOMSERVE_RETURN_IF_ERROR(impl->CheckIds(spec));
  impl->unk_id_ = spec.unk_id;
  impl->bos_id_ = spec.bos_id;
  impl->eos_id_ = spec.eos_id;
  impl->add_bos_ = spec.add_bos;
  if (spec.eos_id >= 0) impl->stop_ids_.push_back(spec.eos_id);
  for (int32_t id : spec.extra_eos_ids)
    if (std::find(impl->stop_ids_.begin(), impl->stop_ids_.end(), id) == impl->stop_ids_.end())
      impl->stop_ids_.push_back(id);
  return impl;
}

absl::Status Tokenizer::Impl::BuildVocab(const TokenizerSpec& spec) {
  if (spec.tokens.empty()) return absl::InvalidArgumentError("tokenizer vocabulary is empty");
  if (!spec.token_types.empty() && spec.token_types.size() != spec.tokens.size())
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", spec.tokens.size(), " tokens but ",
                                                   spec.token_types.size(), " token types"));
  types_ = spec.token_types;
  types_.resize(spec.tokens.size(), TokenType::kNormal);
  ids_.reserve(spec.tokens.size());
  token_bytes_.reserve(spec.tokens.size());
  for (int32_t id = 0; id < static_cast<int32_t>(spec.tokens.size()); ++id) {
    const std::string& token = spec.tokens[id];
    token_bytes_.push_back(Alphabet().Decode(token));
    if (token.empty()) continue;
    ids_.try_emplace(token, id);  // the first id wins for a duplicated string
    if (types_[id] == TokenType::kControl || types_[id] == TokenType::kUserDefined)
      specials_.Add(token, id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = ids_.find(AbslView(Alphabet().Encode(static_cast<uint8_t>(b))));
    byte_ids_[b] = it == ids_.end() ? -1 : it->second;
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::BuildMerges(const std::vector<std::string>& merges) {
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    // "a b". Byte-level tokens never hold a real space, but try every space
    // so that a pair written from [a, b] with spaces inside still resolves.
    bool found = false;
    for (size_t sp = m.find(' '); sp != std::string::npos && !found; sp = m.find(' ', sp + 1)) {
      std::string_view left = std::string_view(m).substr(0, sp), right = std::string_view(m).substr(sp + 1);
      int32_t a = TokenId(left), b = TokenId(right);
      if (a < 0 || b < 0) continue;
      int32_t merged = TokenId(std::string(left) + std::string(right));
      if (merged < 0)
        return absl::InvalidArgumentError(
            absl::StrCat("merge ", rank, " ('", m, "'): result is not in the vocabulary"));
      // A repeated pair keeps its last rank, as HF's merge map does.
      merges_[PairKey(a, b)] = Merge{static_cast<int32_t>(rank), merged};
      found = true;
    }
    if (!found)
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " ('", m, "'): parts are not both in the vocabulary"));
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::CheckIds(const TokenizerSpec& spec) const {
  auto check = [&](const char* what, int32_t id) -> absl::Status {
    if (id < -1 || id >= vocab_size())
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer ", what, " id ", id, " is outside the vocabulary of ", vocab_size()));
    return absl::OkStatus();
  };
  ATOMSERVE_RETURN_IF_ERROR(check("bos", spec.bos_id));
  ATOMSERVE_RETURN_IF_ERROR(check("eos", spec.eos_id));
  ATOMSERVE_RETURN_IF_ERROR(check("unk", spec.unk_id));
  ATOMSERVE_RETURN_IF_ERROR(check("pad", spec.pad_id));
  for (int32_t id : spec.extra_eos_ids) {
    if (id < 0) return check("end-of-turn", -2);
    ATOMSERVE_RETURN_IF_ERROR(check("end-of-turn", id));
  }
  return absl::OkStatus();
}

int32_t Tokenizer::Impl::TokenId(std::string_view token) const {
  auto it = ids_.find(AbslView(token));
  return it == ids_.end() ? -1 : it->second;
}

std::vector<int32_t> Tokenizer::Impl::Encode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  Scratch scratch;
  if (!allow_special || specials_.empty()) {
    EncodeOrdinary(text, &scratch, &out);
    return out;
  }
  // Added tokens are cut out first; the text between them is pre-tokenized
  // on its own, so no pre-token spans a special token.
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    auto [len, id] = specials_.LongestAt(text, pos);
    if (len == 0) {
      ++pos;
      continue;
    }
    EncodeOrdinary(text.substr(start, pos - start), &scratch, &out);
    out.push_back(id);
    pos += len;
    start = pos;
  }
  EncodeOrdinary(text.substr(start), &scratch, &out);
  return out;
}

void Tokenizer::Impl::EncodeOrdinary(std::string_view text, Scratch* s, std::vector<int32_t>* out) const {
  if (text.empty()) return;
  for (std::string_view word : unicode::PreTokenize(pre_, text)) EncodeWord(word, s, out);
}

void Tokenizer::Impl::PushCandidate(const Scratch& s, int32_t pos, std::vector<Candidate>* heap) const {
  if (pos < 0) return;
  int32_t next = s.symbols[pos].next;
  if (next < 0) return;
  auto it = merges_.find(PairKey(s.symbols[pos].id, s.symbols[next].id));
  if (it == merges_.end()) return;
  heap->push_back({it->second.rank, pos, it->second.id});
  std::push_heap(heap->begin(), heap->end(), std::greater<>());
}

// BPE on one pre-token: start from one symbol per byte and repeatedly merge
// the adjacent pair of lowest rank (leftmost on ties) until none applies.
// Heap entries go stale as neighbours merge; they are checked when popped.
void Tokenizer::Impl::EncodeWord(std::string_view word, Scratch* s, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    s->word.clear();
    for (char ch : word) s->word += Alphabet().Encode(static_cast<uint8_t>(ch));
    auto it = ids_.find(AbslView(s->word));
    if (it != ids_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  std::vector<Symbol>& sym = s->symbols;
  sym.clear();
  for (char ch : word) {
    int32_t id = byte_ids_[static_cast<uint8_t>(ch)];
    if (id < 0) id = unk_id_;  // a vocabulary without this byte: unk, else drop
    if (id < 0) continue;
    int32_t pos = static_cast<int32_t>(sym.size());
    sym.push_back({id, pos - 1, -1});
    if (pos > 0) sym[pos - 1].next = pos;
  }
  std::vector<Candidate>& heap = s->heap;
  heap.clear();
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(sym.size()); ++pos) PushCandidate(*s, pos, &heap);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = sym[c.pos];
    if (left.id < 0 || left.next < 0) continue;
    auto it = merges_.find(PairKey(left.id, sym[left.next].id));
    if (it == merges_.end() || it->second.id != c.new_id || it->second.rank != c.rank) continue;
    Symbol& right = sym[left.next];
    left.id = c.new_id;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = c.pos;
    right.id = -1;
    PushCandidate(*s, left.prev, &heap);
    PushCandidate(*s, c.pos, &heap);
  }
  for (size_t pos = 0; pos < sym.size(); pos = sym[pos].next >= 0 ? sym[pos].next : sym.size())
    out->push_back(sym[pos].id);
}

std::string Tokenizer::Impl::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && IsSpecial(id)) continue;
    text += token_bytes_[id];
  }
  return text;
}

std::string Tokenizer::Impl::DecodeToken(int32_t id) const {
  return id >= 0 && id < vocab_size() ? token_bytes_[id] : std::string();
}

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerSpec& spec) {
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, Impl::Build(spec));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool allow_special) const {
  return impl_->Encode(text, allow_special);
}
std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  return impl_->Decode(ids, skip_special);
}
std::string Tokenizer::DecodeToken(int32_t id) const { return impl_->DecodeToken(id); }
int32_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }
int32_t Tokenizer::bos_id() const { return impl_->bos_id(); }
int32_t Tokenizer::eos_id() const { return impl_->eos_id(); }
bool Tokenizer::add_bos() const { return impl_->add_bos(); }
const std::vector<int32_t>& Tokenizer::stop_ids() const { return impl_->stop_ids(); }
bool Tokenizer::IsSpecial(int32_t id) const { return impl_->IsSpecial(id); }
int32_t Tokenizer::TokenId(std::string_view token) const { return impl_->TokenId(token); }

}  // namespace atomserve
