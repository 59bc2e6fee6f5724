// CQ codebooks: learning them (k-means with k-means++ seeding on real keys and values) and the
// sidecar file `leanlm calibrate` writes next to a model.
//
// Sidecar layout (little-endian): "LLMCQ\0\0\1", u64 model fingerprint, u32 n_layer, n_kv_head,
// head_dim, u32 number of configurations; per configuration: u32 channels, u32 bits, then for each
// layer the key and the value codebook, [n_kv_head][head_dim / channels][2^bits][channels] f32.
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

struct CodebookSet {
  int channels = 0, bits = 0;
  ModelCodebooks books;  // per layer
};

void save_codebooks(const std::string& path, const CodebookKey& key, const std::vector<CodebookSet>& sets);
// The books for spec (a CQ codec); throws a clear Error for another model, a missing configuration
// or a damaged file.
ModelCodebooks load_codebooks(const std::string& path, const CodebookKey& key, const CodecSpec& spec);

}  // namespace leanlm
