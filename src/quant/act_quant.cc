#include "quant/act_quant.h"

#include <cmath>

namespace leanlm {

void quantize_act_row(const float* x, int n, int8_t* q, float* d, int16_t* sum16) {
  for (int b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float scale = amax / 127.f;
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    d[b] = scale;
    int s0 = 0, s1 = 0;
    for (int j = 0; j < 32; ++j) {
      int v = int(std::nearbyint(xb[j] * inv));
      v = v > 127 ? 127 : (v < -127 ? -127 : v);
      q[b * 32 + j] = int8_t(v);
      (j < 16 ? s0 : s1) += v;
    }
    sum16[2 * b] = int16_t(s0);
    sum16[2 * b + 1] = int16_t(s1);
  }
}

void ActBatch::quantize(const float* x, int rows, int n, int64_t x_stride) {
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
                     s_.data() + int64_t(r) * (n / 16));
}

}  // namespace leanlm
