// Second moments of every weight matrix's input, H = sum over calibration tokens of x x^T, the
// statistics LeanQuant fits its grids and error feedback to (quant/leanquant.h). Matrices that
// read the same input share one: Q, K and V; gate and up.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace leanlm {

struct HessianSet {
  struct Entry {
    int n = 0;
    std::vector<float> H;  // [n][n], row-major: the upper triangle (j >= i) holds H; the rest is 0
  };
  std::map<std::string, Entry> by_input;  // "blk.3.attn_in", "blk.3.attn_out", "blk.3.ffn_in", "blk.3.ffn_down"
  int64_t tokens = 0;

  // The input a GGUF tensor reads ("blk.3.attn_k.weight" -> "blk.3.attn_in"); empty for tensors
  // whose input is not collected (the embeddings, the output matrix).
  static std::string input_of(const std::string& tensor_name);
  // The entry for a tensor, or null.
  const Entry* for_tensor(const std::string& tensor_name) const;
};

// H[i][j] += sum_t x[t][i] x[t][j] for j >= i (the upper triangle; the rest untouched), x [T] rows
// of n floats, `stride` apart.
void add_second_moment(float* H, const float* x, int T, int n, int64_t stride);

// Runs the model over chunks of `ctx` tokens of `text` (whole chunks, up to n_tokens) and sums
// x x^T of every matrix input (add_second_moment, on set_blas_threads' threads; batches are added
// in order).
HessianSet collect_hessians(Engine& engine, const std::vector<int>& text, int ctx, int n_tokens, bool progress);

}  // namespace leanlm
