// AVX-512 VNNI kernels: u8*s8 products accumulate straight into int32 with vpdpbusd.
//
// The 256-bit kernels shared with AVX2 (dot_simd_impl.h) cover every type; Q8_0 (the format of
// tied output matrices, most of the bytes a small model reads per token) has a 512-bit kernel of
// its own: two blocks per instruction, and the per-block scales of sixteen blocks gathered and
// converted at once instead of one at a time. (A 512-bit Q5_0 kernel of the same design measured
// slower than the shared one, 10 against 13.5 GB/s on one Zen 4 core, and was removed.)
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/simd_avx2.h"
#include "quant/dot.h"
#include "util/fp16.h"
#include "util/unaligned.h"

namespace leanlm {
namespace avx512 {

inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

#include "quant/dot_simd_impl.h"

// One Q8_0 row times an int8 activation row.
float row_q8_0_zmm(int n, const uint8_t* wp, const ActRow& x) {
  const auto* w = reinterpret_cast<const BlockQ8_0*>(wp);
  const int nb = n / 32;
  const __m512i block_offsets = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(sizeof(BlockQ8_0)));
  // Lane pattern that spreads scales k and k+1 of a 16-vector over the two halves of a register.
  const __m512i pair_idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 acc = _mm512_setzero_ps();
  for (int b0 = 0; b0 < nb; b0 += 16) {
    const int cnt = nb - b0 < 16 ? nb - b0 : 16;
    const __mmask16 m = __mmask16((1u << cnt) - 1);
    // Scales of up to 16 blocks: the fp16 d of each (first two bytes of the block) times x's scale.
    const __m512i raw = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, block_offsets, &w[b0], 1);
    const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw));
    const __m512 f = _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(m, x.d + b0));
    for (int k = 0; k < cnt; k += 2) {
      const bool two = k + 1 < cnt;
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b0 + k].qs));
      const __m256i hi = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b0 + k + 1].qs))
                             : _mm256_setzero_si256();
      const __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      const __m512i xv = _mm512_maskz_loadu_epi8(two ? ~__mmask64(0) : __mmask64(0xFFFFFFFFull), x.q + 32 * (b0 + k));
      // signed x signed: |w| times x carrying w's sign
      const __m512i xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), _mm512_setzero_si512(), xv);
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(wv), xs);
      const __m512 scale = _mm512_permutexvar_ps(_mm512_add_epi32(pair_idx, _mm512_set1_epi32(k)), f);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc);
    }
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace avx512

void fill_avx512_table(DotTable& t) {
  avx512::fill_common(t);
  fill_lq_avx512(t);  // lq_dot_avx512.cc: the LQ3 kernel with mask registers in place of the AVX2 one
  t.q[int(GgmlType::Q8_0)] = avx512::rows_one<avx512::row_q8_0_zmm>;
}

}  // namespace leanlm
