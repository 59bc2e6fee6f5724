// leanlm perplexity: llama-perplexity's method. The text is cut into chunks of n_ctx tokens, each
// evaluated from an empty cache (first token replaced by BOS when the model adds one), and only
// the second half of each chunk is scored. With --kl-base the same chunks also run through a second
// model (the source of a quantized file), and every scored token's distribution is compared with
// that model's: mean KL divergence, top-1 agreement, perplexity ratio (llama-perplexity's
// --kl-divergence, without the logits file in between).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
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
  std::string kl_base;
};

// Running KL statistics against the base model.
struct KlStats {
  double sum = 0, sum2 = 0, top1 = 0, base_nll = 0;
  std::vector<float> all;  // every token's KL, for the percentiles
  void add(double kl, bool same_top, double base_lp) {
    sum += kl, sum2 += kl * kl, top1 += same_top, base_nll -= base_lp;
    all.push_back(float(kl));
  }
  double percentile(double q) {
    if (all.empty()) return 0;
    const size_t i = std::min(all.size() - 1, size_t(q * double(all.size())));
    std::nth_element(all.begin(), all.begin() + i, all.end());
    return all[i];
  }
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
  std::unique_ptr<Engine> base;
  if (!f.kl_base.empty()) {
    EngineFlags bf = f.eng;  // the reference: the same threads and context, an exact f16 cache
    bf.model = f.kl_base;
    bf.kv_codec = "f16", bf.kv_evict = "none", bf.kv_budget.clear(), bf.kv_codebooks.clear();
    bf.kv_think = 0, bf.kv_topk = 0, bf.kv_mem_mib = 0;
    EngineOptions beo = bf.resolve(true);
    beo.batch = eo.batch;
    base = std::make_unique<Engine>(beo);
    bool same = base->n_vocab() == engine.n_vocab();
    for (int id = 0; same && id < engine.n_vocab(); ++id) same = base->tokenizer().text(id) == tok.text(id);
    if (!same) fail("--kl-base: " + f.kl_base + " has another vocabulary than " + eo.model_path);
  }
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
  KlStats kl;
  std::vector<float> lp_model, lp_base;
  ProgressBar bar("perplexity", n_chunks);
  const double t0 = now_seconds();
  for (int ci = 0; ci < n_chunks; ++ci) {
    const std::vector<int> chunk = perplexity_chunk(tokens, ci, n_ctx, tok);
    auto seq = engine.new_sequence();
    auto base_seq = base ? base->new_sequence() : nullptr;
    double chunk_nll = 0;
    for (int start = 0; start < n_ctx; start += engine.forward().max_batch()) {
      const int n = std::min(engine.forward().max_batch(), n_ctx - start);
      const std::vector<BatchEntry> batch = perplexity_batch(seq.get(), chunk, start, n, first);
      // The base model's logits of the same rows, first; they stay valid while -m's run (each
      // engine has its own buffers).
      const float* base_logits = nullptr;
      if (base) {
        std::vector<BatchEntry> bb = batch;
        for (BatchEntry& e : bb) e.seq = base_seq.get();
        base_logits = base->forward().run(bb);
      }
      const float* logits = engine.forward().run(batch);
      int row = 0;
      for (int j = 0; j < n; ++j) {
        const int p = start + j;
        if (!batch[j].logits) continue;
        const size_t at = size_t(row++) * V;
        const float* lg = logits + at;
        double lp;
        if (base) {  // both rows through the same log-softmax: a model against itself is ratio 1
          const float* bl = base_logits + at;
          log_softmax(bl, V, lp_base);
          log_softmax(lg, V, lp_model);
          kl.add(kl_divergence(lp_base.data(), lp_model.data(), V), Sampler::argmax(lg, V) == Sampler::argmax(bl, V),
                 lp_base[chunk[p + 1]]);
          lp = lp_model[chunk[p + 1]];
        } else {
          lp = log_prob(lg, V, chunk[p + 1]);
        }
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
  const double kl_mean = kl.sum / double(count);
  const double kl_err = count > 1 ? std::sqrt(std::max(0.0, kl.sum2 / count - kl_mean * kl_mean) / (count - 1)) : 0.0;
  const double base_ppl = std::exp(kl.base_nll / double(count));
  const double ppl_ratio = ppl / base_ppl;
  if (f.json) {
    nlohmann::json j = {{"file", f.file}, {"model", eo.model_path}, {"n_ctx", n_ctx}, {"chunks", n_chunks},
                        {"tokens_scored", count}, {"ppl", ppl}, {"ppl_err", err}, {"chunk_ppl", chunk_ppl},
                        {"seconds", t1 - t0}, {"kv", eo.kv.name()}};
    if (base) {
      j["kl_base"] = f.kl_base;
      j["base_ppl"] = base_ppl;
      j["ppl_ratio"] = ppl_ratio;
      j["kld"] = kl_mean;
      j["kld_err"] = kl_err;
      j["kld_p99"] = kl.percentile(0.99);
      j["kld_median"] = kl.percentile(0.5);
      j["top1"] = kl.top1 / double(count);
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::fprintf(stderr, "\n%d chunks of %d tokens, %lld scored, %.1f s\n", n_chunks, n_ctx, (long long)count, t1 - t0);
    std::printf("PPL = %.4f +/- %.5f\n", ppl, err);
    if (base) {
      std::printf("base PPL = %.4f, ratio = %.4f\n", base_ppl, ppl_ratio);
      std::printf("KLD = %.6f +/- %.6f (median %.6f, 99%% %.6f)\n", kl_mean, kl_err, kl.percentile(0.5),
                  kl.percentile(0.99));
      std::printf("top-1 agreement = %.2f %%\n", 100.0 * kl.top1 / double(count));
    }
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
  c->add_option("--kl-base", f->kl_base,
                "a second model (file or short name) to compare with: KL divergence, top-1 agreement and "
                "perplexity ratio of -m against it on the same tokens");
  c->callback([f] { perplexity(*f); });
}

}  // namespace leanlm::cli
