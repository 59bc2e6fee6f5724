// AVX2 GEMM microkernel (see gemm.h for the data layout), for CPUs without AVX-512 VNNI.
//
// The same scheme as gemm_avx512.cc with 256-bit registers: a panel of 16 tokens is two registers
// of 8 tokens, and each u8 x s8 product goes through maddubs (pairs summed into int16) and madd
// (pairs of int16 summed into int32). maddubs saturates at 32767, so codes must stay below 128:
// true for every format except Q8_0 (codes up to 255), which this kernel does not take.
#include <immintrin.h>

#include <cstring>

#include "quant/gemm.h"

namespace leanlm {

namespace {

inline __m256i dot4(__m256i w, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

template <int G, int R>
void tile(const UnpackedRows& w, int r0, const ActPanels& x, int p, float* out, int out_stride) {
  const int ng = w.n / G;
  const int8_t* xq = x.panel_q(p);
  const float* xd = x.panel_d(p);
  const float* xs = x.panel_s(p);
  __m256 af[R][2];
  for (int r = 0; r < R; ++r) af[r][0] = af[r][1] = _mm256_setzero_ps();
  for (int g = 0; g < ng; ++g) {
    __m256i ai[R][2];
    for (int r = 0; r < R; ++r) ai[r][0] = ai[r][1] = _mm256_setzero_si256();
    for (int k = g * G; k < (g + 1) * G; k += 4) {
      const __m256i x0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + size_t(k) * kPanelTokens));
      const __m256i x1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + size_t(k) * kPanelTokens + 32));
      for (int r = 0; r < R; ++r) {
        int32_t wb;
        std::memcpy(&wb, w.row_codes(r0 + r) + k, 4);
        const __m256i wv = _mm256_set1_epi32(wb);
        ai[r][0] = _mm256_add_epi32(ai[r][0], dot4(wv, x0));
        ai[r][1] = _mm256_add_epi32(ai[r][1], dot4(wv, x1));
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 dx = _mm256_loadu_ps(xd + (g * G / 32) * kPanelTokens + 8 * h);
      __m256 sx = _mm256_loadu_ps(xs + (g * G / 16) * kPanelTokens + 8 * h);
      if constexpr (G == 32) sx = _mm256_add_ps(sx, _mm256_loadu_ps(xs + (2 * g + 1) * kPanelTokens + 8 * h));
      for (int r = 0; r < R; ++r) {
        const __m256 f = _mm256_mul_ps(_mm256_set1_ps(w.row_scale(r0 + r)[g]), dx);
        af[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[r][h]), f, af[r][h]);
        af[r][h] = _mm256_fmadd_ps(_mm256_set1_ps(w.row_offset(r0 + r)[g]), sx, af[r][h]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) _mm256_storeu_ps(out + size_t(r0 + r) * out_stride + 8 * h, af[r][h]);
}

template <int G>
void gemm_g(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out, int stride) {
  for (int p = p_begin; p < p_end; ++p) {
    float* o = out + (p - p_begin) * kPanelTokens;
    int r = 0;
    for (; r + 2 <= w.rows; r += 2) tile<G, 2>(w, r, x, p, o, stride);
    for (; r < w.rows; ++r) tile<G, 1>(w, r, x, p, o, stride);
  }
}

}  // namespace

void gemm_panels_avx2(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                      int out_stride) {
  if (w.group == 16) gemm_g<16>(w, x, p_begin, p_end, out, out_stride);
  else gemm_g<32>(w, x, p_begin, p_end, out, out_stride);
}

}  // namespace leanlm
