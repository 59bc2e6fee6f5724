// leanlm run: generate text from a prompt, streaming it to stdout.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

struct RunFlags {
  EngineFlags eng;
  std::string prompt, prompt_file;
  int n_predict = 128;
  SamplerOptions samp;
  bool chat = false;
  bool ignore_eos = false;
};

void run(const RunFlags& f) {
  std::string prompt = f.prompt;
  if (!f.prompt_file.empty()) {
    prompt = read_text_file(f.prompt_file, "prompt file");
  }
  Engine engine(f.eng.resolve(true));
  const Tokenizer& tok = engine.tokenizer();
  if (f.chat) prompt = format_chat(detect_chat_format(tok, engine.model().config().arch), {{"user", prompt}}, true);
  std::vector<int> ids = tok.encode(prompt, true, f.chat);
  if (ids.empty()) fail("empty prompt");
  auto seq = engine.new_sequence();
  engine.check_fits(*seq, ids.size());

  std::fputs(f.chat ? "" : prompt.c_str(), stdout);
  std::fflush(stdout);
  const double t0 = now_seconds();
  const float* logits = engine.feed(*seq, ids);
  const double t1 = now_seconds();

  Sampler sampler(f.samp);
  std::vector<int> history = ids;
  int generated = 0;
  const int room = engine.options().ctx - seq->n_past;
  const int n_max = std::min(f.n_predict, room);
  for (; generated < n_max; ++generated) {
    const int next = sampler.sample(logits, engine.n_vocab(), history);
    if (!f.ignore_eos && tok.is_eog(next)) break;
    history.push_back(next);
    std::fputs(tok.token_to_piece(next).c_str(), stdout);
    std::fflush(stdout);
    if (generated + 1 == n_max) {
      ++generated;
      break;
    }
    logits = engine.feed(*seq, {next});
  }
  const double t2 = now_seconds();
  std::fputs("\n", stdout);
  std::fflush(stdout);  // the text ends before the statistics, also when both go to one pipe
  if (generated == room && room < f.n_predict)
    std::fprintf(stderr, "generation stopped at the context limit (%d tokens; raise -c)\n", engine.options().ctx);
  std::fprintf(stderr, "prompt: %zu tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s | KV %s | peak RSS %s\n",
               ids.size(), ids.size() / (t1 - t0), generated, generated > 0 ? generated / (t2 - t1) : 0.0,
               human_bytes(double(seq->kv_bytes())).c_str(), human_bytes(double(peak_rss_bytes())).c_str());
}

}  // namespace

void add_run(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* c = app.add_subcommand("run", "generate text from a prompt");
  f->eng.add(c, 4096);
  auto* p = c->add_option("-p,--prompt", f->prompt, "prompt text");
  auto* pf = c->add_option("-f,--file", f->prompt_file, "read the prompt from a file");
  p->excludes(pf);
  c->add_option("-n,--n-predict", f->n_predict, "tokens to generate")->check(CLI::Range(0, 1 << 24))->capture_default_str();
  c->add_option("--temp", f->samp.temperature, "temperature (0: greedy)")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  c->add_option("--seed", f->samp.seed, "random seed")->capture_default_str();
  c->add_option("--top-k", f->samp.top_k, "top-k (0: off)")->check(CLI::Range(0, 1 << 30))->capture_default_str();
  c->add_option("--top-p", f->samp.top_p, "top-p (1: off)")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  c->add_option("--min-p", f->samp.min_p, "min-p (0: off)")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  c->add_option("--repeat-penalty", f->samp.repeat_penalty, "repetition penalty (1: off)")
      ->check(CLI::Range(0.01, 100.0))->capture_default_str();
  c->add_option("--repeat-last-n", f->samp.repeat_last_n, "tokens the penalty looks back over")->capture_default_str();
  c->add_flag("--chat", f->chat, "wrap the prompt in the model's chat format");
  c->add_flag("--ignore-eos", f->ignore_eos, "keep generating past end-of-generation tokens");
  c->callback([f, p, pf] {
    if (p->count() == 0 && pf->count() == 0) throw CLI::RequiredError("--prompt or --file");
    run(*f);
  });
}

}  // namespace leanlm::cli
