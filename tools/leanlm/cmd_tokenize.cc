// leanlm tokenize: text to token ids (JSON), for inspecting and testing tokenizers.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.h"
#include "gguf/gguf.h"

namespace leanlm::cli {

void add_tokenize(CLI::App& app) {
  struct Flags {
    std::string model, prompt, file;
    bool no_bos = false, no_special = false, pieces = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* c = app.add_subcommand("tokenize", "print the token ids of a text as JSON");
  c->add_option("-m,--model", f->model, kModelHelp);
  auto* p = c->add_option("-p,--prompt", f->prompt, "text");
  auto* pf = c->add_option("-f,--file", f->file, "read the text from a file");
  p->excludes(pf);
  c->add_flag("--no-bos", f->no_bos, "do not add BOS");
  c->add_flag("--no-special", f->no_special, "do not parse control tokens in the text");
  c->add_flag("--pieces", f->pieces, "print [id, piece] pairs");
  c->callback([f, p, pf] {
    if (p->count() == 0 && pf->count() == 0) throw CLI::RequiredError("--prompt or --file");
    std::string text = f->prompt;
    if (!f->file.empty()) {
      text = read_text_file(f->file);
    }
    auto file = GgufFile::open(model_path(f->model));
    auto tok = Tokenizer::from_gguf(*file);
    const std::vector<int> ids = tok->encode(text, !f->no_bos, !f->no_special);
    nlohmann::json out = nlohmann::json::array();
    for (int id : ids) {
      if (f->pieces) out.push_back({id, tok->token_to_piece(id, true)});
      else out.push_back(id);
    }
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  });
}

}  // namespace leanlm::cli
