// The KV kernels for AVX-512 (16 float lanes; VNNI byte dot products).
#include <immintrin.h>

#include <algorithm>

#include "kernels/simd_avx2.h"
#include "kv/kv_kernels_simd.h"

namespace leanlm {

namespace {

struct Avx512 {
  static constexpr int N = 16;
  static constexpr int kQtRows = 4;   // 16 accumulators + 4 keys of 32 registers
  static constexpr int kQtAccum = 4;  // 16 accumulators + 4 values
  static constexpr int kS8Zero = 128; // dot_s8 flips the codes' sign bit: code + 128, unsigned
  using F = __m512;
  using I = __m512i;
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float x) { return _mm512_set1_ps(x); }
  static F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F load(const uint16_t* p) { return load_h(p); }
  static F load_h(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static void storeu(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static float hsum(F v) { return _mm512_reduce_add_ps(v); }
  static float hmax(F v) { return _mm512_reduce_max_ps(v); }
  static void sum4(F a, F b, F c, F d, float* out) {
    // Halve each pair of vectors until four 128-bit lanes hold (a b c d) partial sums.
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // a0 b0 a1 b1 per lane
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                                      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
  static I loadi(const void* p) { return _mm512_loadu_si512(p); }
  static I set1i(int32_t x) { return _mm512_set1_epi32(x); }
  static I andi(I a, I b) { return _mm512_and_si512(a, b); }
  template <int n>
  static I srli(I a) { return _mm512_srli_epi32(a, n); }
  template <int n>
  static I slli(I a) { return _mm512_slli_epi32(a, n); }
  // N bytes from p, zero-extended to 32-bit lanes; the low N bytes of b, the same way.
  static I load_u8(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static I widen_u8(__m128i b) { return _mm512_cvtepu8_epi32(b); }
  static F gather(const float* base, I idx) { return _mm512_i32gather_ps(idx, base, 4); }
  static I addi(I a, I b) { return _mm512_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm512_sub_epi32(a, b); }
  static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
  static F abs(F a) { return _mm512_abs_ps(a); }
  using M = __mmask16;
  static M nonzero(F a) { return _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_NEQ_UQ); }
  static M mask_or(M a, M b) { return M(a | b); }
  static unsigned bits(M m) { return m; }
  static F keep(F a, M m) { return _mm512_maskz_mov_ps(m, a); }
  // 16 floats rounded to nearest even, saturated to int8.
  static void store_i8(int8_t* p, F v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  static I dot_u8(I acc, I a, I b) { return _mm512_dpbusd_epi32(acc, a, b); }
  static I dot_s8(I acc, I a, I b) { return _mm512_dpbusd_epi32(acc, _mm512_xor_si512(a, _mm512_set1_epi8(char(0x80))), b); }

  static I dot_i16(I acc, I a, I b) { return _mm512_dpwssd_epi32(acc, a, b); }
  // 16 floats rounded to nearest even, saturated to int16.
  static void store_i16(int16_t* p, F v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(v)));
  }
  // Codes of one value unit (32 channels) of tokens a and b -> x[0] channels 0-15, x[1] 16-31, each
  // lane (code_a, code_b) as int16.
  template <int B>
  static void pair_unit(const uint8_t* a, const uint8_t* b, I* x) {
    // Word permutations: kMix interleaves two 16-word sources (a from the first, b from the second);
    // kHalves interleaves the two 256-bit halves of one vector.
    alignas(64) static const uint16_t kMixLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    alignas(64) static const uint16_t kMixHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                    24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
    alignas(64) static const uint16_t kHalves[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    auto idx = [](const uint16_t* t) { return _mm512_load_si512(t); };
    if constexpr (B == 8) {
      const __m512i A = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
      const __m512i Bv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
      x[0] = _mm512_permutex2var_epi16(A, idx(kMixLo), Bv);
      x[1] = _mm512_permutex2var_epi16(A, idx(kMixHi), Bv);
    } else if constexpr (B == 4) {
      const __m256i ab = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
      const __m512i w = _mm512_cvtepu8_epi16(ab);  // words 0-15: a's bytes, 16-31: b's
      x[0] = _mm512_permutexvar_epi16(idx(kHalves), _mm512_and_si512(w, _mm512_set1_epi16(15)));
      x[1] = _mm512_permutexvar_epi16(idx(kHalves), _mm512_srli_epi16(w, 4));
    } else {
      const __m128i ab = _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a)),
                                            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b)));
      const __m512i w = _mm512_broadcast_i64x4(_mm256_cvtepu8_epi16(ab));  // [a's 8 bytes, b's 8 bytes] twice
      // Elements 8k + i sit in bits 2k of byte i: the halves take fields (0, 1), then (2, 3).
      const __m512i s01 = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                           0x0002000200020002, 0, 0, 0, 0);
      const __m512i s23 = _mm512_add_epi16(s01, _mm512_set1_epi16(4));
      const __m512i m = _mm512_set1_epi16(3);
      // Words: [a f_k (8), b f_k (8), a f_k+1 (8), b f_k+1 (8)] -> pairs for channels 8k .. 8k + 15.
      alignas(64) static const uint16_t kQuarter[32] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                                        16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31};
      x[0] = _mm512_permutexvar_epi16(idx(kQuarter), _mm512_and_si512(_mm512_srlv_epi16(w, s01), m));
      x[1] = _mm512_permutexvar_epi16(idx(kQuarter), _mm512_and_si512(_mm512_srlv_epi16(w, s23), m));
    }
  }
  static F exp(F x) {
    using namespace simd;  // the constants of the 256-bit exp
    const __m512 lo = _mm512_set1_ps(kExpLo), hi = _mm512_set1_ps(kExpHi);
    x = _mm512_max_ps(_mm512_min_ps(x, hi), lo);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Hi), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Lo), r);
    __m512 p = _mm512_set1_ps(kExpPoly[0]);
    for (int i = 1; i < 5; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ), p, _mm512_castsi512_ps(e));
  }
};

// PQ keys (kv_kernels.h): four sub-spaces per step. One 64-byte load holds the codes of sub-spaces
// m..m+3 for the 32 tokens of a sub-block, one 128-bit lane each, and the matching 4 x 16 table
// bytes sit in the same lanes, so vpshufb looks up 16 tokens' (low nibbles) or the other 16
// tokens' (high nibbles) entries of 4 sub-spaces at once. The looked-up bytes are widened to
// uint16 as even and odd bytes (a mask and a shift, no shuffle port), the codes are split once for
// up to QT queries, and the lanes are summed and the tokens put back in order at the end.
template <int QT>
void pq_tile(const uint8_t* sub, int M, const uint8_t* lut, const float* scale, const float* bias, float* tmp) {
  const __m512i low4 = _mm512_set1_epi8(0x0f), low8 = _mm512_set1_epi16(0x00ff);
  // [even lo, odd lo, even hi, odd hi] per query: tokens 2k / 2k+1 of 0-15, then of 16-31.
  __m512i acc[QT][4];
  for (int i = 0; i < QT; ++i)
    for (auto& a : acc[i]) a = _mm512_setzero_si512();
  for (int m = 0; m < M; m += 4) {
    const __m512i c = _mm512_loadu_si512(sub + m * 16);
    const __m512i lo = _mm512_and_si512(c, low4), hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), low4);
    for (int i = 0; i < QT; ++i) {
      const __m512i tab = _mm512_loadu_si512(lut + (size_t(i) * M + m) * 16);
      const __m512i vl = _mm512_shuffle_epi8(tab, lo), vh = _mm512_shuffle_epi8(tab, hi);
      acc[i][0] = _mm512_add_epi16(acc[i][0], _mm512_and_si512(vl, low8));
      acc[i][1] = _mm512_add_epi16(acc[i][1], _mm512_srli_epi16(vl, 8));
      acc[i][2] = _mm512_add_epi16(acc[i][2], _mm512_and_si512(vh, low8));
      acc[i][3] = _mm512_add_epi16(acc[i][3], _mm512_srli_epi16(vh, 8));
    }
  }
  // u = [even lo, odd lo, even hi, odd hi] summed over the lanes: word w of 128-bit lane k is token
  // 2w (+1 for odd lanes) (+16 for the hi lanes). kOrder puts token t at word t.
  alignas(64) static const uint16_t kOrder[32] = {0,  8,  1,  9,  2,  10, 3,  11, 4,  12, 5,  13, 6,  14, 7,  15,
                                                  16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31};
  const __m512i order = _mm512_load_si512(kOrder);
  for (int i = 0; i < QT; ++i) {
    const __m512i t01 = _mm512_add_epi16(_mm512_shuffle_i64x2(acc[i][0], acc[i][1], 0x44),
                                         _mm512_shuffle_i64x2(acc[i][0], acc[i][1], 0xee));
    const __m512i t23 = _mm512_add_epi16(_mm512_shuffle_i64x2(acc[i][2], acc[i][3], 0x44),
                                         _mm512_shuffle_i64x2(acc[i][2], acc[i][3], 0xee));
    const __m512i u = _mm512_permutexvar_epi16(
        order, _mm512_add_epi16(_mm512_shuffle_i64x2(t01, t23, 0x88), _mm512_shuffle_i64x2(t01, t23, 0xdd)));
    const __m512 sc = _mm512_set1_ps(scale[i]), bi = _mm512_set1_ps(bias[i]);
    _mm512_storeu_ps(tmp + i * 32, _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(u))), bi));
    _mm512_storeu_ps(tmp + i * 32 + 16,
                     _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(u, 1))), bi));
  }
}

void pq_scores(const uint8_t* codes, int j0, int j1, int M, const uint8_t* lut, int nq, const float* scale,
               const float* bias, float* out, int os) {
  kv_simd::pq_over_subblocks<4>(codes, j0, j1, M, lut, nq, scale, bias, out, os,
                                [M](int qt, const uint8_t* sub, const uint8_t* t, const float* sc, const float* bi, float* tmp) {
                                  switch (qt) {
                                    case 4: pq_tile<4>(sub, M, t, sc, bi, tmp); break;
                                    case 3: pq_tile<3>(sub, M, t, sc, bi, tmp); break;
                                    case 2: pq_tile<2>(sub, M, t, sc, bi, tmp); break;
                                    default: pq_tile<1>(sub, M, t, sc, bi, tmp); break;
                                  }
                                });
}

}  // namespace

void fill_kv_avx512(KvKernels& t) {
  kv_simd::fill<Avx512>(t);
  t.pq_scores = pq_scores;
}

}  // namespace leanlm
