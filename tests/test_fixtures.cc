// leanlm against llama.cpp on the tiny random-weight `llama` and `qwen2` models that
// scripts/make_fixtures.py writes (every weight type, GQA, Q/K/V biases, NeoX and normal RoPE,
// SentencePiece and byte-level BPE vocabularies). References: scripts/make_reference.py --tiny.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace leanlm {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

struct Fixture {
  nlohmann::json ref;
  std::vector<float> logits;  // [tokens][n_vocab]
  std::unique_ptr<Engine> engine;
};

Fixture& fixture(const std::string& name) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  Fixture& f = cache[name];
  const std::string golden = env_or("LEANLM_SOURCE_DIR", ".") + "/tests/golden/" + name + "/";
  std::ifstream js(golden + "reference.json");
  if (!js) throw std::runtime_error("missing " + golden + "reference.json");
  f.ref = nlohmann::json::parse(js);
  const size_t n = f.ref["logit_tokens"].size() * f.ref["n_vocab"].get<size_t>();
  f.logits.resize(n);
  std::ifstream bin(golden + "logits.bin", std::ios::binary);
  bin.read(reinterpret_cast<char*>(f.logits.data()), n * sizeof(float));
  if (!bin) throw std::runtime_error("truncated " + golden + "logits.bin");
  EngineOptions o;
  o.model_path = env_or("LEANLM_FIXTURE_DIR", LEANLM_FIXTURE_DIR) + "/" + name + ".gguf";
  o.ctx = 256;
  o.threads = 2;
  f.engine = std::make_unique<Engine>(o);
  return f;
}

class TinyModel : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyModel, TokenizerMatchesLlamaCpp) {
  Fixture& f = fixture(GetParam());
  for (const auto& c : f.ref["tokenizer"]) {
    const std::string text = c["text"];
    EXPECT_EQ(f.engine->tokenizer().encode(text, true, true), c["ids"].get<std::vector<int>>()) << "text: " << text;
  }
}

// Every position's full distribution, fed as one batch (GEMM, prompt attention) and one token at a
// time (row kernels, decode attention).
TEST_P(TinyModel, LogitsMatchLlamaCpp) {
  Fixture& f = fixture(GetParam());
  const std::vector<int> toks = f.ref["logit_tokens"].get<std::vector<int>>();
  const int V = f.engine->n_vocab();
  ASSERT_EQ(V, f.ref["n_vocab"].get<int>());
  for (bool batched : {true, false}) {
    auto seq = f.engine->new_sequence();
    std::vector<float> got;
    if (batched) {
      f.engine->feed(*seq, toks, &got);
    } else {
      for (int t : toks) {
        const float* lg = f.engine->feed(*seq, {t});
        got.insert(got.end(), lg, lg + V);
      }
    }
    double kl_sum = 0, max_diff = 0, entropy = 0;
    int agree = 0;
    for (size_t p = 0; p < toks.size(); ++p) {
      const float* a = f.logits.data() + p * V;
      const float* b = got.data() + p * V;
      double ma = -1e30, mb = -1e30;
      for (int v = 0; v < V; ++v) ma = std::max<double>(ma, a[v]), mb = std::max<double>(mb, b[v]);
      double za = 0, zb = 0;
      for (int v = 0; v < V; ++v) za += std::exp(a[v] - ma), zb += std::exp(b[v] - mb);
      double kl = 0;
      for (int v = 0; v < V; ++v) {
        const double la = a[v] - ma - std::log(za), lb = b[v] - mb - std::log(zb);
        kl += std::exp(la) * (la - lb);
        entropy -= std::exp(la) * la;
        max_diff = std::max(max_diff, std::fabs(double(a[v]) - b[v]));
      }
      kl_sum += kl;
      agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
    }
    const double mean_kl = kl_sum / toks.size(), top1 = double(agree) / toks.size();
    std::printf("%s %s: mean KL %.2e  top-1 %.3f  max |logit diff| %.4f  (reference entropy %.2f nats)\n",
                GetParam().c_str(), batched ? "batch" : "token by token", mean_kl, top1, max_diff,
                entropy / toks.size());
    // A fixture whose distributions were nearly one-hot would make the KL bound meaningless.
    EXPECT_GE(entropy / toks.size(), 1.0) << "degenerate fixture";
    EXPECT_LE(mean_kl, 1e-4);
    EXPECT_GE(top1, 0.97);
  }
}

TEST_P(TinyModel, GreedyMatchesLlamaCpp) {
  Fixture& f = fixture(GetParam());
  const int V = f.engine->n_vocab();
  for (const auto& c : f.ref["greedy"]) {
    const std::vector<int> prompt = c["prompt_tokens"].get<std::vector<int>>();
    const std::vector<int> want = c["tokens"].get<std::vector<int>>();
    const std::vector<double> gaps = c["gaps"].get<std::vector<double>>();
    auto seq = f.engine->new_sequence();
    const float* lg = f.engine->feed(*seq, prompt);
    for (size_t i = 0; i < want.size(); ++i) {
      const int got = Sampler::argmax(lg, V);
      if (got != want[i]) {
        // Allowed only at a near-tie of llama.cpp's two best logits.
        EXPECT_LT(gaps[i], 1e-3) << "diverged at token " << i << " of '" << c["prompt"].get<std::string>() << "'";
        break;
      }
      lg = f.engine->feed(*seq, {got});
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TinyModel, ::testing::Values("tiny-llama", "tiny-qwen2"),
                         [](const auto& info) { return info.param == "tiny-llama" ? std::string("llama") : std::string("qwen2"); });

}  // namespace
}  // namespace leanlm
