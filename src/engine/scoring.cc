#include "engine/scoring.h"

#include <algorithm>
#include <cmath>

namespace leanlm {

std::vector<int> perplexity_chunk(const std::vector<int>& tokens, int ci, int n_ctx, const Tokenizer& tok) {
  std::vector<int> chunk(tokens.begin() + int64_t(ci) * n_ctx, tokens.begin() + int64_t(ci + 1) * n_ctx);
  if (tok.add_bos()) chunk[0] = tok.bos();
  return chunk;
}

std::vector<BatchEntry> perplexity_batch(SequenceState* seq, const std::vector<int>& chunk, int start, int n, int first) {
  const int n_ctx = int(chunk.size());
  std::vector<BatchEntry> batch;
  batch.reserve(n);
  for (int p = start; p < start + n; ++p) batch.push_back({seq, chunk[p], p, p >= first && p < n_ctx - 1});
  return batch;
}

namespace {

// max and log(sum exp(x - max)) of a row.
void log_sum_exp(const float* x, int V, float& mx, double& lse) {
  mx = *std::max_element(x, x + V);
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(double(x[v] - mx));
  lse = std::log(sum);
}

}  // namespace

void log_softmax(const float* logits, int V, std::vector<float>& out) {
  float mx;
  double lse;
  log_sum_exp(logits, V, mx, lse);
  out.resize(V);
  const float shift = mx + float(lse);
  for (int v = 0; v < V; ++v) out[v] = logits[v] - shift;
}

double log_prob(const float* logits, int V, int target) {
  float mx;
  double lse;
  log_sum_exp(logits, V, mx, lse);
  return double(logits[target] - mx) - lse;
}

double kl_divergence(const float* p_log, const float* q_log, int V) {
  double kl = 0;
  for (int v = 0; v < V; ++v) kl += std::exp(double(p_log[v])) * (double(p_log[v]) - q_log[v]);
  return std::max(0.0, kl);
}

}  // namespace leanlm
