// CQ codebooks: learning them (k-means with k-means++ seeding on real keys and values) and the
// sidecar file `leanlm calibrate` writes next to a model.
//
// Sidecar layout (little-endian): "LLMCQ\0\0\2", u64 model fingerprint, u32 n_layer, n_kv_head,
// head_dim, u32 number of configurations; per configuration: u32 channels, u32 bits, u32 flags
// (bit 0: query-aware key books carry their metric), then for each layer the key codebook
// [n_kv_head][head_dim / channels][2^bits][channels] f32, with bit 0 the key metric
// [n_kv_head][head_dim / channels][channels][channels] f32, and the value codebook. Version 1
// ("...\1") has no flags word and no metrics. PQ configurations (4 bits) leave their value books
// zero: PQ codes keys only.
// It is written to a temporary name and renamed, so a failed run leaves no half-written file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kv/block_codec.h"
#include "kv/kv_config.h"

namespace leanlm {

// What a sidecar must match: the model's fingerprint (engine/calibrate.h computes it from its
// shape and key/value projections) and the cache's shape.
struct CodebookKey {
  uint64_t fingerprint = 0;
  int n_layer = 0, n_kv_head = 0, head_dim = 0;
  std::string model_path;  // for messages
};

// k-means on n points of dim d (row-major), k centroids, k-means++ seeding from `seed`, at most
// `iters` Lloyd iterations. Deterministic for a seed. Returns [k][d].
std::vector<float> kmeans(const float* x, int n, int d, int k, uint64_t seed, int iters, int n_threads = 1);

// Query-aware k-means: the centroids that minimise sum_i |U (x_i - c(i))|^2 for an upper triangular
// U ([d][d] row-major, invertible): k-means on U x, centroids mapped back by U^-1.
std::vector<float> kmeans_in_metric(const float* x, int n, int d, int k, const float* U, uint64_t seed, int iters,
                                    int n_threads = 1);
// The upper triangular U with U^T U = S + ridge (S: [d][d] symmetric positive semi-definite),
// ridge = 1e-3 of the mean diagonal so that channels no query reads keep a little weight. Diagonal:
// only S's diagonal is used.
std::vector<float> metric_factor(const double* S, int d, bool diagonal);

struct CodebookSet {
  int channels = 0, bits = 0;
  ModelCodebooks books;  // per layer
};

void save_codebooks(const std::string& path, const CodebookKey& key, const std::vector<CodebookSet>& sets);
// The books for spec (a CQ codec); throws a clear Error for another model, a missing configuration
// or a damaged file.
ModelCodebooks load_codebooks(const std::string& path, const CodebookKey& key, const CodecSpec& spec);

}  // namespace leanlm
