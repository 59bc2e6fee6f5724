// AVX-512 VNNI GEMM microkernel (see gemm.h for the data layout).
//
// A tile is R weight rows x NP panels of 16 tokens. For each group of G weights the int32
// accumulators ai[r][p] collect exact products: one vpdpbusd multiplies four code bytes of row r
// (broadcast to all lanes) with four activation bytes of each of the panel's 16 tokens. At the end
// of the group the sums are scaled into the float accumulators:
//   af[r][p] += isum * (scale[r][g] * dx[g][token]) + offset[r][g] * sx[g][token]
// R=4, NP=2 keeps 8 int32 + 8 float accumulators and the loaded activations in registers.
#include <immintrin.h>

#include <cstring>

#include "quant/gemm.h"

namespace leanlm {

namespace {

template <int G, int R, int NP>
void tile(const UnpackedRows& w, int r0, const ActPanels& x, int p0, float* out, int out_stride) {
  const int ng = w.n / G;
  const uint8_t* c[R];
  const float* sc[R];
  const float* of[R];
  for (int r = 0; r < R; ++r) c[r] = w.row_codes(r0 + r), sc[r] = w.row_scale(r0 + r), of[r] = w.row_offset(r0 + r);
  const int8_t* xq[NP];
  const float* xd[NP];
  const float* xs[NP];
  for (int p = 0; p < NP; ++p) xq[p] = x.panel_q(p0 + p), xd[p] = x.panel_d(p0 + p), xs[p] = x.panel_s(p0 + p);

  __m512 af[R][NP];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < NP; ++p) af[r][p] = _mm512_setzero_ps();

  for (int g = 0; g < ng; ++g) {
    __m512i ai[R][NP];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < NP; ++p) ai[r][p] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int k = g * G; k < (g + 1) * G; k += 4) {
      __m512i xv[NP];
      for (int p = 0; p < NP; ++p) xv[p] = _mm512_load_si512(xq[p] + size_t(k) * kPanelTokens);
      for (int r = 0; r < R; ++r) {
        int32_t wb;
        std::memcpy(&wb, c[r] + k, 4);
        const __m512i wv = _mm512_set1_epi32(wb);
        for (int p = 0; p < NP; ++p) ai[r][p] = _mm512_dpbusd_epi32(ai[r][p], wv, xv[p]);
      }
    }
    for (int p = 0; p < NP; ++p) {
      const __m512 dx = _mm512_loadu_ps(xd[p] + (g * G / 32) * kPanelTokens);
      __m512 sx = _mm512_loadu_ps(xs[p] + (g * G / 16) * kPanelTokens);
      if constexpr (G == 32) sx = _mm512_add_ps(sx, _mm512_loadu_ps(xs[p] + (2 * g + 1) * kPanelTokens));
      for (int r = 0; r < R; ++r) {
        const __m512 f = _mm512_mul_ps(_mm512_set1_ps(sc[r][g]), dx);
        af[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[r][p]), f, af[r][p]);
        af[r][p] = _mm512_fmadd_ps(_mm512_set1_ps(of[r][g]), sx, af[r][p]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < NP; ++p) _mm512_storeu_ps(out + size_t(r0 + r) * out_stride + p * kPanelTokens, af[r][p]);
}

template <int G, int R>
void rows_tile(const UnpackedRows& w, int r0, const ActPanels& x, int p_begin, int p_end, float* out, int stride) {
  int p = p_begin;
  for (; p + 2 <= p_end; p += 2) tile<G, R, 2>(w, r0, x, p, out + (p - p_begin) * kPanelTokens, stride);
  if (p < p_end) tile<G, R, 1>(w, r0, x, p, out + (p - p_begin) * kPanelTokens, stride);
}

template <int G>
void gemm_g(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out, int stride) {
  int r = 0;
  for (; r + 4 <= w.rows; r += 4) rows_tile<G, 4>(w, r, x, p_begin, p_end, out, stride);
  for (; r < w.rows; ++r) rows_tile<G, 1>(w, r, x, p_begin, p_end, out, stride);
}

}  // namespace

void gemm_panels_avx512(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                        int out_stride) {
  if (w.group == 16) gemm_g<16>(w, x, p_begin, p_end, out, out_stride);
  else gemm_g<32>(w, x, p_begin, p_end, out, out_stride);
}

}  // namespace leanlm
