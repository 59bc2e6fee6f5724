// leanlm calibrate: learns the CQ and PQ codebooks of a model from calibration text and writes them
// to a sidecar file (kv/codebooks.h), which --kv-codebooks then reads.
//
// Keys and values are collected as they enter the cache (after RoPE), from chunks of --ctx tokens.
// For each configuration, layer, side, KV head and channel group, k-means (k-means++ seeding,
// seeded per job) learns 2^b centroids. The CQ paper weights k-means by Fisher information (the
// squared gradient of the loss); leanlm has no backward pass. --query-aware instead weights key
// errors by the second moment of the queries (engine/calibrate.h), which needs none.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common.h"
#include "engine/calibrate.h"
#include "kv/codebooks.h"
#include "util/progress.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

struct CalibrateFlags {
  EngineFlags eng;
  std::string file, out;
  std::string codecs = "cq-2c8b,cq-4c8b,cq-8c8b,cq-8c10b";
  int tokens = 16384;
  int iters = 10;
  uint64_t seed = 1;
  std::string query_aware = "none";
  int sinks = 0;
};

void calibrate(const CalibrateFlags& f) {
  std::vector<CodecSpec> specs;
  for (const std::string& c : split_list(f.codecs)) {
    specs.push_back(parse_codec(c));
    if (!specs.back().needs_codebooks()) fail(c + ": only CQ (cq-*) and PQ (pq) codecs have codebooks to learn");
  }
  const QueryWeighting weighting = parse_query_weighting(f.query_aware);
  const std::string file_text = read_text_file(f.file);
  EngineOptions eo = f.eng.resolve(true);
  Engine engine(eo);
  const std::vector<int> text = calibration_tokens(engine, file_text, f.tokens);
  const double t0 = now_seconds();
  const std::vector<CodebookSet> sets = learn_codebooks(engine, text, eo.ctx, f.tokens, specs, f.iters, f.seed, true, weighting, f.sinks);
  save_codebooks(f.out, codebook_key(engine.model()), sets);
  std::fprintf(stderr, "calibrate: %s in %.0f s (key k-means weighted by queries: %s)\n", f.file.c_str(),
               now_seconds() - t0, f.query_aware.c_str());
  std::printf("wrote %s (%s)\n", f.out.c_str(), f.codecs.c_str());
}

}  // namespace

void add_calibrate(CLI::App& app) {
  auto f = std::make_shared<CalibrateFlags>();
  CLI::App* c = app.add_subcommand("calibrate", "learn CQ and PQ codebooks from calibration text (writes a sidecar file)");
  f->eng.add(c, 2048, /*with_kv=*/false);
  c->add_option("-f,--file", f->file, "calibration text")->required();
  c->add_option("--out", f->out, "codebook file to write")->required();
  c->add_option("--kv-codec", f->codecs, "CQ and PQ configurations to learn (comma-separated, e.g. cq-2c8b,pq:dsub=2)")
      ->capture_default_str();
  c->add_option("--query-aware", f->query_aware,
                "key k-means in the metric of the queries' second moment: none, diag or full")
      ->check(CLI::IsMember({"none", "diag", "full"}))->capture_default_str();
  c->add_option("--sinks", f->sinks, "leave the first N positions of each chunk out (for caches with :sinks=N)")
      ->check(CLI::Range(0, 1024))->capture_default_str();
  c->add_option("--tokens", f->tokens, "calibration tokens (whole chunks of -c)")->check(CLI::Range(16, 1 << 22))
      ->capture_default_str();
  c->add_option("--iters", f->iters, "k-means iterations")->check(CLI::Range(0, 1000))->capture_default_str();
  c->add_option("--seed", f->seed, "k-means seed")->capture_default_str();
  c->callback([f] { calibrate(*f); });
}

}  // namespace leanlm::cli
