// leanlm chat: an interactive conversation in the model's chat format. Earlier turns stay in the
// KV cache; each new turn only feeds its own tokens.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "common.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

struct ChatFlags {
  EngineFlags eng;
  std::string system;
  int n_predict = 512;
  SamplerOptions samp;
};

void chat(const ChatFlags& f) {
  Engine engine(f.eng.resolve(true));
  const Tokenizer& tok = engine.tokenizer();
  const ChatFormat fmt = detect_chat_format(tok, engine.model().config().arch);
  auto seq = engine.new_sequence();
  Sampler sampler(f.samp);
  std::vector<int> history;
  bool first = true;
  const bool tty = isatty(0);
  std::fprintf(stderr, "chat format %s; end with Ctrl-D or /exit\n", chat_format_name(fmt));
  std::string line;
  while (true) {
    if (tty) std::fputs("> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    std::vector<ChatMessage> msgs;
    if (first && !f.system.empty()) msgs.push_back({"system", f.system});
    msgs.push_back({"user", line});
    // Earlier turns are already in the cache: render only this turn (plus the end of the last reply).
    std::string text = format_chat(fmt, msgs, true);
    std::vector<int> ids = tok.encode(text, first, true);
    first = false;
    if (seq->n_past + ids.size() + 1 >= size_t(seq->max_ctx))
      fail(strfmt("the conversation no longer fits the context (%d tokens); start again with a larger -c", seq->max_ctx));
    const float* logits = engine.feed(*seq, ids);
    history.insert(history.end(), ids.begin(), ids.end());
    const double t0 = now_seconds();
    int n = 0;
    int last = -1;
    while (n < f.n_predict && seq->n_past + 1 < seq->max_ctx) {
      last = sampler.sample(logits, engine.n_vocab(), history);
      history.push_back(last);
      ++n;
      logits = engine.feed(*seq, {last});  // the end-of-turn token is kept in the cache too
      if (tok.is_eog(last)) break;
      std::fputs(tok.token_to_piece(last).c_str(), stdout);
      std::fflush(stdout);
    }
    std::fputs("\n", stdout);
    if (fmt == ChatFormat::Gemma && tok.is_eog(last)) {
      // Gemma's template puts a newline after <end_of_turn>.
      const std::vector<int> nl = tok.encode("\n", false, false);
      engine.feed(*seq, nl);
      history.insert(history.end(), nl.begin(), nl.end());
    }
    std::fprintf(stderr, "[%d tokens, %.1f tok/s, context %d/%d]\n", n, n / (now_seconds() - t0), seq->n_past,
                 engine.options().ctx);
  }
}

}  // namespace

void add_chat(CLI::App& app) {
  auto f = std::make_shared<ChatFlags>();
  CLI::App* c = app.add_subcommand("chat", "interactive chat in the model's chat format");
  f->eng.add(c, 4096);
  c->add_option("--system", f->system, "system prompt");
  c->add_option("-n,--n-predict", f->n_predict, "most tokens per reply")->capture_default_str();
  c->add_option("--temp", f->samp.temperature, "temperature (0: greedy)")->capture_default_str();
  c->add_option("--seed", f->samp.seed, "random seed")->capture_default_str();
  c->add_option("--top-k", f->samp.top_k, "top-k (0: off)")->capture_default_str();
  c->add_option("--top-p", f->samp.top_p, "top-p (1: off)")->capture_default_str();
  c->add_option("--min-p", f->samp.min_p, "min-p (0: off)")->capture_default_str();
  c->add_option("--repeat-penalty", f->samp.repeat_penalty, "repetition penalty (1: off)")->capture_default_str();
  c->callback([f] { chat(*f); });
}

}  // namespace leanlm::cli
