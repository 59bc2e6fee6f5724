#include "engine/text_stream.h"

#include <algorithm>

namespace leanlm {

namespace {

// Length of the UTF-8 sequence a lead byte starts (0: not a lead byte).
int lead_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Length of the valid sequence at s[i], 0 if invalid, -1 if cut off by the end of s.
int valid_at(const std::string& s, size_t i) {
  const unsigned char c = s[i];
  const int n = lead_len(c);
  if (n == 0) return 0;
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return -1;
    const unsigned char d = s[i + k];
    unsigned char lo = 0x80, hi = 0xBF;  // second-byte limits exclude overlongs and surrogates
    if (k == 1 && c == 0xE0) lo = 0xA0;
    if (k == 1 && c == 0xED) hi = 0x9F;
    if (k == 1 && c == 0xF0) lo = 0x90;
    if (k == 1 && c == 0xF4) hi = 0x8F;
    if (d < lo || d > hi) return 0;
  }
  return n;
}

}  // namespace

size_t utf8_complete_prefix(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const int n = valid_at(s, i);
    if (n < 0) return i;  // a character cut by the end: wait for its other bytes
    i += n == 0 ? 1 : n;  // an invalid byte counts as complete (it is replaced when sent)
  }
  return i;
}

std::string utf8_sanitize(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const int n = valid_at(s, i);
    if (n > 0) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

TextStream::TextStream(std::vector<std::string> stop) {
  for (auto& s : stop)
    if (!s.empty()) stop_.push_back(std::move(s));
}

std::string TextStream::push(const std::string& piece) {
  if (stopped_) return {};
  pending_ += piece;
  // A stop string anywhere in the held-back text ends the generation right before it.
  size_t cut = std::string::npos;
  for (const auto& s : stop_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = utf8_sanitize(pending_.substr(0, cut));
    pending_.clear();
    sent_ += out;
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stop_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  const size_t ready = utf8_complete_prefix(pending_.substr(0, pending_.size() - hold));
  std::string out = utf8_sanitize(pending_.substr(0, ready));
  pending_.erase(0, ready);
  sent_ += out;
  return out;
}

std::string TextStream::flush() {
  if (stopped_) return {};
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  sent_ += out;
  return out;
}

}  // namespace leanlm
