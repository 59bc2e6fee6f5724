// Generated tokens -> the text a client sees: pieces are joined as bytes, emitted only as whole
// UTF-8 characters, and held back while they could be the start of a stop string, so that a stop
// string is never sent and then taken back (OpenAI's `stop` semantics: the text ends before it).
#pragma once
#include <string>
#include <vector>

namespace leanlm {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop = {});
  // Adds a token's bytes; returns the text that can be sent now (possibly empty).
  std::string push(const std::string& piece);
  // True once a stop string appeared; the text sent so far ends right before it.
  bool stopped() const { return stopped_; }
  // The text still held back (an incomplete character or a partial stop string), at the end of a
  // generation that stopped for another reason; invalid UTF-8 bytes become U+FFFD.
  std::string flush();
  const std::string& text() const { return sent_; }  // everything sent so far

 private:
  std::vector<std::string> stop_;
  std::string pending_, sent_;
  bool stopped_ = false;
};

// Bytes of s up to the last complete UTF-8 character (a cut multi-byte sequence at the end is left out).
size_t utf8_complete_prefix(const std::string& s);
// s with every invalid UTF-8 sequence replaced by U+FFFD (JSON strings must be valid UTF-8).
std::string utf8_sanitize(const std::string& s);

}  // namespace leanlm
