// leanlm perplexity: llama-perplexity's method. The text is cut into chunks of n_ctx tokens, each
// evaluated from an empty cache (first token replaced by BOS when the model adds one), and only
// the second half of each chunk is scored.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.h"
#include "engine/scoring.h"
#include "util/progress.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

struct PplFlags {
  EngineFlags eng;
  std::string file;
  int chunks = -1;
  bool json = false;
};

void perplexity(const PplFlags& f) {
  const std::string file_text = read_text_file(f.file);
  EngineOptions eo = f.eng.resolve(true);
  // A compressed, evicting or pruned cache is measured as decoding meets it: tokens enter in blocks
  // no larger than the codec's, so each query sees older tokens already compressed (or evicted).
  if (f.eng.batch == 0 && !eo.kv.exact())
    eo.batch = eo.kv.codec.compressed() ? eo.kv.codec.group : 32;
  Engine engine(eo);
  const Tokenizer& tok = engine.tokenizer();
  const std::vector<int> tokens = tok.encode(file_text, true, false);
  const int n_ctx = eo.ctx;
  if (n_ctx < 8) fail("perplexity needs a context of at least 8 tokens");
  int n_chunks = int(tokens.size() / n_ctx);
  if (f.chunks >= 0) n_chunks = std::min(n_chunks, f.chunks);
  if (n_chunks == 0)
    fail(strfmt("%s: %zu tokens is less than one chunk of %d (lower -c)", f.file.c_str(), tokens.size(), n_ctx));

  const int V = engine.n_vocab();
  const int first = n_ctx / 2;
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  std::vector<double> chunk_ppl;
  ProgressBar bar("perplexity", n_chunks);
  const double t0 = now_seconds();
  for (int ci = 0; ci < n_chunks; ++ci) {
    const std::vector<int> chunk = perplexity_chunk(tokens, ci, n_ctx, tok);
    auto seq = engine.new_sequence();
    double chunk_nll = 0;
    for (int start = 0; start < n_ctx; start += engine.forward().max_batch()) {
      const int n = std::min(engine.forward().max_batch(), n_ctx - start);
      std::vector<BatchEntry> batch;
      for (int j = 0; j < n; ++j) {
        const int p = start + j;
        batch.push_back({seq.get(), chunk[p], p, p >= first && p < n_ctx - 1});
      }
      const float* logits = engine.forward().run(batch);
      int row = 0;
      for (int j = 0; j < n; ++j) {
        const int p = start + j;
        if (!batch[j].logits) continue;
        const double lp = log_prob(logits + size_t(row++) * V, V, chunk[p + 1]);
        nll -= lp;
        nll2 += lp * lp;
        chunk_nll -= lp;
        ++count;
      }
    }
    chunk_ppl.push_back(std::exp(chunk_nll / (n_ctx - 1 - first)));
    bar.update(ci + 1);
    if (!f.json && !isatty(2)) std::fprintf(stderr, "[%d]%.4f ", ci + 1, std::exp(nll / count));
  }
  bar.finish();
  const double t1 = now_seconds();
  const double mean = nll / count;
  const double var = nll2 / count - mean * mean;
  const double ppl = std::exp(mean);
  const double err = count > 1 ? ppl * std::sqrt(std::max(0.0, var) / (count - 1)) : 0.0;
  if (f.json) {
    nlohmann::json j = {{"file", f.file}, {"model", eo.model_path}, {"n_ctx", n_ctx}, {"chunks", n_chunks},
                        {"tokens_scored", count}, {"ppl", ppl}, {"ppl_err", err}, {"chunk_ppl", chunk_ppl},
                        {"seconds", t1 - t0}, {"kv", eo.kv.name()}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::fprintf(stderr, "\n%d chunks of %d tokens, %lld scored, %.1f s\n", n_chunks, n_ctx, (long long)count, t1 - t0);
    std::printf("PPL = %.4f +/- %.5f\n", ppl, err);
  }
}

}  // namespace

void add_perplexity(CLI::App& app) {
  auto f = std::make_shared<PplFlags>();
  CLI::App* c = app.add_subcommand("perplexity", "perplexity of a text file (llama-perplexity's method)");
  f->eng.add(c, 512);
  c->add_option("-f,--file", f->file, "text file")->required();
  c->add_option("--chunks", f->chunks, "most chunks to score (default: all)");
  c->add_flag("--json", f->json, "print the result as JSON");
  c->callback([f] { perplexity(*f); });
}

}  // namespace leanlm::cli
