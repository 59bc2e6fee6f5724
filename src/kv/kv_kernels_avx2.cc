// The KV kernels for AVX2 (8 float lanes; byte dot products through maddubs).
#include <immintrin.h>

#include <algorithm>

#include "kernels/simd_avx2.h"
#include "kv/kv_kernels_simd.h"

namespace leanlm {

namespace {

struct Avx2 {
  static constexpr int N = 8;
  static constexpr int kQtRows = 2;   // 8 accumulators + 4 keys + 2 queries of 16 registers
  static constexpr int kQtAccum = 2;  // 8 accumulators + 4 values
  static constexpr int kS8Zero = 0;   // dot_s8 multiplies the signed codes as they are
  using F = __m256;
  using I = __m256i;
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F load(const uint16_t* p) { return load_h(p); }
  static F load_h(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static void storeu(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static float hsum(F v) { return simd::hsum(v); }
  static float hmax(F v) { return simd::hmax(v); }
  static void sum4(F a, F b, F c, F d, float* out) { simd::sum4(a, b, c, d, out); }
  static I loadi(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static I set1i(int32_t x) { return _mm256_set1_epi32(x); }
  static I andi(I a, I b) { return _mm256_and_si256(a, b); }
  template <int n>
  static I srli(I a) { return _mm256_srli_epi32(a, n); }
  template <int n>
  static I slli(I a) { return _mm256_slli_epi32(a, n); }
  // N bytes from p, zero-extended to 32-bit lanes; the low N bytes of b, the same way.
  static I load_u8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  static I widen_u8(__m128i b) { return _mm256_cvtepu8_epi32(b); }
  static F gather(const float* base, I idx) { return _mm256_i32gather_ps(base, idx, 4); }
  static I addi(I a, I b) { return _mm256_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm256_sub_epi32(a, b); }
  static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
  static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
  using M = __m256;
  static M nonzero(F a) { return _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_NEQ_UQ); }
  static M mask_or(M a, M b) { return _mm256_or_ps(a, b); }
  static unsigned bits(M m) { return unsigned(_mm256_movemask_ps(m)); }
  static F keep(F a, M m) { return _mm256_and_ps(a, m); }
  // 8 floats rounded to nearest even, saturated to int8.
  static void store_i8(int8_t* p, F v) {
    const __m256i i = _mm256_cvtps_epi32(v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
  }
  // Codes of at most 4 bits times int8: pair sums stay far inside int16.
  static I dot_u8(I acc, I a, I b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
  }
  // int8 codes (|a| <= 127) times int8: |a| times b with a's sign moved onto b.
  static I dot_s8(I acc, I a, I b) {
    return _mm256_add_epi32(
        acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)), _mm256_set1_epi16(1)));
  }

  static I dot_i16(I acc, I a, I b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  // 8 floats rounded to nearest even, saturated to int16.
  static void store_i16(int16_t* p, F v) {
    const __m256i i = _mm256_cvtps_epi32(v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1)));
  }
  // Codes of one value unit (32 channels) of tokens a and b -> x[k] channels 8k .. 8k + 7, each lane
  // (code_a, code_b) as int16.
  template <int B>
  static void pair_unit(const uint8_t* a, const uint8_t* b, I* x) {
    // Two vectors of 16 words (channels c .. c + 15 of a and of b) -> pairs for c .. c + 7, c + 8 .. c + 15.
    auto mix = [](__m256i A, __m256i Bv, I* out) {
      const __m256i lo = _mm256_unpacklo_epi16(A, Bv), hi = _mm256_unpackhi_epi16(A, Bv);
      out[0] = _mm256_permute2x128_si256(lo, hi, 0x20);
      out[1] = _mm256_permute2x128_si256(lo, hi, 0x31);
    };
    auto load16 = [](const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); };
    if constexpr (B == 8) {
      mix(_mm256_cvtepi8_epi16(load16(a)), _mm256_cvtepi8_epi16(load16(b)), x);
      mix(_mm256_cvtepi8_epi16(load16(a + 16)), _mm256_cvtepi8_epi16(load16(b + 16)), x + 2);
    } else if constexpr (B == 4) {
      const __m256i A = _mm256_cvtepu8_epi16(load16(a)), Bv = _mm256_cvtepu8_epi16(load16(b));
      const __m256i m = _mm256_set1_epi16(15);
      mix(_mm256_and_si256(A, m), _mm256_and_si256(Bv, m), x);
      mix(_mm256_srli_epi16(A, 4), _mm256_srli_epi16(Bv, 4), x + 2);
    } else {
      // Elements 8k + i sit in bits 2k of byte i: words [a's 8 bytes | b's 8 bytes], one field each.
      const __m128i ab = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a)));
      const __m128i bb = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b)));
      const __m128i m = _mm_set1_epi16(3);
      auto field = [&](__m128i v, int k) { return _mm_and_si128(_mm_srl_epi16(v, _mm_cvtsi32_si128(2 * k)), m); };
      for (int k = 0; k < 4; ++k) {
        const __m128i fa = field(ab, k), fb = field(bb, k);
        x[k] = _mm256_set_m128i(_mm_unpackhi_epi16(fa, fb), _mm_unpacklo_epi16(fa, fb));
      }
    }
  }
  static F exp(F x) { return simd::exp(x); }
};

// PQ keys (kv_kernels.h): two sub-spaces per step, one 128-bit lane each (see the AVX-512 kernel:
// the same even/odd widening, codes split once for up to QT queries).
template <int QT>
void pq_tile(const uint8_t* sub, int M, const uint8_t* lut, const float* scale, const float* bias, float* tmp) {
  const __m256i low4 = _mm256_set1_epi8(0x0f), low8 = _mm256_set1_epi16(0x00ff);
  __m256i acc[QT][4];  // [even lo, odd lo, even hi, odd hi]
  for (int i = 0; i < QT; ++i)
    for (auto& x : acc[i]) x = _mm256_setzero_si256();
  for (int m = 0; m < M; m += 2) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sub + m * 16));
    const __m256i lo = _mm256_and_si256(c, low4), hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), low4);
    for (int i = 0; i < QT; ++i) {
      const __m256i tab = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut + (size_t(i) * M + m) * 16));
      const __m256i vl = _mm256_shuffle_epi8(tab, lo), vh = _mm256_shuffle_epi8(tab, hi);
      acc[i][0] = _mm256_add_epi16(acc[i][0], _mm256_and_si256(vl, low8));
      acc[i][1] = _mm256_add_epi16(acc[i][1], _mm256_srli_epi16(vl, 8));
      acc[i][2] = _mm256_add_epi16(acc[i][2], _mm256_and_si256(vh, low8));
      acc[i][3] = _mm256_add_epi16(acc[i][3], _mm256_srli_epi16(vh, 8));
    }
  }
  for (int i = 0; i < QT; ++i) {
    const __m256 sc = _mm256_set1_ps(scale[i]), bi = _mm256_set1_ps(bias[i]);
    auto to_f = [&](__m128i w) { return _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(w)), bi); };
    for (int half = 0; half < 2; ++half) {  // tokens 0-15 from (even, odd) lo, 16-31 from hi
      const __m256i e = acc[i][2 * half], o = acc[i][2 * half + 1];
      // [even summed over lanes, odd summed over lanes], then interleaved back into token order.
      const __m256i t = _mm256_add_epi16(_mm256_permute2x128_si256(e, o, 0x20), _mm256_permute2x128_si256(e, o, 0x31));
      const __m128i ev = _mm256_castsi256_si128(t), od = _mm256_extracti128_si256(t, 1);
      _mm256_storeu_ps(tmp + i * 32 + half * 16, to_f(_mm_unpacklo_epi16(ev, od)));
      _mm256_storeu_ps(tmp + i * 32 + half * 16 + 8, to_f(_mm_unpackhi_epi16(ev, od)));
    }
  }
}

void pq_scores(const uint8_t* codes, int j0, int j1, int M, const uint8_t* lut, int nq, const float* scale,
               const float* bias, float* out, int os) {
  kv_simd::pq_over_subblocks<2>(codes, j0, j1, M, lut, nq, scale, bias, out, os,
                                [M](int qt, const uint8_t* sub, const uint8_t* t, const float* sc, const float* bi, float* tmp) {
                                  if (qt == 2) pq_tile<2>(sub, M, t, sc, bi, tmp);
                                  else pq_tile<1>(sub, M, t, sc, bi, tmp);
                                });
}

}  // namespace

void fill_kv_avx2(KvKernels& t) {
  kv_simd::fill<Avx2>(t);
  t.pq_scores = pq_scores;
}

}  // namespace leanlm
