#include "runtime/unicode.h"

#include <algorithm>
#include <array>

namespace atomserve::unicode {
namespace {

struct CharRange {
  uint32_t first;
  uint32_t last;
  CharClass cls;
};

#include "runtime/unicode_tables.inc"

CharClass SearchRanges(uint32_t cp) {
  // First range whose last >= cp; cp is inside it or in no range at all.
  const CharRange* end = std::end(kCharRanges);
  const CharRange* it = std::lower_bound(std::begin(kCharRanges), end, cp,
                                         [](const CharRange& r, uint32_t v) { return r.last < v; });
  return (it != end && it->first <= cp) ? it->cls : CharClass::kOther;
}

// Latin-1 is most of the traffic; a direct table avoids the binary search.
const std::array<CharClass, 256>& Latin1Classes() {
  static const std::array<CharClass, 256> table = [] {
    std::array<CharClass, 256> t{};
    for (uint32_t cp = 0; cp < 256; ++cp) t[cp] = SearchRanges(cp);
    return t;
  }();
  return table;
}

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// ---------------------------------------------------------------------------
// Pre-tokenizer scanners.
//
// Each Match* function mirrors one regular expression as a backtracking regex
// engine runs it (Oniguruma in HF tokenizers): at position i the alternatives
// are tried in order and the first that matches wins; quantifiers are greedy.
// They return the end (exclusive, in characters) of the match starting at i,
// never looking at characters at or past n (the end of the text being split).
// Every character is matched by some alternative, so there are no gaps.

struct Char {
  uint32_t cp;
  CharClass cls;
  size_t begin;  // byte offset in the text
};

// Decodes text into characters plus a sentinel holding text.size().
std::vector<Char> DecodeChars(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    size_t len = DecodeUtf8(text, pos, &cp);
    chars.push_back({cp, ClassOf(cp), pos});
    pos += len;
  }
  chars.push_back({0, CharClass::kOther, text.size()});
  return chars;
}

size_t RunEnd(const Char* c, size_t i, size_t n, CharClass cls) {
  while (i < n && c[i].cls == cls) ++i;
  return i;
}

bool IsCrLf(uint32_t cp) { return cp == '\r' || cp == '\n'; }

// Does c[i] equal the ASCII letter `lower`? With ignore_case also its upper
// case, and U+017F LATIN SMALL LETTER LONG S for 's' (Unicode case folding:
// the only non-ASCII character that folds onto one of the contraction letters).
bool LetterIs(const Char* c, size_t i, size_t n, char lower, bool ignore_case) {
  if (i >= n) return false;
  uint32_t cp = c[i].cp;
  if (cp == static_cast<uint32_t>(lower)) return true;
  if (!ignore_case) return false;
  return cp == static_cast<uint32_t>(lower - 'a' + 'A') || (lower == 's' && cp == 0x017F);
}

// 's|'t|'re|'ve|'m|'ll|'d starting at c[i] == '\''; returns the match end or
// i when none applies.
size_t MatchContraction(const Char* c, size_t i, size_t n, bool ignore_case) {
  if (c[i].cp != '\'') return i;
  auto is = [&](size_t k, char ch) { return LetterIs(c, k, n, ch, ignore_case); };
  size_t j = i + 1;
  if (is(j, 's') || is(j, 't') || is(j, 'm') || is(j, 'd')) return j + 1;
  if ((is(j, 'r') && is(j + 1, 'e')) || (is(j, 'v') && is(j + 1, 'e')) ||
      (is(j, 'l') && is(j + 1, 'l')))
    return j + 2;
  return i;
}

// \s+(?!\S)|\s+ at a whitespace character. A run followed by a non-space
// gives its last character back (so " word" keeps its space) unless the run is
// a single character, which the plain \s+ then takes.
size_t MatchWhitespace(const Char* c, size_t i, size_t n) {
  size_t end = RunEnd(c, i, n, CharClass::kSpace);
  if (end == n || end - i == 1) return end;
  return end - 1;
}

size_t MatchGpt2(const Char* c, size_t i, size_t n) {
  if (size_t j = MatchContraction(c, i, n, /*ignore_case=*/false); j != i) return j;
  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional literal space
  // then a run of one class.
  size_t j = i;
  if (c[j].cp == ' ' && j + 1 < n && c[j + 1].cls != CharClass::kSpace) ++j;
  if (c[j].cls != CharClass::kSpace) return RunEnd(c, j, n, c[j].cls);
  return MatchWhitespace(c, i, n);
}

size_t MatchLlama3(const Char* c, size_t i, size_t n) {
  if (size_t j = MatchContraction(c, i, n, /*ignore_case=*/true); j != i) return j;
  const CharClass cls = c[i].cls;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (cls == CharClass::kLetter) return RunEnd(c, i, n, CharClass::kLetter);
  if (cls != CharClass::kNumber && !IsCrLf(c[i].cp) && i + 1 < n && c[i + 1].cls == CharClass::kLetter)
    return RunEnd(c, i + 1, n, CharClass::kLetter);
  // \p{N}{1,3}
  if (cls == CharClass::kNumber) {
    size_t j = i;
    while (j < n && j - i < 3 && c[j].cls == CharClass::kNumber) ++j;
    return j;
  }
  // " ?[^\s\p{L}\p{N}]+[\r\n]*"
  size_t j = i;
  if (c[j].cp == ' ' && j + 1 < n && c[j + 1].cls == CharClass::kOther) ++j;
  if (c[j].cls == CharClass::kOther) {
    j = RunEnd(c, j, n, CharClass::kOther);
    while (j < n && IsCrLf(c[j].cp)) ++j;
    return j;
  }
  // c[i] is whitespace. \s*[\r\n]+: the greedy \s* backs off to the last
  // CR/LF of the run, which [\r\n]+ then takes (nothing after it is CR/LF).
  size_t end = RunEnd(c, i, n, CharClass::kSpace);
  for (size_t k = end; k > i; --k)
    if (IsCrLf(c[k - 1].cp)) return k;
  return MatchWhitespace(c, i, n);
}

using Matcher = size_t (*)(const Char*, size_t, size_t);

// Appends the pieces of characters [begin, end) as matched by `match`.
void SplitRange(std::string_view text, const std::vector<Char>& chars, size_t begin, size_t end,
                Matcher match, std::vector<std::string_view>* out) {
  const Char* c = chars.data();
  for (size_t i = begin; i < end;) {
    size_t j = match(c, i, end);
    out->push_back(text.substr(c[i].begin, c[j].begin - c[i].begin));
    i = j;
  }
}

}  // namespace

const char* TablesVersion() { return ATOMSERVE_UNICODE_VERSION; }

CharClass ClassOf(uint32_t cp) {
  if (cp < 256) return Latin1Classes()[cp];
  if (cp > 0x10FFFF) return CharClass::kOther;
  return SearchRanges(cp);
}

size_t DecodeUtf8(std::string_view s, size_t pos, uint32_t* cp) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + pos;
  const size_t avail = s.size() - pos;
  const uint8_t b0 = p[0];
  *cp = kInvalidCodepoint;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  // Length and the allowed range of the second byte (Unicode Table 3-7):
  // these bounds exclude overlong forms, surrogates and values > U+10FFFF.
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 1;  // continuation byte, C0/C1 or F5..FF
  }
  if (avail < len || p[1] < lo || p[1] > hi) return 1;
  for (size_t k = 2; k < len; ++k)
    if (!IsContinuation(p[k])) return 1;
  uint32_t v = b0 & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) v = (v << 6) | (p[k] & 0x3F);
  *cp = v;
  return len;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    uint32_t cp;
    pos += DecodeUtf8(s, pos, &cp);
    if (cp == kInvalidCodepoint) return false;
  }
  return true;
}

std::optional<PreTokenizer> ParsePreTokenizer(std::string_view name) {
  if (name == "gpt2") return PreTokenizer::kGpt2;
  if (name == "smollm") return PreTokenizer::kSmollm;
  if (name == "llama3") return PreTokenizer::kLlama3;
  return std::nullopt;
}

std::vector<std::string_view> PreTokenize(PreTokenizer family, std::string_view text) {
  std::vector<Char> chars = DecodeChars(text);
  const size_t n = chars.size() - 1;
  std::vector<std::string_view> pieces;
  pieces.reserve(text.size() / 4 + 1);
  switch (family) {
    case PreTokenizer::kGpt2:
      SplitRange(text, chars, 0, n, MatchGpt2, &pieces);
      break;
    case PreTokenizer::kLlama3:
      SplitRange(text, chars, 0, n, MatchLlama3, &pieces);
      break;
    case PreTokenizer::kSmollm:
      // Digits first: each number character stands alone and the gpt2 pattern
      // runs separately on the stretches between them.
      for (size_t i = 0; i < n;) {
        if (chars[i].cls == CharClass::kNumber) {
          SplitRange(text, chars, i, i + 1, MatchGpt2, &pieces);
          ++i;
          continue;
        }
        size_t j = i;
        while (j < n && chars[j].cls != CharClass::kNumber) ++j;
        SplitRange(text, chars, i, j, MatchGpt2, &pieces);
        i = j;
      }
      break;
  }
  return pieces;
}

}  // namespace atomserve::unicode
