// SentencePiece-style tokenization (GGUF tokenizer model "llama"): the text's spaces become U+2581,
// then adjacent pieces are merged greedily, always taking the pair whose merged piece has the
// highest score (leftmost on ties); pieces left without a vocabulary entry fall back to byte tokens.
#include <queue>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace leanlm {

namespace {

const std::string kSpace = "\xE2\x96\x81";  // U+2581


class SpmTokenizer : public Tokenizer {
 public:
  SpmTokenizer() { kind_ = Kind::Spm; }

 protected:
  std::string normal_piece(int id) const override {
    std::string s = tokens_[id];
    std::string out;
    for (size_t i = 0; i < s.size();) {
      if (s.compare(i, 3, kSpace) == 0) {
        out += ' ';
        i += 3;
      } else {
        out += s[i++];
      }
    }
    return out;
  }

  void encode_fragment(const std::string& raw, bool after_special, std::vector<int>& out) const override {
    std::string text;
    if (add_space_prefix_ && after_special) text = kSpace;
    for (char c : raw) {
      if (c == ' ') text += kSpace;
      else text += c;
    }
    if (text.empty()) return;

    // Linked list of symbols (byte ranges of text), initially one per UTF-8 character.
    struct Sym { int prev, next; size_t start, len; };
    std::vector<Sym> syms;
    for (size_t i = 0; i < text.size();) {
      size_t l = std::min(utf8_len(static_cast<unsigned char>(text[i])), text.size() - i);
      syms.push_back({int(syms.size()) - 1, int(syms.size()) + 1, i, l});
      i += l;
    }
    syms.back().next = -1;

    struct Bigram {
      int left, right;
      float score;
      size_t len;
      bool operator<(const Bigram& o) const {  // max-heap: higher score first, then leftmost
        return score < o.score || (score == o.score && left > o.left);
      }
    };
    std::priority_queue<Bigram> queue;
    auto try_add = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const size_t len = syms[left].len + syms[right].len;
      auto it = index_.find(text.substr(syms[left].start, len));
      if (it == index_.end()) return;
      queue.push({left, right, scores_[it->second], len});
    };
    for (size_t i = 1; i < syms.size(); ++i) try_add(int(i) - 1, int(i));

    while (!queue.empty()) {
      Bigram b = queue.top();
      queue.pop();
      Sym& l = syms[b.left];
      Sym& r = syms[b.right];
      if (l.len == 0 || r.len == 0 || l.len + r.len != b.len || l.next != b.right) continue;  // stale
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = b.left;
      try_add(l.prev, b.left);
      try_add(b.left, l.next);
    }

    for (int i = 0; i >= 0; i = syms[i].next) {
      const std::string piece = text.substr(syms[i].start, syms[i].len);
      auto it = index_.find(piece);
      if (it != index_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (unsigned char c : piece) {  // byte fallback
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", c);
        int id = find(name);
        if (id >= 0) out.push_back(id);
        else if (unk_ >= 0) out.push_back(unk_);
      }
    }
  }
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer() { return std::make_unique<SpmTokenizer>(); }

}  // namespace leanlm
