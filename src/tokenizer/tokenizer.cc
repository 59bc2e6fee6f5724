#include "tokenizer/tokenizer.h"

#include <string_view>


#include <algorithm>
#include <cctype>

#include "gguf/gguf.h"
#include "util/error.h"

namespace leanlm {

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  std::unique_ptr<Tokenizer> t;
  if (model == "llama") t = make_spm_tokenizer();
  else if (model == "gpt2") t = make_bpe_tokenizer(f);
  else fail(f.path() + ": unsupported tokenizer model '" + model + "' (supported: llama, gpt2)");

  const GgufValue* toks = f.find("tokenizer.ggml.tokens");
  if (!toks || !toks->is_array() || toks->elem_type != GgufType::STRING || toks->strs.empty())
    fail(f.path() + ": missing or invalid tokenizer.ggml.tokens");
  t->tokens_ = toks->strs;
  const size_t n = t->tokens_.size();
  t->scores_.assign(n, 0.f);
  if (const GgufValue* s = f.find("tokenizer.ggml.scores")) {
    if (!s->is_array() || s->nums.size() != n) fail(f.path() + ": tokenizer.ggml.scores has the wrong size");
    for (size_t i = 0; i < n; ++i) t->scores_[i] = float(s->nums[i]);
  }
  t->types_.assign(n, TokenType::Normal);
  if (const GgufValue* s = f.find("tokenizer.ggml.token_type")) {
    if (!s->is_array() || s->nums.size() != n) fail(f.path() + ": tokenizer.ggml.token_type has the wrong size");
    for (size_t i = 0; i < n; ++i) t->types_[i] = TokenType(int(s->nums[i]));
  }
  t->index_.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) t->index_.emplace(t->tokens_[i], int(i));

  auto id_key = [&](const char* key, int def) {
    int64_t v = f.get_int(key, def);
    if (v >= int64_t(n)) fail(f.path() + ": " + key + " is out of range");
    return int(v);
  };
  t->bos_ = id_key("tokenizer.ggml.bos_token_id", -1);
  t->eos_ = id_key("tokenizer.ggml.eos_token_id", -1);
  t->unk_ = id_key("tokenizer.ggml.unknown_token_id", -1);
  t->add_bos_ = f.get_bool("tokenizer.ggml.add_bos_token", t->kind_ == Kind::Spm) && t->bos_ >= 0;
  t->add_space_prefix_ = f.get_bool("tokenizer.ggml.add_space_prefix", t->kind_ == Kind::Spm);
  t->pre_ = f.get_string("tokenizer.ggml.pre", "default");
  t->chat_template_ = f.get_string("tokenizer.chat_template", "");
  if (t->unk_ < 0 && t->kind_ == Kind::Spm) t->unk_ = t->find("<unk>");

  for (size_t i = 0; i < n; ++i) {
    const TokenType ty = t->types_[i];
    if ((ty == TokenType::Control || ty == TokenType::UserDefined || ty == TokenType::Unknown) &&
        !t->tokens_[i].empty())
      t->specials_.push_back(int(i));
  }
  std::stable_sort(t->specials_.begin(), t->specials_.end(),
                   [&](int a, int b) { return t->tokens_[a].size() > t->tokens_[b].size(); });

  if (t->eos_ >= 0) t->eog_.push_back(t->eos_);
  int eot = id_key("tokenizer.ggml.eot_token_id", -1);
  if (eot >= 0) t->eog_.push_back(eot);
  for (const char* s : {"<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|eom_id|>"}) {
    int id = t->find(s);
    if (id >= 0 && t->types_[id] == TokenType::Control) t->eog_.push_back(id);
  }
  return t;
}

int Tokenizer::find(const std::string& text) const {
  auto it = index_.find(text);
  return it == index_.end() ? -1 : it->second;
}

bool Tokenizer::is_eog(int id) const { return std::find(eog_.begin(), eog_.end(), id) != eog_.end(); }

std::vector<int> Tokenizer::encode(const std::string& text, bool add_bos, bool parse_special) const {
  // Split the text on special tokens (longest first); user-defined tokens always split, control
  // tokens only when parse_special is set.
  struct Frag { bool is_token; int id; size_t begin, len; };
  std::vector<Frag> frags{{false, -1, 0, text.size()}};
  for (int sid : specials_) {
    if (types_[sid] != TokenType::UserDefined && !parse_special) continue;
    const std::string& st = tokens_[sid];
    std::vector<Frag> next;
    for (const Frag& fr : frags) {
      if (fr.is_token) {
        next.push_back(fr);
        continue;
      }
      size_t pos = fr.begin;
      const size_t end = fr.begin + fr.len;
      const std::string_view all(text);
      while (pos < end) {
        // searched within the fragment only: a search to the end of the text from every fragment
        // was quadratic (minutes for a few MB of text with Gemma's many user-defined tokens)
        const size_t rel = all.substr(pos, end - pos).find(st);
        if (rel == std::string_view::npos) break;
        const size_t hit = pos + rel;
        if (hit > pos) next.push_back({false, -1, pos, hit - pos});
        next.push_back({true, sid, hit, st.size()});
        pos = hit + st.size();
      }
      if (pos < end) next.push_back({false, -1, pos, end - pos});
    }
    frags.swap(next);
  }

  std::vector<int> out;
  if (add_bos && add_bos_) out.push_back(bos_);
  bool after_special = true;  // the text start counts as following a special token
  for (const Frag& fr : frags) {
    if (fr.is_token) out.push_back(fr.id);
    else encode_fragment(text.substr(fr.begin, fr.len), after_special, out);
    after_special = fr.is_token;
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int>& ids, bool special) const {
  std::string s;
  for (int id : ids) s += token_to_piece(id, special);
  return s;
}

}  // namespace leanlm

namespace leanlm {

std::string Tokenizer::token_to_piece(int id, bool special) const {
  if (id < 0 || id >= n_vocab()) return "";
  switch (types_[id]) {
    case TokenType::Control:
    case TokenType::Unknown:
    case TokenType::Unused: return special ? tokens_[id] : "";
    case TokenType::UserDefined: return tokens_[id];
    case TokenType::Byte: {
      const std::string& t = tokens_[id];  // "<0xAB>"
      auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
      // A malformed byte token (a damaged vocabulary) decodes as its text rather than throwing.
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>')
        return std::string(1, char(std::stoi(t.substr(3, 2), nullptr, 16)));
      return t;
    }
    default: return normal_piece(id);
  }
}

}  // namespace leanlm
