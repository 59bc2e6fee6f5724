// AVX-512 VNNI kernels: u8*s8 products accumulate straight into int32 with vpdpbusd.
#include <immintrin.h>

#include <cstring>

#include "quant/dot.h"
#include "util/fp16.h"

namespace leanlm {
namespace avx512 {

inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

#include "quant/dot_simd_impl.h"

}  // namespace avx512

void fill_avx512_table(DotTable& t) { avx512::fill_common(t); }

}  // namespace leanlm
