// The plain reference of every KV kernel: what the AVX2 and AVX-512 variants are tested against.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kv/kv_kernels.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

inline float elem(const float* p, size_t i) { return p[i]; }
inline float elem(const uint16_t* p, size_t i) { return fp16_to_f32_ref(p[i]); }

template <typename T>
void rows_scores(const T* rows, size_t stride, int n, int dim, const float* q, int nq, int qs, float* out, int os) {
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < n; ++j) {
      float s = 0.f;
      for (int c = 0; c < dim; ++c) s += q[size_t(i) * qs + c] * elem(rows, size_t(j) * stride + c);
      out[size_t(i) * os + j] = s;
    }
}

template <typename T>
void rows_accum(const T* rows, size_t stride, int n, int dim, const float* w, int nq, int ws, float* out, int os) {
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < n; ++j) {
      const float wj = w[size_t(i) * ws + j];
      if (wj == 0.f) continue;
      for (int c = 0; c < dim; ++c) out[size_t(i) * os + c] += wj * elem(rows, size_t(j) * stride + c);
    }
}

void tkeys_scores(const uint16_t* kt, int ld, int j0, int j1, int dim, const float* q, int nq, int qs, float* out,
                  int os) {
  for (int i = 0; i < nq; ++i)
    for (int j = j0; j < j1; ++j) {
      float s = 0.f;
      for (int c = 0; c < dim; ++c) s += q[size_t(i) * qs + c] * fp16_to_f32_ref(kt[size_t(c) * ld + j]);
      out[size_t(i) * os + (j - j0)] = s;
    }
}

void lane_scores(const LaneKeys& k, int j0, int j1, int dim, const QuantQueries& q, float* out, int os) {
  const int group = k.scale ? 32 : dim;
  for (int i = 0; i < q.n; ++i) {
    const int8_t* qi = q.codes.data() + size_t(i) * dim;
    for (int j = j0; j < j1; ++j) {
      float s = 0.f;
      for (int g = 0; g < dim / group; ++g) {
        int32_t acc = 0, qsum = 0;
        for (int c = g * group; c < (g + 1) * group; ++c) {
          acc += int32_t(qi[c]) * lane_key_code(k.codes, dim, k.bits, k.T, j, c);
          qsum += qi[c];
        }
        const float d = k.scale ? fp16_to_f32_ref(k.scale[size_t(g) * k.T + j]) : 1.f;
        s += d * float(acc - k.zero * qsum);
      }
      out[size_t(i) * os + (j - j0)] = q.d[i] * s + (q.bias.empty() ? 0.f : q.bias[i]);
    }
  }
}

void kivi_key_scores(const LaneKeys& k, const uint16_t* scale, const uint16_t* min, int j0, int j1, int dim,
                     const float* q, int nq, int qs, float* out, int os) {
  std::vector<float> mul(dim);
  for (int c = 0; c < dim; ++c) mul[c] = fp16_to_f32_ref(scale[c]);
  QuantQueries qq;
  quantize_queries(q, nq, qs, dim, mul.data(), qq);
  qq.bias.resize(nq);
  for (int i = 0; i < nq; ++i) {
    float b = 0.f;
    for (int c = 0; c < dim; ++c) b += q[size_t(i) * qs + c] * fp16_to_f32_ref(min[c]);
    qq.bias[i] = b;
  }
  lane_scores(k, j0, j1, dim, qq, out, os);
}

int value_code(const CodeRows& v, int j, int c) {
  const uint8_t* unit = v.codes + size_t(j) * v.stride + size_t(c / 32) * (32 * v.bits / 8);
  const int e = c % 32;
  if (v.bits == 8) return int(int8_t(unit[e]));
  if (v.bits == 4) return e < 16 ? (unit[e] & 15) : (unit[e - 16] >> 4);
  return (unit[e % 8] >> (2 * (e / 8))) & 3;
}

void code_accum(const CodeRows& v, int n, int dim, const float* w, int nq, int ws, float* out, int os) {
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < n; ++j) {
      const float wj = w[size_t(i) * ws + j];
      if (wj == 0.f) continue;
      for (int c = 0; c < dim; ++c) {
        const size_t g = size_t(c / v.group) * v.scale_stride + j;
        const float x = fp16_to_f32_ref(v.scale[g]) * float(value_code(v, j, c) - v.zero) +
                        (v.min ? fp16_to_f32_ref(v.min[g]) : 0.f);
        out[size_t(i) * os + c] += wj * x;
      }
    }
}

void lut_scores(const uint8_t* codes, int T, int j0, int j1, int ng, const float* lut, int nq, float* out, int os) {
  for (int i = 0; i < nq; ++i)
    for (int j = j0; j < j1; ++j) {
      float s = 0.f;
      for (int g = 0; g < ng; ++g) s += lut[(size_t(i) * ng + g) * 256 + codes[size_t(g) * T + j]];
      out[size_t(i) * os + (j - j0)] = s;
    }
}

void lut_build(const float* cen_t, int ng, int C, const float* q, int nq, int qs, float* lut) {
  for (int i = 0; i < nq; ++i)
    for (int g = 0; g < ng; ++g)
      for (int k = 0; k < 256; ++k) {
        float s = 0.f;
        for (int e = 0; e < C; ++e) s += q[size_t(i) * qs + g * C + e] * cen_t[(size_t(g) * C + e) * 256 + k];
        lut[(size_t(i) * ng + g) * 256 + k] = s;
      }
}

void centroid_accum(const uint8_t* codes, size_t stride, int n, int dim, int C, const float* cen, const float* w,
                    int nq, int ws, float* out, int os) {
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < n; ++j) {
      const float wj = w[size_t(i) * ws + j];
      if (wj == 0.f) continue;
      const uint8_t* row = codes + size_t(j) * stride;
      for (int c = 0; c < dim; ++c) out[size_t(i) * os + c] += wj * cen[(size_t(c / C) * 256 + row[c / C]) * C + c % C];
    }
}

void pq_scores(const uint8_t* codes, int j0, int j1, int M, const uint8_t* lut, int nq, const float* scale,
               const float* bias, float* out, int os) {
  for (int i = 0; i < nq; ++i)
    for (int j = j0; j < j1; ++j) {
      const uint8_t* sub = codes + size_t(j / 32) * M * 16;
      const int k = j % 32;
      uint32_t sum = 0;
      for (int m = 0; m < M; ++m) {
        const uint8_t byte = sub[m * 16 + k % 16];
        sum += lut[(size_t(i) * M + m) * 16 + (k < 16 ? byte & 15 : byte >> 4)];
      }
      out[size_t(i) * os + (j - j0)] = std::fma(scale[i], float(sum), bias[i]);
    }
}

float max_ref(const float* x, int n) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = std::fmax(m, x[i]);
  return m;
}

}  // namespace

void fill_kv_scalar(KvKernels& t) {
  t.rows_scores_f16 = rows_scores<uint16_t>;
  t.rows_scores_f32 = rows_scores<float>;
  t.rows_accum_f16 = rows_accum<uint16_t>;
  t.rows_accum_f32 = rows_accum<float>;
  t.tkeys_scores_f16 = tkeys_scores;
  t.lane_scores = lane_scores;
  t.kivi_key_scores = kivi_key_scores;
  t.code_accum = code_accum;
  t.lut_scores = lut_scores;
  t.lut_build = lut_build;
  t.centroid_accum = centroid_accum;
  t.pq_scores = pq_scores;
  t.exp_shift_sum = ref::exp_shift_sum;
  t.max_of = max_ref;
}

}  // namespace leanlm
