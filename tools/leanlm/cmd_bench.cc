// leanlm bench: prompt and generation throughput in llama-bench's terms (pp512, tg128, "@ dN").
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "common.h"
#include "kernels/bandwidth.h"
#include "quant/dot.h"
#include "util/progress.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

struct BenchFlags {
  EngineFlags eng;
  std::vector<int> n_prompt{512};
  std::vector<int> n_gen{128};
  std::vector<int> depth{0};
  int reps = 5;
  bool json = false;
  bool fill_once = false;
  bool bandwidth = false;
};

struct Stat { double mean, sd; };
Stat stats(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m += x;
  m /= v.size();
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(s / (v.size() - 1)) : 0.0};
}

void bench(const BenchFlags& f) {
  int max_needed = 0;
  for (int d : f.depth)
    for (int p : f.n_prompt) max_needed = std::max(max_needed, d + p);
  for (int d : f.depth)
    for (int g : f.n_gen) max_needed = std::max(max_needed, d + g);
  if (f.fill_once) {  // the deepest fill, then every test of every depth adds its tokens
    int added = 0;
    for (int p : f.n_prompt) added += std::max(0, p);
    for (int g : f.n_gen) added += std::max(0, g);
    max_needed = *std::max_element(f.depth.begin(), f.depth.end()) + int(f.depth.size()) * (f.reps + 1) * added;
  }
  EngineOptions eo = f.eng.resolve(true);
  eo.ctx = std::max(eo.ctx, max_needed + 1);
  Engine engine(eo);
  const int V = engine.n_vocab();
  std::mt19937 rng(1234);
  // Filling the cache to a depth is the long part of a deep test: show it on a terminal.
  auto fill = [&](SequenceState& seq, const std::vector<int>& toks) {
    ProgressBar bar("depth " + std::to_string(toks.size()), int64_t(toks.size()));
    engine.feed(seq, toks, nullptr, [&](int done) { bar.update(done); });
    bar.finish();
  };
  auto random_tokens = [&](int n) {
    std::vector<int> t(n);
    for (int& x : t) x = int(rng() % uint32_t(V));
    return t;
  };

  nlohmann::json results = nlohmann::json::array();
  auto report = [&](const std::string& test, int n, int depth, const std::vector<double>& tps, size_t kv_bytes) {
    Stat s = stats(tps);
    std::string name = test + std::to_string(n) + (depth ? " @ d" + std::to_string(depth) : "");
    if (!f.json)
      std::printf("| %-14s | %10.2f ± %-8.2f | %9s |\n", name.c_str(), s.mean, s.sd,
                  human_bytes(double(kv_bytes)).c_str());
    results.push_back({{"test", name}, {"n_tokens", n}, {"depth", depth}, {"tokens_per_second", s.mean},
                       {"stddev", s.sd}, {"samples", tps}, {"kv_bytes", kv_bytes}});
  };
  if (!f.json) {
    std::printf("model: %s, threads: %d, kv: %s, kernels: %s\n", eo.model_path.c_str(), engine.pool().size(),
                eo.kv.name().c_str(), isa_name(best_isa()));
    std::printf("| %-14s | %-21s | %-9s |\n|----------------|-----------------------|-----------|\n", "test", "tokens/s",
                "KV bytes");
  }
  // --fill-once: one sequence for the whole run, filled up to each depth in turn (ascending); every
  // repetition continues it, so a test's depth grows by what the repetitions before it added.
  std::unique_ptr<SequenceState> shared;
  auto sequence_at = [&](int depth) {
    if (!f.fill_once) {
      auto seq = engine.new_sequence();
      if (depth) fill(*seq, random_tokens(depth));
      return seq;
    }
    if (!shared) shared = engine.new_sequence();
    if (shared->n_past < depth) fill(*shared, random_tokens(depth - shared->n_past));
    return std::unique_ptr<SequenceState>();
  };
  std::vector<int> depths = f.depth;
  if (f.fill_once) std::sort(depths.begin(), depths.end());
  for (int depth : depths) {
    for (int np : f.n_prompt) {
      if (np <= 0) continue;
      std::vector<double> tps;
      size_t kvb = 0;
      int at = depth;
      for (int r = 0; r < f.reps + 1; ++r) {  // first run warms up
        auto own = sequence_at(depth);
        SequenceState& seq = own ? *own : *shared;
        if (r == 1) at = seq.n_past;
        auto toks = random_tokens(np);
        const double t0 = now_seconds();
        engine.feed(seq, toks);
        const double dt = now_seconds() - t0;
        if (r) tps.push_back(np / dt);
        kvb = seq.kv_bytes();
      }
      report("pp", np, at, tps, kvb);
    }
    for (int ng : f.n_gen) {
      if (ng <= 0) continue;
      std::vector<double> tps;
      size_t kvb = 0;
      int at = depth;
      for (int r = 0; r < f.reps + 1; ++r) {
        auto own = sequence_at(depth);
        SequenceState& seq = own ? *own : *shared;
        if (r == 1) at = seq.n_past;
        int tok = int(rng() % uint32_t(V));
        const double t0 = now_seconds();
        for (int i = 0; i < ng; ++i) {
          const float* lg = engine.feed(seq, {tok});
          tok = Sampler::argmax(lg, V);
        }
        const double dt = now_seconds() - t0;
        if (r) tps.push_back(ng / dt);
        kvb = seq.kv_bytes();
      }
      report("tg", ng, at, tps, kvb);
    }
  }
  // The decode ceiling: read bandwidth on the same threads over the bytes one step reads (weights;
  // the KV cache adds its bytes at depth).
  const double wbytes = double(engine.model().weight_bytes_per_token());
  const size_t peak_rss = peak_rss_bytes();  // before the bandwidth buffer
  const double bw = f.bandwidth ? measure_read_bandwidth(engine.pool()) : 0.0;
  if (f.json) {
    nlohmann::json j = {{"model", eo.model_path}, {"threads", engine.pool().size()}, {"kv", eo.kv.name()},
                        {"isa", isa_name(best_isa())},
                        {"weight_bytes_per_token", engine.model().weight_bytes_per_token()},
                        {"peak_rss_bytes", peak_rss}, {"results", results}};
    if (f.bandwidth) j["read_bandwidth_gbs"] = bw;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("peak RSS: %s\n", human_bytes(double(peak_rss)).c_str());
    if (f.bandwidth) {
      const double ceiling = bw * 1e9 / wbytes;
      std::printf("read bandwidth %.1f GB/s on %d threads; %s of weights per decode step: ceiling %.1f tok/s\n", bw,
                  engine.pool().size(), human_bytes(wbytes).c_str(), ceiling);
      for (const auto& r : results)
        if (r["test"].get<std::string>().rfind("tg", 0) == 0)
          std::printf("%s: %.0f%% of the ceiling (weights only)\n", r["test"].get<std::string>().c_str(),
                      100.0 * r["tokens_per_second"].get<double>() / ceiling);
    }
  }
}

}  // namespace

void add_bench(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* c = app.add_subcommand("bench", "prompt (pp) and generation (tg) throughput, like llama-bench");
  f->eng.add(c, 0);
  c->add_option("-p,--n-prompt", f->n_prompt, "prompt lengths")->delimiter(',')->capture_default_str();
  c->add_option("-n,--n-gen", f->n_gen, "generation lengths")->delimiter(',')->capture_default_str();
  c->add_option("-d,--depth", f->depth, "tokens already in the cache")->delimiter(',')->capture_default_str();
  c->add_option("-r,--reps", f->reps, "repetitions")->check(CLI::Range(1, 1000))->capture_default_str();
  c->add_flag("--json", f->json, "print JSON");
  c->add_flag("--bandwidth", f->bandwidth,
              "also measure the read bandwidth on the same threads and report decode as a share of the "
              "bytes-per-step ceiling");
  c->add_flag("--fill-once", f->fill_once,
              "fill the cache once and run every test and repetition on that sequence, depths ascending "
              "(deep tests without refilling; a test's depth grows by the tokens of the repetitions before it)");
  c->callback([f] { bench(*f); });
}

}  // namespace leanlm::cli
