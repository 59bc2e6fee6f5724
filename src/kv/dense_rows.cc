#include "kv/dense_rows.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "util/aligned.h"

namespace leanlm {

namespace {

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

inline void to_f32(const float* src, float* dst, int n) { std::memcpy(dst, src, size_t(n) * 4); }
inline void to_f32(const uint16_t* src, float* dst, int n) {
  for (int i = 0; i < n; i += 8) _mm256_store_ps(dst + i, load8(src + i));
}

// The four horizontal sums of a, b, c, d as one vector.
inline __m128 hsum8x4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);  // per 128-bit lane: a b c d partial sums
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

inline void store4(float* dst, __m128 v, int n) {
  if (n == 4) {
    _mm_storeu_ps(dst, v);
  } else {
    alignas(16) float t[4];
    _mm_store_ps(t, v);
    for (int j = 0; j < n; ++j) dst[j] = t[j];
  }
}


}  // namespace

  // Slots are taken four at a time (converted to f32 once, then shared by every query), and
  // queries two at a time, so each loaded key feeds two FMAs.
template <typename T>
void dense_dot(const T* rows, size_t row_stride, int n_rows, int d, const float* q, int n_q, int q_stride,
               float* out, int out_stride) {
    const int s0 = 0, s1 = n_rows;
    thread_local AlignedVec<float> kf;
    if (kf.size() < size_t(4) * d) kf.resize(size_t(4) * d);
    for (int sb = s0; sb < s1; sb += 4) {
      const int ns = std::min(4, s1 - sb);
      for (int j = 0; j < 4; ++j) to_f32(rows + size_t(sb + std::min(j, ns - 1)) * row_stride, kf.data() + j * d, d);
      const float* k0 = kf.data();
      const float* k1 = k0 + d;
      const float* k2 = k1 + d;
      const float* k3 = k2 + d;
      int i = 0;
      for (; i + 2 <= n_q; i += 2) {
        const float* qa = q + size_t(i) * q_stride;
        const float* qb = qa + q_stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int e = 0; e < d; e += 8) {
          const __m256 x = _mm256_loadu_ps(qa + e), y = _mm256_loadu_ps(qb + e);
          const __m256 c0 = _mm256_load_ps(k0 + e), c1 = _mm256_load_ps(k1 + e);
          const __m256 c2 = _mm256_load_ps(k2 + e), c3 = _mm256_load_ps(k3 + e);
          a0 = _mm256_fmadd_ps(x, c0, a0), a1 = _mm256_fmadd_ps(x, c1, a1);
          a2 = _mm256_fmadd_ps(x, c2, a2), a3 = _mm256_fmadd_ps(x, c3, a3);
          b0 = _mm256_fmadd_ps(y, c0, b0), b1 = _mm256_fmadd_ps(y, c1, b1);
          b2 = _mm256_fmadd_ps(y, c2, b2), b3 = _mm256_fmadd_ps(y, c3, b3);
        }
        store4(out + size_t(i) * out_stride + (sb - s0), hsum8x4(a0, a1, a2, a3), ns);
        store4(out + size_t(i + 1) * out_stride + (sb - s0), hsum8x4(b0, b1, b2, b3), ns);
      }
      for (; i < n_q; ++i) {
        const float* qa = q + size_t(i) * q_stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int e = 0; e < d; e += 8) {
          const __m256 x = _mm256_loadu_ps(qa + e);
          a0 = _mm256_fmadd_ps(x, _mm256_load_ps(k0 + e), a0), a1 = _mm256_fmadd_ps(x, _mm256_load_ps(k1 + e), a1);
          a2 = _mm256_fmadd_ps(x, _mm256_load_ps(k2 + e), a2), a3 = _mm256_fmadd_ps(x, _mm256_load_ps(k3 + e), a3);
        }
        store4(out + size_t(i) * out_stride + (sb - s0), hsum8x4(a0, a1, a2, a3), ns);
      }
    }
  }

  // Values eight slots at a time (converted once), added into each query's output row.
template <typename T>
void dense_axpy(const T* rows, size_t row_stride, int n_rows, int d, const float* w, int n_q, int w_stride,
                float* out, int out_stride) {
    const int s0 = 0, s1 = n_rows;
    constexpr int kS = 8;
    thread_local AlignedVec<float> vf;
    if (vf.size() < size_t(kS) * d) vf.resize(size_t(kS) * d);
    for (int sb = s0; sb < s1; sb += kS) {
      const int ns = std::min(kS, s1 - sb);
      bool converted = false;
      for (int i = 0; i < n_q; ++i) {
        const float* wi = w + size_t(i) * w_stride + (sb - s0);
        float wl[kS];
        bool any = false;
        for (int j = 0; j < kS; ++j) {
          wl[j] = j < ns ? wi[j] : 0.f;
          any |= wl[j] != 0.f;
        }
        if (!any) continue;  // masked (future or out-of-window) slots
        if (!converted) {
          for (int j = 0; j < ns; ++j) to_f32(rows + size_t(sb + j) * row_stride, vf.data() + j * d, d);
          for (int j = ns; j < kS; ++j) std::fill(vf.data() + j * d, vf.data() + (j + 1) * d, 0.f);
          converted = true;
        }
        float* o = out + size_t(i) * out_stride;
        for (int e = 0; e < d; e += 8) {
          __m256 acc = _mm256_loadu_ps(o + e);
          for (int j = 0; j < kS; ++j) acc = _mm256_fmadd_ps(_mm256_set1_ps(wl[j]), _mm256_load_ps(vf.data() + j * d + e), acc);
          _mm256_storeu_ps(o + e, acc);
        }
      }
    }
  }


template void dense_dot<float>(const float*, size_t, int, int, const float*, int, int, float*, int);
template void dense_dot<uint16_t>(const uint16_t*, size_t, int, int, const float*, int, int, float*, int);
template void dense_axpy<float>(const float*, size_t, int, int, const float*, int, int, float*, int);
template void dense_axpy<uint16_t>(const uint16_t*, size_t, int, int, const float*, int, int, float*, int);

}  // namespace leanlm
