#include "kernels/ops.h"
#include "util/fp16.h"
#include "kernels/simd_avx2.h"
#include "quant/dot.h"

#include <immintrin.h>

#include <cmath>
#include <vector>

namespace leanlm {

namespace ref {

void rms_norm(const float* x, const float* w, float* y, int n, float eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) y[i] = x[i] * inv * (w ? w[i] : 1.f);
}

void rope(float* x, int head_dim, int n_rot, int pos, float base, float freq_scale, const float* ff,
          RopeStyle style) {
  for (int i = 0; i < n_rot / 2; ++i) {
    double theta = double(pos) * freq_scale * std::pow(double(base), -2.0 * i / n_rot);
    if (ff) theta /= ff[i];
    const float c = float(std::cos(theta)), s = float(std::sin(theta));
    const int a = style == RopeStyle::Normal ? 2 * i : i;
    const int b = style == RopeStyle::Normal ? 2 * i + 1 : i + n_rot / 2;
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
  }
}

void softmax(float* x, int n) {
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::fmax(mx, x[i]);
  if (mx == -INFINITY) {  // everything masked: no weight anywhere
    for (int i = 0; i < n; ++i) x[i] = 0.f;
    return;
  }
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

float exp_shift_sum(float* x, int n, float m) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += x[i] = std::exp(x[i] - m);
  return float(sum);
}

void gelu_tanh(const float* x, float* y, int n) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  for (int i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.f + std::tanh(k * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}

void silu(const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = x[i] / (1.f + std::exp(-x[i]));
}

}  // namespace ref

namespace {

// GELU through a table indexed by the fp16 bits of x, holding gelu(x) rounded to fp16; beyond
// |x| >= 10 it is 0 or x. This is llama.cpp's evaluation; matching it keeps both engines' FFN
// outputs equal to the last bit, where an exact GELU differs from it by fp16 rounding (~5e-4
// relative) in every layer and adds up to visible logit differences.
const float* gelu_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) {
      const float x = fp16_to_f32(uint16_t(h));
      float y;
      ref::gelu_tanh(&x, &y, 1);
      t[h] = std::isfinite(y) ? fp16_to_f32(f32_to_fp16(y)) : 0.f;
    }
    return t;
  }();
  return table.data();
}

namespace avx2 {

void scale(float* x, float a, int n);

void rms_norm(const float* x, const float* w, float* y, int n, float eps) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  float ss = simd::hsum(acc);
  for (; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / n + eps);
  const __m256 vi = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vi);
    if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
    _mm256_storeu_ps(y + i, v);
  }
  for (; i < n; ++i) y[i] = x[i] * inv * (w ? w[i] : 1.f);
}

void softmax(float* x, int n) {
  __m256 vmx = _mm256_set1_ps(-INFINITY);
  int i = 0;
  for (; i + 8 <= n; i += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + i));
  float mx = -INFINITY;
  alignas(32) float t[8];
  _mm256_store_ps(t, vmx);
  for (float v : t) mx = std::fmax(mx, v);
  for (; i < n; ++i) mx = std::fmax(mx, x[i]);
  if (mx == -INFINITY) {
    for (i = 0; i < n; ++i) x[i] = 0.f;
    return;
  }
  const __m256 m = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = simd::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = simd::hsum(acc);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  avx2::scale(x, 1.f / sum, n);
}

void gelu_tanh(const float* x, float* y, int n) {
  const float* table = gelu_table();
  const __m256 lo = _mm256_set1_ps(-10.f), hi = _mm256_set1_ps(10.f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256i idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    __m256 r = _mm256_i32gather_ps(table, idx, 4);
    r = _mm256_blendv_ps(r, v, _mm256_cmp_ps(v, hi, _CMP_GE_OQ));
    r = _mm256_andnot_ps(_mm256_cmp_ps(v, lo, _CMP_LE_OQ), r);
    _mm256_storeu_ps(y + i, r);
  }
  for (; i < n; ++i)
    y[i] = x[i] <= -10.f ? 0.f : (x[i] >= 10.f ? x[i] : table[f32_to_fp16(x[i])]);
}

void silu(const float* x, float* y, int n) {
  const __m256 one = _mm256_set1_ps(1.f), neg = _mm256_set1_ps(-0.f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = simd::exp(_mm256_xor_ps(v, neg));
    _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
  }
  ref::silu(x + i, y + i, n - i);
}

void geglu(const float* gate, const float* up, float* y, int n) {
  avx2::gelu_tanh(gate, y, n);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(up + i)));
  for (; i < n; ++i) y[i] *= up[i];
}

void swiglu(const float* gate, const float* up, float* y, int n) {
  avx2::silu(gate, y, n);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(up + i)));
  for (; i < n; ++i) y[i] *= up[i];
}

void axpy(float a, const float* x, float* y, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

void scale(float* x, float a, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(va, _mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] *= a;
}

float dot_f32(const float* a, const float* b, int n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  float s = simd::hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace avx2

namespace scalar {

void gelu_tanh(const float* x, float* y, int n) {
  const float* table = gelu_table();
  for (int i = 0; i < n; ++i) y[i] = x[i] <= -10.f ? 0.f : (x[i] >= 10.f ? x[i] : table[f32_to_fp16(x[i])]);
}
void geglu(const float* gate, const float* up, float* y, int n) {
  gelu_tanh(gate, y, n);
  for (int i = 0; i < n; ++i) y[i] *= up[i];
}
void swiglu(const float* gate, const float* up, float* y, int n) {
  ref::silu(gate, y, n);
  for (int i = 0; i < n; ++i) y[i] *= up[i];
}
void axpy(float a, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}
void scale(float* x, float a, int n) {
  for (int i = 0; i < n; ++i) x[i] *= a;
}
float dot_f32(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace scalar

// The element-wise operators of one ISA. Those have no AVX-512 variant (they are a small share of
// a step): the AVX2 table serves AVX-512 machines too, as DotTable's lower entries do.
struct OpsTable {
  void (*rms_norm)(const float*, const float*, float*, int, float);
  void (*softmax)(float*, int);
  void (*gelu_tanh)(const float*, float*, int);
  void (*silu)(const float*, float*, int);
  void (*geglu)(const float*, const float*, float*, int);
  void (*swiglu)(const float*, const float*, float*, int);
  void (*axpy)(float, const float*, float*, int);
  void (*scale)(float*, float, int);
  float (*dot_f32)(const float*, const float*, int);
};

const OpsTable& ops() {
  static const OpsTable table = best_isa() == Isa::Scalar
      ? OpsTable{ref::rms_norm, ref::softmax, scalar::gelu_tanh, ref::silu, scalar::geglu,
                 scalar::swiglu, scalar::axpy, scalar::scale, scalar::dot_f32}
      : OpsTable{avx2::rms_norm, avx2::softmax, avx2::gelu_tanh, avx2::silu, avx2::geglu,
                 avx2::swiglu, avx2::axpy, avx2::scale, avx2::dot_f32};
  return table;
}

}  // namespace

void rope_angles(int pos, int n_rot, float base, float freq_scale, const float* ff, float* cs) {
  for (int i = 0; i < n_rot / 2; ++i) {
    double theta = double(pos) * freq_scale * std::pow(double(base), -2.0 * i / n_rot);
    if (ff) theta /= ff[i];
    cs[2 * i] = float(std::cos(theta));
    cs[2 * i + 1] = float(std::sin(theta));
  }
}

void rope_apply(float* x, int n_rot, RopeStyle style, const float* cs) {
  const int half = n_rot / 2;
  for (int i = 0; i < half; ++i) {
    const int a = style == RopeStyle::Normal ? 2 * i : i;
    const int b = style == RopeStyle::Normal ? 2 * i + 1 : i + half;
    const float x0 = x[a], x1 = x[b], c = cs[2 * i], s = cs[2 * i + 1];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
  }
}

void rope(float* x, int head_dim, int n_rot, int pos, float base, float freq_scale, const float* ff,
          RopeStyle style) {
  std::vector<float> cs(n_rot);
  rope_angles(pos, n_rot, base, freq_scale, ff, cs.data());
  rope_apply(x, n_rot, style, cs.data());
}

void rms_norm(const float* x, const float* w, float* y, int n, float eps) { ops().rms_norm(x, w, y, n, eps); }
void softmax(float* x, int n) { ops().softmax(x, n); }
void gelu_tanh(const float* x, float* y, int n) { ops().gelu_tanh(x, y, n); }
void silu(const float* x, float* y, int n) { ops().silu(x, y, n); }
void geglu(const float* gate, const float* up, float* y, int n) { ops().geglu(gate, up, y, n); }
void swiglu(const float* gate, const float* up, float* y, int n) { ops().swiglu(gate, up, y, n); }
void axpy(float a, const float* x, float* y, int n) { ops().axpy(a, x, y, n); }
void scale(float* x, float a, int n) { ops().scale(x, a, n); }
float dot_f32(const float* a, const float* b, int n) { return ops().dot_f32(a, b, n); }

}  // namespace leanlm
