// Learning CQ codebooks from a model's own keys and values (`leanlm calibrate`, tests), and the key
// that ties a codebook sidecar to its model.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/engine.h"
#include "kv/codebooks.h"

namespace leanlm {

// The model's fingerprint (its shape and the bytes of its key/value projections) and cache shape.
CodebookKey codebook_key(const Model& model);

// Runs the model over whole chunks of `ctx` tokens of `text` (up to n_tokens), collecting every
// key and value as it enters the cache, then learns one codebook per (configuration, layer, side,
// KV head, channel group) by k-means, unweighted. Deterministic for a seed.
std::vector<CodebookSet> learn_codebooks(Engine& engine, const std::vector<int>& text, int ctx, int n_tokens,
                                         const std::vector<CodecSpec>& specs, int iters, uint64_t seed, bool progress);

}  // namespace leanlm
