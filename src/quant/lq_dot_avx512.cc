// AVX-512 (BW, VL) dot kernel for LQ3 rows (lq_format.h): the template of lq_dot_simd.h with the
// third bits added under a mask register loaded straight from the codes (one operation where AVX2
// needs five). LQ2 and LQ4 keep the AVX2 kernels: the same template compiled here (EVEX encoding)
// measured 0.85-0.9x them on Zen 4 in cache (and vpdpwssd for madd + add no faster); 256-bit
// because Zen 4 issues 512-bit operations as two halves, so a two-block 512-bit kernel measured
// 0.91-1.07x (bench/bench_gemv).
#include <immintrin.h>

#include <algorithm>

#include "kernels/simd_avx2.h"
#include "quant/act_quant.h"
#include "quant/dot.h"
#include "quant/lq_format.h"
#include "util/unaligned.h"

namespace leanlm {
namespace avx512_lq {

#include "quant/lq_dot_simd.h"

struct LqMask {
  static __m256i third_bit(__m256i u, const uint8_t* bits) {
    return _mm256_mask_add_epi8(u, _cvtu32_mask32(load_u32(bits)), u, _mm256_set1_epi8(4));
  }
};

}  // namespace avx512_lq

void fill_lq_avx512(DotTable& t) { avx512_lq::lq::fill_lq3<avx512_lq::LqMask>(t); }

}  // namespace leanlm
