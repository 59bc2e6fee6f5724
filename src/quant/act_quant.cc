#include "quant/act_quant.h"

#include <immintrin.h>

#include <cmath>

#include "util/fp16.h"

namespace leanlm {

ActScheme act_scheme(GgmlType t) {
  switch (t) {
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
      return ActScheme::Q8_K;
    case GgmlType::LQ2: case GgmlType::LQ3: case GgmlType::LQ4:
      return ActScheme::Q8_G;
    default:
      return ActScheme::Q8_0;
  }
}

namespace {

// Scale stored with a block and multiplier that makes its codes, from its largest magnitude amax
// and the signed element `max` that has it (Q8_K keeps the sign; see act_quant.h).
void block_scale(ActScheme scheme, int block, float amax, float max, float* scale, float* mul) {
  *scale = *mul = 0.f;
  if (amax <= 0.f) return;
  if (scheme == ActScheme::Q8_K && block == 256) {
    *mul = -127.f / max;
    *scale = 1.f / *mul;
  } else if (scheme == ActScheme::Q8_G) {
    *mul = 127.f / amax;
    *scale = amax / 127.f;
  } else {
    *scale = fp16_to_f32(f32_to_fp16(amax / 127.f));
    *mul = 127.f / amax;
  }
}

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

// The same with AVX2, 32 elements at a time (identical codes: _mm256_round_ps rounds ties to even).
void encode32_avx2(const float* x, float mul, int8_t* q, int16_t* sum16) {
  const __m256 m = _mm256_set1_ps(mul);
  const __m256 lim = _mm256_set1_ps(127.f);
  __m256i v[4];
  for (int k = 0; k < 4; ++k) {
    __m256 f = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), m), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm256_max_ps(_mm256_min_ps(f, lim), _mm256_sub_ps(_mm256_setzero_ps(), lim));
    v[k] = _mm256_cvtps_epi32(f);
  }
  for (int h = 0; h < 2; ++h) {
    const __m256i s = _mm256_add_epi32(v[2 * h], v[2 * h + 1]);
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_hadd_epi32(t, t);
    t = _mm_hadd_epi32(t, t);
    sum16[h] = int16_t(_mm_cvtsi128_si32(t));
  }
  // int32 -> int8 with the lane crossings of packs undone.
  const __m256i p16a = _mm256_packs_epi32(v[0], v[1]), p16b = _mm256_packs_epi32(v[2], v[3]);
  __m256i p8 = _mm256_packs_epi16(p16a, p16b);
  p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), p8);
}

float abs_max_avx2(const float* x, int n) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 mx = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 t = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  t = _mm_max_ps(t, _mm_movehl_ps(t, t));
  t = _mm_max_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}

}  // namespace

void quantize_act_row(const float* x, int n, int8_t* q, float* d, int16_t* sum16, ActScheme scheme) {
  const int block = act_group(n, scheme);
  for (int b0 = 0; b0 < n; b0 += block) {
    const float* xb = x + b0;
    const float amax = abs_max_avx2(xb, block);
    int j = 0;  // the first element of largest magnitude gives the sign
    while (amax > 0.f && std::fabs(xb[j]) != amax) ++j;
    float scale, mul;
    block_scale(scheme, block, amax, xb[j], &scale, &mul);
    for (int j = 0; j < block; j += 32) encode32_avx2(xb + j, mul, q + b0 + j, sum16 + (b0 + j) / 16);
    for (int b = b0 / 32; b < (b0 + block) / 32; ++b) d[b] = scale;
  }
}

void quantize_act_row_ref(const float* x, int n, int8_t* q, float* d, int16_t* sum16, ActScheme scheme) {
  const int block = act_group(n, scheme);
  for (int b0 = 0; b0 < n; b0 += block) {
    const float* xb = x + b0;
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < block; ++j) {
      const float a = std::fabs(xb[j]);
      if (a > amax) amax = a, max = xb[j];
    }
    float scale, mul;
    block_scale(scheme, block, amax, max, &scale, &mul);
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
