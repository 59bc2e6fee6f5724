// leanlm against llama.cpp on the default model: token ids, next-token distributions over real
// text (KL divergence, top-1 agreement), greedy continuations and perplexity. The reference
// numbers come from scripts/make_reference.py (llama.cpp through llama-cpp-python).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/engine.h"
#include "util/sha256.h"

namespace leanlm {
namespace {

std::string source_dir() {
  const char* s = std::getenv("LEANLM_SOURCE_DIR");
  return s ? s : ".";
}

// A model with golden outputs from llama.cpp (scripts/make_reference.py).
struct RefModel {
  const char* name;        // test-name suffix
  const char* golden_dir;  // under tests/golden/
  const char* file;        // under models/
  const char* pull_name;   // `leanlm pull NAME` installs it
};
const RefModel kModels[] = {
    {"gemma3_270m", "gemma3-270m", "gemma-3-270m-q4_k_m.gguf", "gemma3-270m"},
    {"qwen2_5_coder_1_5b", "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-1.5b"},
    {"smollm2_135m", "smollm2-135m", "smollm2-135m-instruct-q4_1.gguf", "smollm2-135m"},
};

std::string model_path(const RefModel& m) { return source_dir() + "/models/" + m.file; }

struct Golden {
  nlohmann::json ref;
  std::vector<int32_t> top_ids;
  std::vector<float> top_lp;
};

const Golden& golden(const RefModel& m) {
  static std::map<std::string, Golden> cache;
  auto it = cache.find(m.name);
  if (it != cache.end()) return it->second;
  Golden g;
  const std::string dir = source_dir() + "/tests/golden/" + m.golden_dir + "/";
  std::ifstream js(dir + "reference.json");
  if (!js) throw std::runtime_error("missing " + dir + "reference.json");
  g.ref = nlohmann::json::parse(js);
  std::ifstream bin(dir + "topk.bin", std::ios::binary);
  size_t rows = 0;
  for (const auto& c : g.ref["kl_chunks"]) rows += c.size();
  const size_t k = g.ref["topk"].get<size_t>();
  g.top_ids.resize(rows * k);
  g.top_lp.resize(rows * k);
  bin.read(reinterpret_cast<char*>(g.top_ids.data()), g.top_ids.size() * 4);
  bin.read(reinterpret_cast<char*>(g.top_lp.data()), g.top_lp.size() * 4);
  if (!bin) throw std::runtime_error("truncated " + dir + "topk.bin");
  return cache.emplace(m.name, std::move(g)).first->second;
}

// One engine at a time (the 1.5B model's weights are a GiB): switching models frees the last one.
Engine& engine(const RefModel& m) {
  static std::unique_ptr<Engine> e;
  static std::string loaded;
  if (!e || loaded != m.name) {
    e.reset();
    const std::string path = model_path(m);
    if (!std::ifstream(path))
      throw std::runtime_error(path + " is missing: run `build/leanlm pull " + m.pull_name +
                               "` (scripts/test.sh does)");
    EngineOptions o;
    o.model_path = path;
    o.ctx = std::max(1024, golden(m).ref["n_ctx"].get<int>());
    o.batch = o.ctx;  // the perplexity test feeds a whole chunk as one batch
    e = std::make_unique<Engine>(o);
    loaded = m.name;
  }
  return *e;
}

class Reference : public ::testing::TestWithParam<RefModel> {
 protected:
  const Golden& golden() const { return leanlm::golden(GetParam()); }
  Engine& engine() const { return leanlm::engine(GetParam()); }
};

TEST_P(Reference, TokenizerMatchesLlamaCpp) {
  const Tokenizer& tok = engine().tokenizer();
  for (const auto& c : golden().ref["tokenizer"]) {
    const std::string text = c["text"];
    const std::vector<int> want = c["ids"].get<std::vector<int>>();
    EXPECT_EQ(tok.encode(text, true, true), want) << "text: " << text;
  }
}

TEST_P(Reference, TextTokensMatchLlamaCpp) {
  // The KL chunks are the first tokens of the corpus as llama.cpp tokenized it.
  std::ifstream in(source_dir() + "/" + golden().ref["text_file"].get<std::string>());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<int> ids = engine().tokenizer().encode(ss.str(), true, false);
  const auto& chunks = golden().ref["kl_chunks"];
  const int n_ctx = golden().ref["n_ctx"];
  for (size_t c = 0; c < chunks.size(); ++c) {
    std::vector<int> want = chunks[c].get<std::vector<int>>();
    std::vector<int> got(ids.begin() + c * n_ctx, ids.begin() + (c + 1) * n_ctx);
    got[0] = want[0];  // BOS replaces the first token of every chunk
    EXPECT_EQ(got, want) << "chunk " << c;
  }
}

// The whole corpus (5 MB of Shakespeare) tokenized as llama.cpp does: compared by count and by the
// SHA-256 of the int32 ids, since the ids themselves would be megabytes of golden data.
TEST_P(Reference, CorpusTokensMatchLlamaCpp) {
  const auto& c = golden().ref["corpus_tokens"];
  std::ifstream in(source_dir() + "/" + c["file"].get<std::string>(), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<int> ids = engine().tokenizer().encode(ss.str(), false, false);
  EXPECT_EQ(ids.size(), c["count"].get<size_t>());
  std::vector<int32_t> le(ids.begin(), ids.end());  // x86: already little-endian
  EXPECT_EQ(sha256_hex(le.data(), le.size() * 4), c["sha256"].get<std::string>());
}

// Bytes that are not valid UTF-8 (stray continuation bytes, invalid lead bytes, truncated
// sequences) become U+FFFD as in llama.cpp's byte-level BPE. llama.cpp's SentencePiece path
// handles such bytes its own way (a bad lead byte swallows the bytes after it); leanlm's falls back
// to byte tokens, so the default model is not compared here.
TEST_P(Reference, InvalidUtf8MatchesLlamaCpp) {
  if (engine().tokenizer().kind() != Tokenizer::Kind::Bpe) GTEST_SKIP() << "SentencePiece: see above";
  for (const auto& c : golden().ref["byte_cases"]) {
    const std::string hex = c["hex"];
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes += char(std::stoi(hex.substr(i, 2), nullptr, 16));
    EXPECT_EQ(engine().tokenizer().encode(bytes, false, false), c["ids"].get<std::vector<int>>()) << "bytes " << hex;
  }
}

// KL(llama.cpp || leanlm) over the reference's top-K tokens plus one bucket for the rest: a lower
// bound of the full KL that is tight when the tail holds little mass (reported below).
struct Agreement {
  double kl_sum = 0, tail_sum = 0;
  size_t agree = 0, rows = 0;
  double mean_kl() const { return kl_sum / rows; }
  double top1() const { return double(agree) / rows; }
  double mean_tail() const { return tail_sum / rows; }
  // Slack for comparing a top-1 rate over `rows` positions with llama.cpp's own rate p: 2.5
  // standard errors of a rate over that many positions, at least one point (0.017 for 1,024
  // positions at p = 0.95, 0.019 for 512 at p = 0.97).
  double top1_slack(double p) const { return std::max(0.01, 2.5 * std::sqrt(p * (1 - p) / double(rows))); }
};

// Adds leanlm's logits `lg` (one position, full vocabulary) against row `row` of the golden top-K.
void add_row(const Golden& g, int V, Agreement& a, const float* lg, size_t row) {
  const size_t K = g.ref["topk"];
  double mx = lg[0];
  for (int v = 1; v < V; ++v) mx = std::max<double>(mx, lg[v]);
  double z = 0;
  for (int v = 0; v < V; ++v) z += std::exp(lg[v] - mx);
  const double lz = mx + std::log(z);
  const int32_t* ids = g.top_ids.data() + row * K;
  const float* lp = g.top_lp.data() + row * K;
  double kl = 0, p_top = 0, q_top = 0;
  for (size_t k = 0; k < K; ++k) {
    const double p = std::exp(double(lp[k])), lq = lg[ids[k]] - lz;
    kl += p * (lp[k] - lq);
    p_top += p;
    q_top += std::exp(lq);
  }
  const double p_tail = std::max(0.0, 1 - p_top), q_tail = std::max(1e-12, 1 - q_top);
  if (p_tail > 1e-12) kl += p_tail * std::log(p_tail / q_tail);
  a.kl_sum += kl;
  a.tail_sum += p_tail;
  a.agree += Sampler::argmax(lg, V) == ids[0];
  ++a.rows;
}

TEST_P(Reference, NextTokenDistributionsMatchLlamaCpp) {
  const Golden& g = golden();
  const int V = engine().n_vocab();
  Agreement a;
  for (const auto& chunk_json : g.ref["kl_chunks"]) {
    const std::vector<int> chunk = chunk_json.get<std::vector<int>>();
    auto seq = engine().new_sequence();
    std::vector<float> logits;
    engine().feed(*seq, chunk, &logits);
    for (size_t j = 0; j < chunk.size(); ++j) add_row(g, V, a, logits.data() + j * V, a.rows);
  }
  const auto& self = g.ref["llama_cpp_self"];
  std::printf("positions %zu  mean KL %.6f  top-1 agreement %.4f  mean tail mass %.4f\n", a.rows, a.mean_kl(),
              a.top1(), a.mean_tail());
  std::printf("llama.cpp against itself (one token at a time vs one batch): KL %.6f  top-1 %.4f\n",
              self["kl"].get<double>(), self["top1"].get<double>());
  EXPECT_EQ(a.rows, g.ref["llama_cpp_self"]["positions"].get<size_t>());
  EXPECT_LE(a.mean_kl(), 0.005);
  // The target is 0.99. llama.cpp does not reach it against itself: its decode and batch
  // paths add in different orders, and this model turns last-bit differences into different int8
  // activation codes and fp16 GELU table entries downstream. leanlm must agree with llama.cpp at
  // least as well as llama.cpp agrees with itself, up to the sampling noise of the positions.
  EXPECT_GE(a.top1(), self["top1"].get<double>() - a.top1_slack(self["top1"].get<double>()));
}

// The same positions through leanlm's decode path: the chunks fed one token at a time (per-row dot
// kernels, one query against the cache), as generation runs them, against llama.cpp's batch
// distributions. llama.cpp's self-agreement figures measure the same pairing (its decode path
// against its batch path): KL 0.0041, top-1 94.9 %; leanlm measures KL 0.0049, top-1 95.6 %.
// Prompt and decode paths of one engine differ by up to ~0.005 (docs/correctness.md), so the KL
// bound is 1.5 times llama.cpp's own; a broken decode kernel gives KL 0.6 to 8 here. The greedy
// test below sees the decode path only through a few dozen steps; this one sees 1,024 of them.
TEST_P(Reference, DecodePathDistributionsMatchLlamaCpp) {
  const Golden& g = golden();
  Agreement a;
  for (const auto& chunk_json : g.ref["kl_chunks"]) {
    const std::vector<int> chunk = chunk_json.get<std::vector<int>>();
    auto seq = engine().new_sequence();
    for (int tok : chunk) add_row(g, engine().n_vocab(), a, engine().feed(*seq, {tok}), a.rows);
  }
  const auto& self = g.ref["llama_cpp_self"];
  std::printf("decode path: positions %zu  mean KL %.6f  top-1 agreement %.4f\n", a.rows, a.mean_kl(), a.top1());
  std::printf("llama.cpp's decode path against its batch path: KL %.6f  top-1 %.4f\n", self["kl"].get<double>(),
              self["top1"].get<double>());
  EXPECT_EQ(a.rows, g.ref["llama_cpp_self"]["positions"].get<size_t>());
  EXPECT_LE(a.mean_kl(), 1.5 * self["kl"].get<double>());
  EXPECT_GE(a.top1(), self["top1"].get<double>() - a.top1_slack(self["top1"].get<double>()));
}

// leanlm's logit for `tok` minus its best logit for any other token: positive where leanlm would pick
// `tok` greedily. Where `tok` is llama.cpp's greedy choice, llama.cpp's own value of it is the gap
// between its two best logits, which the reference records at every step.
double margin(const float* lg, int V, int tok) {
  float other = -INFINITY;
  for (int v = 0; v < V; ++v)
    if (v != tok) other = std::max(other, lg[v]);
  return double(lg[tok]) - other;
}

TEST_P(Reference, GreedyGenerationMatchesLlamaCpp) {
  // Target: identical unless at a near-tie (gap < 1e-3). Not reachable: two valid evaluation paths
  // of this model drift apart within a few positions (llama.cpp's own decode path leaves its batch
  // path after 3 tokens on two of these prompts; see docs/correctness.md), and three of the five
  // prompts have a first gap under 1 logit. So the test compares logits instead of only tokens:
  // at every step up to and including the divergence, leanlm's margin for llama.cpp's token must
  // match llama.cpp's gap (a divergence is the case where leanlm's margin is negative), each step
  // within kStep and all steps together within kRms (root mean square). On the real code the
  // differences are 0.26 rms over 96 steps, at most 1.0; a broken prompt-path kernel moves the
  // margin by 2 to 15 logits at the first generated token, a broken decode kernel by 2 to 6 at the
  // first decoded ones. A divergence is still only accepted where llama.cpp's gap is under
  // kDivergeGap.
  constexpr double kStep = 1.5, kRms = 0.5, kDivergeGap = 1.0;
  const int V = engine().n_vocab();
  const auto& self_same = golden().ref["llama_cpp_self"]["greedy_identical_tokens"];
  size_t i = 0, steps = 0;
  double sq = 0, worst = 0;
  for (const auto& c : golden().ref["greedy"]) {
    const std::string text = c["prompt"];
    const std::vector<int> prompt = c["prompt_tokens"].get<std::vector<int>>();
    EXPECT_EQ(engine().tokenizer().encode(text, true, false), prompt);
    const std::vector<int> want = c["tokens"].get<std::vector<int>>();
    const std::vector<double> gaps = c["gaps"].get<std::vector<double>>();
    auto seq = engine().new_sequence();
    const float* lg = engine().feed(*seq, prompt);
    size_t same = 0;
    double prompt_worst = 0;
    for (; same < want.size(); ++same) {
      const double m = margin(lg, V, want[same]), d = m - gaps[same];
      sq += d * d;
      ++steps;
      prompt_worst = std::max(prompt_worst, std::fabs(d));
      EXPECT_LE(std::fabs(d), kStep) << text << ": generated token " << same << ": leanlm's margin for llama.cpp's "
                                     << "token " << std::setprecision(3) << m << ", llama.cpp's gap " << gaps[same];
      if (Sampler::argmax(lg, V) != want[same]) break;
      lg = engine().feed(*seq, {want[same]});
    }
    worst = std::max(worst, prompt_worst);
    std::printf("prompt '%s': identical for %zu of %zu tokens", text.c_str(), same, want.size());
    if (same < want.size()) std::printf(" (llama.cpp logit gap at the divergence %.2e)", gaps[same]);
    std::printf("; llama.cpp token by token: %d; largest |margin - gap| %.2f\n", self_same[i++].get<int>(),
                prompt_worst);
    if (same < want.size()) EXPECT_LT(gaps[same], kDivergeGap) << text << ": diverged where llama.cpp was sure";
  }
  const double rms = std::sqrt(sq / steps);
  std::printf("leanlm's margin - llama.cpp's gap over %zu steps: rms %.3f, largest %.3f\n", steps, rms, worst);
  EXPECT_LE(rms, kRms);
}

TEST_P(Reference, PerplexityWithinHalfPercentOfLlamaCpp) {
  const auto& pr = golden().ref["perplexity"];
  const int n_ctx = pr["n_ctx"], n_chunks = pr["chunks"];
  std::ifstream in(source_dir() + "/" + golden().ref["text_file"].get<std::string>());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<int> ids = engine().tokenizer().encode(ss.str(), true, false);
  const int V = engine().n_vocab(), first = n_ctx / 2;
  double nll = 0;
  int count = 0;
  for (int c = 0; c < n_chunks; ++c) {
    std::vector<int> chunk(ids.begin() + c * n_ctx, ids.begin() + (c + 1) * n_ctx);
    chunk[0] = engine().tokenizer().bos();
    auto seq = engine().new_sequence();
    std::vector<BatchEntry> batch;
    for (int p = 0; p < n_ctx; ++p) batch.push_back({seq.get(), chunk[p], p, p >= first && p < n_ctx - 1});
    const float* lg = engine().forward().run(batch);
    for (int p = first; p < n_ctx - 1; ++p, lg += V) {
      double mx = lg[0];
      for (int v = 1; v < V; ++v) mx = std::max<double>(mx, lg[v]);
      double z = 0;
      for (int v = 0; v < V; ++v) z += std::exp(lg[v] - mx);
      nll -= lg[chunk[p + 1]] - mx - std::log(z);
      ++count;
    }
  }
  const double ppl = std::exp(nll / count), want = pr["ppl"];
  std::printf("perplexity: leanlm %.4f  llama.cpp %.4f  (%+.3f%%)\n", ppl, want, 100 * (ppl / want - 1));
  EXPECT_NEAR(ppl / want, 1.0, 0.005);
}

INSTANTIATE_TEST_SUITE_P(Models, Reference, ::testing::ValuesIn(kModels),
                         [](const ::testing::TestParamInfo<RefModel>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace leanlm
