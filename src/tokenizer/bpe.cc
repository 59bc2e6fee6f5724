// Byte-level BPE (GGUF tokenizer model "gpt2": Llama 3, Qwen2, SmolLM): a pre-tokenizer regex cuts
// the text into words; each word's bytes are mapped to printable code points and merged pair by
// pair in the order of the merges list (lowest rank first).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <climits>
#include <cstdio>
#include <map>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace leanlm {

namespace {

// Pre-tokenizer patterns, as published in the models' tokenizer configurations.
const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* kLlama3Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const std::string kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) s += char(cp);
  else if (cp < 0x800) { s += char(0xC0 | (cp >> 6)); s += char(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12)); s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18)); s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F));
  }
}


class BpeTokenizer : public Tokenizer {
 public:
  explicit BpeTokenizer(const GgufFile& f) {
    kind_ = Kind::Bpe;
    // GPT-2's byte <-> code point table: printable Latin-1 bytes map to themselves, the rest to
    // 256 + n in byte order.
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? b : 256 + n++;
      append_utf8(byte_to_cp_[b], cp);
      cp_to_byte_[byte_to_cp_[b]] = char(b);
    }
    const GgufValue* merges = f.find("tokenizer.ggml.merges");
    if (!merges || !merges->is_array() || merges->elem_type != GgufType::STRING)
      fail(f.path() + ": BPE tokenizer without tokenizer.ggml.merges");
    for (size_t r = 0; r < merges->strs.size(); ++r) {
      const std::string& m = merges->strs[r];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) fail(f.path() + ": malformed BPE merge '" + m + "'");
      ranks_.emplace(m.substr(0, sp) + '\x01' + m.substr(sp + 1), int(r));
    }
    const std::string pre = f.get_string("tokenizer.ggml.pre", "default");
    const char* pattern = kGpt2Pattern;
    if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe") {
      pattern = kLlama3Pattern;
      ignore_merges_ = true;
    } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
      pattern = kQwen2Pattern;
    } else if (pre == "smollm") {
      // SmolLM's pre-tokenizer splits every digit off first, then applies GPT-2's regex to each
      // piece on its own: "\n\n1" is "\n\n" + "1" (with the regex over the whole text, the
      // lookahead of \s+(?!\S) would see the digit and split the newlines in two).
      digits_first_ = true;
    } else if (pre != "default" && pre != "gpt2") {
      std::fprintf(stderr, "warning: %s: unknown pre-tokenizer '%s', using GPT-2's\n", f.path().c_str(), pre.c_str());
    }
    int err;
    PCRE2_SIZE off;
    re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                        &off, nullptr);
    if (!re_) fail("internal error: pre-tokenizer regex does not compile");
    pcre2_jit_compile(re_, PCRE2_JIT_COMPLETE);
    if (digits_first_) {
      digit_re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(R"(\p{N})"), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                &err, &off, nullptr);
      if (!digit_re_) fail("internal error: digit regex does not compile");
      pcre2_jit_compile(digit_re_, PCRE2_JIT_COMPLETE);
    }
  }
  ~BpeTokenizer() override {
    pcre2_code_free(re_);
    pcre2_code_free(digit_re_);
  }

 protected:
  std::string normal_piece(int id) const override {
    const std::string& t = tokens_[id];
    std::string out;
    for (size_t i = 0; i < t.size();) {
      const size_t l = std::min(utf8_len(static_cast<unsigned char>(t[i])), t.size() - i);
      auto it = cp_to_byte_.find(t.substr(i, l));
      if (it != cp_to_byte_.end()) out += it->second;
      else out += t.substr(i, l);
      i += l;
    }
    return out;
  }

  // The regex runs over maximal runs of valid UTF-8 with PCRE2_NO_UTF_CHECK: without it PCRE2
  // validates the whole rest of the subject at every match, which made a 1 MB text take minutes
  // (quadratic). Each byte that is not part of valid UTF-8 becomes U+FFFD, as in llama.cpp.
  void encode_fragment(const std::string& text, bool, std::vector<int>& out) const override {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_, nullptr);
    if (valid_utf8_run(text, 0) == text.size()) {
      encode_valid(text, 0, text.size(), md, out);
    } else {
      std::string clean;
      for (size_t pos = 0; pos < text.size();) {
        const size_t end = valid_utf8_run(text, pos);
        clean.append(text, pos, end - pos);
        if (end < text.size()) clean += kReplacementChar;
        pos = end + 1;
      }
      encode_valid(clean, 0, clean.size(), md, out);
    }
    pcre2_match_data_free(md);
  }

 private:
  // End of the longest run of well-formed UTF-8 starting at pos (RFC 3629: no overlong forms,
  // surrogates or code points above U+10FFFF).
  static size_t valid_utf8_run(const std::string& s, size_t pos) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    while (pos < n) {
      const unsigned char c = p[pos];
      size_t len;
      unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
      if (c < 0x80) len = 1;
      else if (c >= 0xC2 && c <= 0xDF) len = 2;
      else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
      else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
      else return pos;
      if (pos + len > n) return pos;
      if (len > 1 && (p[pos + 1] < lo || p[pos + 1] > hi)) return pos;
      for (size_t k = 2; k < len; ++k)
        if ((p[pos + k] & 0xC0) != 0x80) return pos;
      pos += len;
    }
    return pos;
  }

  // Pre-tokenizes text[begin, end) (valid UTF-8) and encodes each piece; with digits_first_, every
  // digit is a piece of its own and the regex sees the text between digits one stretch at a time.
  void encode_valid(const std::string& text, size_t begin, size_t end, pcre2_match_data* md,
                    std::vector<int>& out) const {
    if (!digits_first_) return encode_regex(text, begin, end, md, out);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = begin;
    while (pos < end) {
      const int rc = pcre2_match(digit_re_, subject, end, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t d0 = rc < 0 ? end : ov[0], d1 = rc < 0 ? end : ov[1];
      if (d0 > pos) encode_regex(text, pos, d0, md, out);
      if (d1 > d0) encode_word(text.substr(d0, d1 - d0), out);
      pos = d1;
    }
  }

  void encode_regex(const std::string& text, size_t begin, size_t end, pcre2_match_data* md,
                    std::vector<int>& out) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data()) + begin;
    const size_t len = end - begin;
    size_t pos = 0;
    while (pos < len) {
      const int rc = pcre2_match(re_, subject, len, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) {  // no match: the rest is one word
        encode_word(text.substr(begin + pos, len - pos), out);
        break;
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[0] > pos) encode_word(text.substr(begin + pos, ov[0] - pos), out);
      if (ov[1] == ov[0]) {  // empty match: step one character
        const size_t l = std::min(utf8_len(static_cast<unsigned char>(text[begin + ov[0]])), len - ov[0]);
        encode_word(text.substr(begin + ov[0], l), out);
        pos = ov[0] + l;
        continue;
      }
      encode_word(text.substr(begin + ov[0], ov[1] - ov[0]), out);
      pos = ov[1];
    }
  }

  void encode_word(const std::string& word, std::vector<int>& out) const {
    std::vector<std::string> syms;
    std::string mapped;
    for (unsigned char c : word) {
      syms.push_back(byte_to_cp_[c]);
      mapped += byte_to_cp_[c];
    }
    if (ignore_merges_) {
      int id = find(mapped);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    while (syms.size() > 1) {
      int best = INT_MAX;
      size_t at = 0;
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        auto it = ranks_.find(syms[i] + '\x01' + syms[i + 1]);
        if (it != ranks_.end() && it->second < best) {
          best = it->second;
          at = i;
        }
      }
      if (best == INT_MAX) break;
      syms[at] += syms[at + 1];
      syms.erase(syms.begin() + at + 1);
    }
    for (const std::string& s : syms) {
      int id = find(s);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      // Not in the vocabulary: one token per byte if the byte symbols exist.
      for (size_t i = 0; i < s.size();) {
        const size_t l = std::min(utf8_len(static_cast<unsigned char>(s[i])), s.size() - i);
        int bid = find(s.substr(i, l));
        if (bid >= 0) out.push_back(bid);
        else if (unk_ >= 0) out.push_back(unk_);
        i += l;
      }
    }
  }

  std::string byte_to_cp_[256];
  std::map<std::string, char> cp_to_byte_;
  std::unordered_map<std::string, int> ranks_;
  bool ignore_merges_ = false;
  pcre2_code* re_ = nullptr;
  pcre2_code* digit_re_ = nullptr;  // SmolLM: digits split off before the regex
  bool digits_first_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const GgufFile& f) { return std::make_unique<BpeTokenizer>(f); }

}  // namespace leanlm
