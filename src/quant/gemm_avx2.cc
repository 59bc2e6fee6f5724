// AVX2 GEMM microkernel (see gemm.h for the data layout), for CPUs without AVX-512 VNNI.
//
// The same scheme as gemm_avx512.cc with 256-bit registers: a panel of 16 tokens is two registers
// of 8 tokens, and each u8 x s8 product goes through maddubs (pairs summed into int16) and madd
// (pairs of int16 summed into int32). maddubs saturates at 32767, so codes must stay below 128:
// true for every format except Q8_0 (codes up to 255), which this kernel does not take.
#include <immintrin.h>

#include <cstring>

#include "quant/gemm.h"
#include "util/error.h"

namespace leanlm {

namespace {

// The int16 pair sums of maddubs are added S at a time in int16 before one madd widens them to
// int32: with codes below 2^bits and activations of magnitude <= 127 a pair sums to at most
// 2 * 127 * (2^bits - 1), so S = 8 fits int16 for 4-bit codes (30480), S = 4 up to 5-bit codes
// (31496) and S = 2 for 6-bit codes (32004). That removes most of the widening multiplies, which compete with maddubs for the same
// execution ports.
template <int G, int R, int S>
void tile(const UnpackedRows& w, int r0, const ActPanels& x, int p, float* out, int out_stride) {
  static_assert(G % (4 * S) == 0);
  const int ng = w.n / G;
  const int8_t* xq = x.panel_q(p);
  const float* xd = x.panel_d(p);
  const float* xs = x.panel_s(p);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 af[R][2];
  for (int r = 0; r < R; ++r) af[r][0] = af[r][1] = _mm256_setzero_ps();
  for (int g = 0; g < ng; ++g) {
    __m256i ai[R][2];
    for (int r = 0; r < R; ++r) ai[r][0] = ai[r][1] = _mm256_setzero_si256();
    for (int c = 0; c < G / (4 * S); ++c) {
      __m256i s16[R][2];
      for (int r = 0; r < R; ++r) s16[r][0] = s16[r][1] = _mm256_setzero_si256();
#pragma GCC unroll 1
      for (int st = 0; st < S; ++st) {
        const int k = g * G + c * 4 * S + 4 * st;
        const __m256i x0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + size_t(k) * kPanelTokens));
        const __m256i x1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + size_t(k) * kPanelTokens + 32));
        for (int r = 0; r < R; ++r) {
          int32_t wb;
          std::memcpy(&wb, w.row_codes(r0 + r) + k, 4);
          const __m256i wv = _mm256_set1_epi32(wb);
          s16[r][0] = _mm256_add_epi16(s16[r][0], _mm256_maddubs_epi16(wv, x0));
          s16[r][1] = _mm256_add_epi16(s16[r][1], _mm256_maddubs_epi16(wv, x1));
        }
      }
      for (int r = 0; r < R; ++r)
        for (int h = 0; h < 2; ++h) ai[r][h] = _mm256_add_epi32(ai[r][h], _mm256_madd_epi16(s16[r][h], ones));
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

constexpr int kTileRows = 4;

template <int G, int S>
void gemm_g(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out, int stride) {
  for (int p = p_begin; p < p_end; ++p) {
    float* o = out + (p - p_begin) * kPanelTokens;
    int r = 0;
    for (; r + kTileRows <= w.rows; r += kTileRows) tile<G, kTileRows, S>(w, r, x, p, o, stride);
    for (; r < w.rows; ++r) tile<G, 1, S>(w, r, x, p, o, stride);
  }
}

}  // namespace

// The int16 step count S for the code width (see tile): at most 8 for 4-bit codes
// (8 * 2 * 127 * 15 = 30480), 4 for 5-bit, 2 for 6-bit, 1 above; a chunk never spans groups.
template <int G>
void gemm_by_code_bits(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out, int stride) {
  constexpr int kMaxS = G / 4 < 8 ? G / 4 : 8;
  if (w.code_bits <= 4) gemm_g<G, kMaxS>(w, x, p_begin, p_end, out, stride);
  else if (w.code_bits == 5) gemm_g<G, 4>(w, x, p_begin, p_end, out, stride);
  else if (w.code_bits == 6) gemm_g<G, 2>(w, x, p_begin, p_end, out, stride);
  else gemm_g<G, 1>(w, x, p_begin, p_end, out, stride);
}

void gemm_panels_avx2(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                      int out_stride) {
  if (w.code_bits > 7) fail("gemm_panels_avx2: codes of more than 7 bits saturate maddubs");
  if (w.group == 16) gemm_by_code_bits<16>(w, x, p_begin, p_end, out, out_stride);
  else gemm_by_code_bits<32>(w, x, p_begin, p_end, out, out_stride);
}

}  // namespace leanlm
