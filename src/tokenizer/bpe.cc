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
    } else if (pre != "default" && pre != "gpt2" && pre != "smollm") {
      std::fprintf(stderr, "warning: %s: unknown pre-tokenizer '%s', using GPT-2's\n", f.path().c_str(), pre.c_str());
    }
    int err;
    PCRE2_SIZE off;
    re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                        &off, nullptr);
    if (!re_) fail("internal error: pre-tokenizer regex does not compile");
    pcre2_jit_compile(re_, PCRE2_JIT_COMPLETE);
  }
  ~BpeTokenizer() override { pcre2_code_free(re_); }

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

  void encode_fragment(const std::string& text, bool, std::vector<int>& out) const override {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_, nullptr);
    size_t pos = 0;
    while (pos < text.size()) {
      int rc = pcre2_match(re_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0, md, nullptr);
      if (rc < 0) {  // no match (invalid UTF-8 also lands here): the rest is one word
        encode_word(text.substr(pos), out);
        break;
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[0] > pos) encode_word(text.substr(pos, ov[0] - pos), out);
      if (ov[1] == ov[0]) {  // empty match: step one character
        const size_t l = std::min(utf8_len(static_cast<unsigned char>(text[ov[0]])), text.size() - ov[0]);
        encode_word(text.substr(ov[0], l), out);
        pos = ov[0] + l;
        continue;
      }
      encode_word(text.substr(ov[0], ov[1] - ov[0]), out);
      pos = ov[1];
    }
    pcre2_match_data_free(md);
  }

 private:
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
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const GgufFile& f) { return std::make_unique<BpeTokenizer>(f); }

}  // namespace leanlm
