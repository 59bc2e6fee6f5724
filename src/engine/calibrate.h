// Learning CQ codebooks from a model's own keys and values (`leanlm calibrate`, tests), and the key
// that ties a codebook sidecar to its model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kv/codebooks.h"

namespace leanlm {

// Calibration text as tokens: only as much of `text` as n_tokens needs (a token is rarely more
// than 8 bytes of text).
std::vector<int> calibration_tokens(const Engine& engine, const std::string& text, int n_tokens);
// How many whole chunks of ctx tokens a calibration of n_tokens runs over (at least one); Error when
// the text holds none.
int calibration_chunks(size_t text_tokens, int ctx, int n_tokens);
// Runs the model over the first n_chunks chunks of ctx tokens of text, each a new sequence (its first
// token BOS where the model adds one); the Forward taps collect what they need.
void feed_chunks(Engine& engine, const std::vector<int>& text, int ctx, int n_chunks, const char* label, bool progress);

// The model's fingerprint (its shape and the bytes of its key/value projections) and cache shape.
CodebookKey codebook_key(const Model& model);

// How key codebooks weigh the error of each channel group. None: k-means on the keys (|x - c|^2).
// Query-aware: the error of the scores, E_q[(q . (x - c))^2] = (x - c)^T S (x - c) with S the
// second moment of the group's channels over the queries that read the KV head (Full: S's c x c
// block; Diagonal: its diagonal), learned by k-means in that metric; the metric is saved with the
// books and used again to code keys. Values are always plain k-means.
enum class QueryWeighting { None, Diagonal, Full };
QueryWeighting parse_query_weighting(const std::string& text);  // "none", "diag", "full"

// Runs the model over whole chunks of `ctx` tokens of `text` (up to n_tokens), collecting every
// key and value as it enters the cache (and the queries' second moments), then learns one codebook
// per (configuration, layer, side, KV head, channel group) by k-means: CQ both sides, PQ keys only
// (16 centroids per sub-space). The first skip_first positions of each chunk are left out (caches
// with sinks=N keep those tokens in fp16: centroids spent on them would be wasted). Deterministic
// for a seed.
std::vector<CodebookSet> learn_codebooks(Engine& engine, const std::vector<int>& text, int ctx, int n_tokens,
                                         const std::vector<CodecSpec>& specs, int iters, uint64_t seed, bool progress,
                                         QueryWeighting weighting = QueryWeighting::None, int skip_first = 0);

}  // namespace leanlm
