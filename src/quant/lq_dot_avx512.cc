// AVX-512 (VNNI) dot kernels for the LQ rows (lq_format.h): two 32-blocks per instruction.
//
// Per pair of blocks the 64 codes are spread one per byte, looked up in the row's level table
// (plus 128, so the product is vpdpbusd's unsigned x signed, without the sign transfer the AVX2
// kernel needs) and summed with the int8 activations into 16 int32 lanes, 8 per block; the block
// scale times the activation scale of sixteen blocks is formed once and spread over the lanes.
// The 128 * sum(x) that the offset adds is taken off once per row, from the activation sums.
// Measured against the shared 256-bit kernel (lq_dot_simd.h) in bench/bench_gemv.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "quant/dot.h"
#include "quant/lq_format.h"

namespace leanlm {
namespace {

inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Element 8 g + i of a 2-bit block sits in bits 2 g of byte i: qword lane g of each block's four
// shifts its copy of the block's 8 bytes by 2 g. lo0/lo1: the two blocks' 8 low-bit bytes.
inline __m512i spread_2bit(uint64_t lo0, uint64_t lo1) {
  const __m512i v = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1),
                                             _mm512_castsi128_si512(_mm_set_epi64x(int64_t(lo1), int64_t(lo0))));
  return _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6)), _mm512_set1_epi8(3));
}

// Codes of blocks b and b + 1 (only b when !two: nothing past it is read), one byte each.
template <GgmlType T>
inline __m512i pair_codes(const uint8_t* c, bool two) {
  if constexpr (T == GgmlType::LQ4) {
    // lanes [low nibbles of b, high of b, low of b+1, high of b+1] are elements 0-15, 16-31, ...
    const __m256i v = _mm256_maskz_loadu_epi8(two ? 0xFFFFFFFFu : 0xFFFFu, c);
    const __m512i z = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(v));
    return _mm512_and_si512(_mm512_srlv_epi64(z, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)), _mm512_set1_epi8(0x0F));
  } else if constexpr (T == GgmlType::LQ2) {
    return spread_2bit(load_u64(c), two ? load_u64(c + 8) : 0);
  } else {  // LQ3: 8 low-bit bytes, then 4 bytes whose bit l is element l's third bit
    const __m512i low = spread_2bit(load_u64(c), two ? load_u64(c + 12) : 0);
    const uint64_t high = uint64_t(load_u32(c + 8)) | (two ? uint64_t(load_u32(c + 20)) << 32 : 0);
    return _mm512_mask_add_epi8(low, _cvtu64_mask64(high), low, _mm512_set1_epi8(4));
  }
}

template <GgmlType T>
float row_lq_zmm(int n, const uint8_t* w, const ActRow& x) {
  constexpr int kCodeBytes = lq_code_bytes(T);
  // Levels + 128 as uint8 (entries past 2^b are never indexed).
  const __m512i table = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))),
                                         _mm512_set1_epi8(char(0x80)));
  const uint8_t* bs = lq_block_scales(T, w);
  const uint8_t* codes = lq_block_codes(T, w, n, 0);
  const int nb = n / 32;
  const __m512i pair_idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 acc = _mm512_setzero_ps(), offset = _mm512_setzero_ps();
  for (int b0 = 0; b0 < nb; b0 += 16) {
    const int cnt = std::min(16, nb - b0);
    const __mmask16 m = __mmask16((1u << cnt) - 1);
    // f[k] = block scale * activation scale of block b0 + k
    const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, bs + b0))),
                                   _mm512_maskz_loadu_ps(m, x.d + b0));
    // The offset's share: f[k] * (sum of block b0 + k's 32 activation codes); the lanes past cnt are 0.
    const __m512i sums = _mm512_madd_epi16(_mm512_maskz_loadu_epi32(m, x.sum16 + 2 * b0), _mm512_set1_epi16(1));
    offset = _mm512_fmadd_ps(f, _mm512_cvtepi32_ps(sums), offset);
    for (int k = 0; k < cnt; k += 2) {
      const bool two = k + 1 < cnt;
      const int b = b0 + k;
      _mm_prefetch(reinterpret_cast<const char*>(codes + b * kCodeBytes) + 2048, _MM_HINT_T0);
      const __m512i lv = _mm512_shuffle_epi8(table, pair_codes<T>(codes + b * kCodeBytes, two));
      const __m512i xv = _mm512_maskz_loadu_epi8(two ? ~__mmask64(0) : __mmask64(0xFFFFFFFFull), x.q + 32 * b);
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lv, xv);
      const __m512 scale = _mm512_permutexvar_ps(_mm512_add_epi32(pair_idx, _mm512_set1_epi32(k)), f);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc);
    }
  }
  return lq_scale(T, w) * _mm512_reduce_add_ps(_mm512_fnmadd_ps(_mm512_set1_ps(128.f), offset, acc));
}

template <GgmlType T>
void rows_lq_zmm(int n, const void* w, size_t rb, int nrows, const ActRow& x, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(w);
  for (int r = 0; r < nrows; ++r) out[r] = row_lq_zmm<T>(n, p + r * rb, x);
}

}  // namespace

void fill_lq_avx512(DotTable& t) {
  t.q[int(GgmlType::LQ2)] = rows_lq_zmm<GgmlType::LQ2>;
  t.q[int(GgmlType::LQ3)] = rows_lq_zmm<GgmlType::LQ3>;
  t.q[int(GgmlType::LQ4)] = rows_lq_zmm<GgmlType::LQ4>;
}

}  // namespace leanlm
