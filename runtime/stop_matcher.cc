#include "runtime/stop_matcher.h"

#include <algorithm>

namespace atomserve {

size_t CompleteUtf8Prefix(const std::string& s) {
  // Look at most 3 bytes back for the lead byte of an unfinished sequence.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

bool StopMatcher::Append(const std::string& bytes) {
  text_ += bytes;
  for (const std::string& s : stops_) {
    if (s.empty()) continue;
    // A new match can only start near the end of the text.
    size_t from = text_.size() >= bytes.size() + s.size() ? text_.size() - bytes.size() - s.size() + 1 : 0;
    size_t pos = text_.find(s, from);
    if (pos != std::string::npos) {
      text_.resize(pos);
      Flush(text_.size());
      return true;
    }
  }
  Flush(SafeLength());
  return false;
}

// Bytes that can be shown: complete UTF-8, and not a possible stop prefix.
size_t StopMatcher::SafeLength() const {
  size_t safe = CompleteUtf8Prefix(text_);
  for (const std::string& s : stops_) {
    for (size_t len = std::min(s.size() - 1, text_.size()); len > 0; --len) {
      if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
        safe = std::min(safe, text_.size() - len);
        break;
      }
    }
  }
  return std::max(safe, emitted_);
}

void StopMatcher::Flush(size_t upto) {
  if (upto > emitted_ && cb_) cb_(text_.substr(emitted_, upto - emitted_));
  emitted_ = std::max(emitted_, upto);
}

}  // namespace atomserve
