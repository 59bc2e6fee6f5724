// Token sampling: repetition penalty, top-k, top-p, min-p, temperature, seeded draw.
// temperature <= 0 means greedy (argmax). Same seed and settings, same tokens.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace leanlm {

struct SamplerOptions {
  float temperature = 0.8f;
  int top_k = 40;          // 0: off
  float top_p = 0.95f;     // 1: off
  float min_p = 0.05f;     // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& o);
  // Chooses a token from logits[n_vocab]; `history` are the tokens so far (for the penalty).
  int sample(const float* logits, int n_vocab, const std::vector<int>& history);
  static int argmax(const float* logits, int n);

 private:
  SamplerOptions o_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> cand_;
  std::vector<float> weights_;  // the draw's weights, [cand_.size()]
};

}  // namespace leanlm
