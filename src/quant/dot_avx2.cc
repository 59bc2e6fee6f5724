// AVX2 kernels: u8*s8 products through maddubs (int16 pairs) and madd (int32).
// Codes are at most 63 and activations at most 127 in magnitude, so the int16 pairs never saturate
// (the LQ kernels, lq_dot_simd.h, multiply levels + 64 <= 127 with activations: the same).
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

// The LQ kernels' two ISA steps on AVX2.
struct LqAvx2 {
  // LQ3's third bits: byte l / 8 of the 4 goes to bytes l, bit l % 8 selected and compared.
  static __m256i third_bit(__m256i u, const uint8_t* bits) {
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bitsel = _mm256_set1_epi64x(int64_t(0x8040201008040201));
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(load_u32(bits))), spread);
    return _mm256_or_si256(u, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bitsel), bitsel), _mm256_set1_epi8(4)));
  }
};

}  // namespace avx2

void fill_avx2_table(DotTable& t) {
  avx2::fill_common(t);
  avx2::lq::fill<avx2::LqAvx2>(t);
}

}  // namespace leanlm
