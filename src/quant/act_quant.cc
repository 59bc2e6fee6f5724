#include "quant/act_quant.h"

#include <cmath>

#include "util/fp16.h"

namespace leanlm {

ActScheme act_scheme(GgmlType t) {
  switch (t) {
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
      return ActScheme::Q8_K;
    default:
      return ActScheme::Q8_0;
  }
}

namespace {

// Codes for one block of n elements at multiplier `mul`; writes the 16-element sums.
void encode(const float* x, int n, float mul, int8_t* q, int16_t* sum16) {
  for (int j0 = 0; j0 < n; j0 += 16) {
    int s = 0;
    for (int j = j0; j < j0 + 16; ++j) {
      int v = int(std::nearbyint(x[j] * mul));  // default rounding mode: ties to even
      v = v > 127 ? 127 : (v < -127 ? -127 : v);
      q[j] = int8_t(v);
      s += v;
    }
    sum16[j0 / 16] = int16_t(s);
  }
}

}  // namespace

void quantize_act_row(const float* x, int n, int8_t* q, float* d, int16_t* sum16, ActScheme scheme) {
  const int block = (scheme == ActScheme::Q8_K && n % 256 == 0) ? 256 : 32;
  for (int b0 = 0; b0 < n; b0 += block) {
    const float* xb = x + b0;
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < block; ++j) {
      const float a = std::fabs(xb[j]);
      if (a > amax) amax = a, max = xb[j];
    }
    float scale = 0.f, mul = 0.f;
    if (amax > 0.f) {
      if (block == 256) {
        mul = -127.f / max;
        scale = 1.f / mul;
      } else {
        scale = fp16_to_f32(f32_to_fp16(amax / 127.f));
        mul = 127.f / amax;
      }
    }
    encode(xb, block, mul, q + b0, sum16 + b0 / 16);
    for (int b = b0 / 32; b < (b0 + block) / 32; ++b) d[b] = scale;
  }
}

void ActBatch::quantize(const float* x, int rows, int n, int64_t x_stride, ActScheme scheme) {
  rows_ = rows;
  n_ = n;
  const size_t total = size_t(rows) * n;
  if (q_.size() < total) {
    q_.resize(total);
    d_.resize(total / 32);
    s_.resize(total / 16);
  }
  for (int r = 0; r < rows; ++r)
    quantize_act_row(x + r * x_stride, n, q_.data() + int64_t(r) * n, d_.data() + int64_t(r) * (n / 32),
                     s_.data() + int64_t(r) * (n / 16), scheme);
}

}  // namespace leanlm
