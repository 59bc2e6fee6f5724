// The arithmetic of perplexity and of comparing two caches' predictions, shared by `leanlm
// perplexity`, `leanlm eval` and the tests: llama-perplexity's chunks, log-softmax, KL divergence.
#pragma once
#include <vector>

#include "model/forward.h"
#include "tokenizer/tokenizer.h"

namespace leanlm {

// Chunk ci (n_ctx tokens) of the text, its first token replaced by BOS when the model adds one:
// llama-perplexity's method (each chunk starts from an empty cache, the second half is scored).
std::vector<int> perplexity_chunk(const std::vector<int>& tokens, int ci, int n_ctx, const Tokenizer& tok);
// The forward-pass batch of positions [start, start + n) of one chunk of n_ctx tokens, logits asked
// for the positions that are scored (first .. n_ctx - 2: each predicts the token after it).
std::vector<BatchEntry> perplexity_batch(SequenceState* seq, const std::vector<int>& chunk, int start, int n, int first);
// out[v] = log softmax(logits)[v], normalised in double precision.
void log_softmax(const float* logits, int V, std::vector<float>& out);
// log softmax(logits)[target].
double log_prob(const float* logits, int V, int target);
// KL(p || q) of two log-probability rows (natural log); rounding can make it slightly negative,
// so it is clamped at 0.
double kl_divergence(const float* p_log, const float* q_log, int V);

}  // namespace leanlm
