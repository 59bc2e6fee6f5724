// AVX2 kernels: u8*s8 products through maddubs (int16 pairs) and madd (int32).
// Codes are at most 63 and activations at most 127 in magnitude, so the int16 pairs never saturate
// (the LQ kernels, lq_dot_simd.h, multiply |level| <= 128 by sign-transferred activations: the same).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/simd_avx2.h"
#include "quant/dot.h"
#include "quant/lq_format.h"
#include "util/fp16.h"
#include "util/unaligned.h"

namespace leanlm {
namespace avx2 {

inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

#include "quant/dot_simd_impl.h"
#include "quant/lq_dot_simd.h"

}  // namespace avx2

void fill_avx2_table(DotTable& t) {
  avx2::fill_common(t);
  avx2::fill_lq(t);
}

}  // namespace leanlm
