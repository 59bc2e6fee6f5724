// Activations quantized to int8 for integer dot products with quantized weights.
//
// A row of n floats (n % 32 == 0) becomes n int8 codes in [-127, 127], one float scale per 32
// elements, and one int16 sum of codes per 16 elements (the K formats subtract per-sub-block
// offsets, which need those sums). Finer than the weights' blocks, so one format serves all types.
#pragma once
#include <cstdint>
#include <vector>

#include "util/aligned.h"

namespace leanlm {

struct ActRow {
  const int8_t* q;      // [n]
  const float* d;       // [n/32]
  const int16_t* sum16; // [n/16]
};

void quantize_act_row(const float* x, int n, int8_t* q, float* d, int16_t* sum16);

// Quantized copies of a batch of activation rows.
class ActBatch {
 public:
  void quantize(const float* x, int rows, int n, int64_t x_stride);
  ActRow row(int r) const {
    return {q_.data() + int64_t(r) * n_, d_.data() + int64_t(r) * (n_ / 32),
            s_.data() + int64_t(r) * (n_ / 16)};
  }
  int rows() const { return rows_; }
  int n() const { return n_; }

 private:
  int rows_ = 0, n_ = 0;
  AlignedVec<int8_t> q_;
  AlignedVec<float> d_;
  AlignedVec<int16_t> s_;
};

}  // namespace leanlm
