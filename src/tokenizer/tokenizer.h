// Tokenizers built from GGUF metadata: SentencePiece-style ("llama": Gemma, Llama 2) and byte-level
// BPE ("gpt2": Llama 3, Qwen2), with special-token splitting and byte fallback.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace leanlm {

class GgufFile;

// Bytes in the UTF-8 sequence that starts with c (1 for an invalid lead byte).
inline size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;
}

enum class TokenType { Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

class Tokenizer {
 public:
  enum class Kind { Spm, Bpe };

  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);
  virtual ~Tokenizer();

  // Text -> ids. add_bos follows the model's metadata when true; parse_special lets control
  // tokens written in the text (e.g. "<start_of_turn>") become their ids.
  std::vector<int> encode(const std::string& text, bool add_bos, bool parse_special) const;
  // The text of one token; control tokens render as "" unless special is set.
  std::string token_to_piece(int id, bool special = false) const;
  std::string decode(const std::vector<int>& ids, bool special = false) const;

  int n_vocab() const { return int(tokens_.size()); }
  int bos() const { return bos_; }
  int eos() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  bool is_eog(int id) const;  // end of generation: EOS, EOT, <end_of_turn>, <|im_end|> ...
  int find(const std::string& text) const;  // -1 if absent
  const std::string& text(int id) const { return tokens_[id]; }
  TokenType type(int id) const { return types_[id]; }
  Kind kind() const { return kind_; }
  const std::string& pre() const { return pre_; }
  const std::string& chat_template() const { return chat_template_; }

 protected:
  Tokenizer() = default;
  // Tokenizes a fragment containing no special tokens.
  // after_special: the fragment starts the text or follows a special token.
  virtual void encode_fragment(const std::string& text, bool after_special, std::vector<int>& out) const = 0;
  // The bytes a normal token stands for.
  virtual std::string normal_piece(int id) const = 0;

  Kind kind_ = Kind::Spm;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::unordered_map<std::string, int> index_;
  std::vector<int> specials_;  // control / user-defined / unknown, longest text first
  std::vector<int> eog_;
  int bos_ = -1, eos_ = -1, unk_ = -1;
  bool add_bos_ = false;
  bool add_space_prefix_ = false;
  std::string pre_;
  std::string chat_template_;
};

// Constructors of the concrete tokenizers (spm.cc, bpe.cc).
std::unique_ptr<Tokenizer> make_spm_tokenizer();
std::unique_ptr<Tokenizer> make_bpe_tokenizer(const GgufFile& f);

// ---- chat formatting (chat.cc) ----
struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};
enum class ChatFormat { Gemma, Llama3, ChatML, Llama2 };
ChatFormat detect_chat_format(const Tokenizer& tok, const std::string& arch);
const char* chat_format_name(ChatFormat f);
// Renders messages and (if add_generation_prompt) the opening of the assistant's turn.
std::string format_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_generation_prompt);

}  // namespace leanlm
