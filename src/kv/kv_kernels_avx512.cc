// The KV kernels for AVX-512 (16 float lanes; VNNI byte dot products).
#include <immintrin.h>

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
  template <int B>
  static void unit(const uint8_t* p, F* f) {
    auto bytes16 = [](const uint8_t* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); };
    if constexpr (B == 8) {
      f[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes16(p)));
      f[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes16(p + 16)));
    } else if constexpr (B == 4) {
      const __m512i b = _mm512_cvtepu8_epi32(bytes16(p));
      f[0] = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)));
      f[1] = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
    } else {
      // Bytes 0-7 twice; lane l of the first vector shifts by 0 (elements 0-7) or 2 (8-15), of the
      // second by 4 (16-23) or 6 (24-31).
      const __m512i b = _mm512_broadcast_i64x4(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
      const __m512i m = _mm512_set1_epi32(3);
      const __m512i s01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
      const __m512i s23 = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
      f[0] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(b, s01), m));
      f[1] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(b, s23), m));
    }
  }
  static F exp(F x) {
    const __m512 lo = _mm512_set1_ps(-87.3f), hi = _mm512_set1_ps(88.3f);
    x = _mm512_max_ps(_mm512_min_ps(x, hi), lo);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.3981999507e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ), p, _mm512_castsi512_ps(e));
  }
};

}  // namespace

void fill_kv_avx512(KvKernels& t) { kv_simd::fill<Avx512>(t); }

}  // namespace leanlm
