// Activations quantized to int8 for integer dot products with quantized weights.
//
// A row of n floats (n % 32 == 0) becomes n int8 codes, one float scale per 32 elements, and one
// int16 sum of codes per 16 elements (the K formats subtract per-sub-block offsets, which need
// those sums). Two schemes fill that one layout, the same two llama.cpp uses, so that both engines
// multiply the same integers:
//   Q8_0  one scale per 32: d = amax/127 rounded to fp16; codes = round(x * 127/amax)
//         (legacy weight formats Q4_0 ... Q8_0)
//   Q8_K  one scale per 256: codes = round(x * -127/max), d = 1/(-127/max), max the element of
//         largest magnitude (K formats; every 32-block of a 256-block gets the same d)
// Rounding is to nearest, ties to even, in both.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/quant_types.h"
#include "util/aligned.h"

namespace leanlm {

enum class ActScheme { Q8_0, Q8_K, Q8_G };
// The scheme used with a weight type (Q8_K for the K formats, Q8_G for LQ, Q8_0 otherwise).
ActScheme act_scheme(GgmlType weight_type);
// Elements that share one scale in a row of n (n % 32 == 0) under scheme s.
constexpr int act_group(int n, ActScheme s) {
  if (s == ActScheme::Q8_K) return n % 256 == 0 ? 256 : 32;
  if (s == ActScheme::Q8_G) return n % 256 == 0 ? 256 : n % 128 == 0 ? 128 : n % 64 == 0 ? 64 : 32;
  return 32;
}

struct ActRow {
  const int8_t* q;      // [n]
  const float* d;       // [n/32]
  const int16_t* sum16; // [n/16]
};

void quantize_act_row(const float* x, int n, int8_t* q, float* d, int16_t* sum16, ActScheme scheme);
// Plain scalar reference of the above (same codes and scales, bit for bit).
void quantize_act_row_ref(const float* x, int n, int8_t* q, float* d, int16_t* sum16, ActScheme scheme);

// Quantized copies of a batch of activation rows.
class ActBatch {
 public:
  void quantize(const float* x, int rows, int n, int64_t x_stride, ActScheme scheme);
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
