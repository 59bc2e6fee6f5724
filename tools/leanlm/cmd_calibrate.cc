// leanlm calibrate: learns the CQ codebooks of a model from calibration text and writes them to a
// sidecar file (kv/codebooks.h), which --kv-codebooks then reads.
//
// Keys and values are collected as they enter the cache (after RoPE), from chunks of --ctx tokens.
// For each CQ configuration, layer, side, KV head and channel group, k-means (k-means++ seeding,
// seeded per job) learns 2^b centroids. The paper also weights k-means by Fisher information (the
// squared gradient of the loss); leanlm has no backward pass, so the k-means here is unweighted.
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
};

void calibrate(const CalibrateFlags& f) {
  std::vector<CodecSpec> specs;
  for (const std::string& c : split_list(f.codecs)) {
    specs.push_back(parse_codec(c));
    if (!specs.back().needs_codebooks()) fail(c + ": only CQ codecs (cq-*) have codebooks to learn");
  }
  const std::string file_text = read_text_file(f.file);
  EngineOptions eo = f.eng.resolve(true);
  Engine engine(eo);
  // Only as much text as the calibration needs (a token is rarely more than 8 bytes of text).
  const std::string& all = file_text;
  const std::vector<int> text =
      engine.tokenizer().encode(all.substr(0, std::min(all.size(), size_t(f.tokens) * 8 + 4096)), true, false);
  const double t0 = now_seconds();
  const std::vector<CodebookSet> sets = learn_codebooks(engine, text, eo.ctx, f.tokens, specs, f.iters, f.seed, true);
  save_codebooks(f.out, codebook_key(engine.model()), sets);
  std::fprintf(stderr, "calibrate: %s in %.0f s (unweighted k-means: no gradients for Fisher weights)\n", f.file.c_str(),
               now_seconds() - t0);
  std::printf("wrote %s (%s)\n", f.out.c_str(), f.codecs.c_str());
}

}  // namespace

void add_calibrate(CLI::App& app) {
  auto f = std::make_shared<CalibrateFlags>();
  CLI::App* c = app.add_subcommand("calibrate", "learn CQ codebooks from calibration text (writes a sidecar file)");
  f->eng.add(c, 2048, /*with_kv=*/false);
  c->add_option("-f,--file", f->file, "calibration text")->required();
  c->add_option("--out", f->out, "codebook file to write")->required();
  c->add_option("--kv-codec", f->codecs, "CQ configurations to learn (comma-separated)")->capture_default_str();
  c->add_option("--tokens", f->tokens, "calibration tokens (whole chunks of -c)")->check(CLI::Range(16, 1 << 22))
      ->capture_default_str();
  c->add_option("--iters", f->iters, "k-means iterations")->check(CLI::Range(0, 1000))->capture_default_str();
  c->add_option("--seed", f->seed, "k-means seed")->capture_default_str();
  c->callback([f] { calibrate(*f); });
}

}  // namespace leanlm::cli
