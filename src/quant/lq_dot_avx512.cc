// AVX-512 (VNNI) dot kernels for the LQ rows (lq_format.h).
//
// Per 32-block the codes are spread one per byte (their bytes arrive by a broadcast load, so a
// block costs two ALU operations to spread; LQ3's third bit is added under a mask), looked up in
// the row's level table plus 128 with one byte shuffle, and summed with the int8 activations by
// vpdpbusd (unsigned x signed: no sign transfer, which the AVX2 kernel needs). The block scale
// times the activation scale of sixteen blocks is formed at once, and each block's comes by a
// broadcast load; the 128 * sum(x) that the offset adds is taken off once per row from the
// activation sums.
//
// 256-bit, one block per instruction: a 512-bit kernel with two blocks per instruction (codes
// spread by a cross-lane permute, scales by a lane permute) measured 0.91-1.07x this one on Zen 4,
// whose 512-bit operations issue as two halves (bench/bench_gemv, Qwen and Gemma FFN shapes,
// 1 and 2 threads), and was removed.
#include <immintrin.h>

#include <algorithm>

#include "quant/dot.h"
#include "quant/lq_format.h"
#include "util/unaligned.h"

namespace leanlm {
namespace {

// One block's 32 codes, one byte each, in a 256-bit register: the code bytes arrive by a
// broadcast load (a load, not a shuffle), so a block costs two ALU operations to spread.
template <GgmlType T>
inline __m256i block_codes(const uint8_t* c) {
  if constexpr (T == GgmlType::LQ4) {
    const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
    return _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0F));
  } else {
    const __m256i u = _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x(int64_t(load_u64(c))), _mm256_set_epi64x(6, 4, 2, 0)),
                                       _mm256_set1_epi8(3));
    if constexpr (T == GgmlType::LQ2) return u;
    return _mm256_mask_add_epi8(u, _cvtu32_mask32(load_u32(c + 8)), u, _mm256_set1_epi8(4));
  }
}

template <GgmlType T>
float row_lq_ymm(int n, const uint8_t* w, const ActRow& x) {
  constexpr int kCodeBytes = lq_code_bytes(T);
  const __m256i table = _mm256_xor_si256(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))),
                                         _mm256_set1_epi8(char(0x80)));
  const uint8_t* bs = lq_block_scales(T, w);
  const uint8_t* codes = lq_block_codes(T, w, n, 0);
  const int nb = n / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m512 offset = _mm512_setzero_ps();
  alignas(64) float f[16];
  for (int b0 = 0; b0 < nb; b0 += 16) {
    const int cnt = std::min(16, nb - b0);
    const __mmask16 m = __mmask16((1u << cnt) - 1);
    const __m512 fz = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, bs + b0))),
                                    _mm512_maskz_loadu_ps(m, x.d + b0));
    _mm512_store_ps(f, fz);
    const __m512i sums = _mm512_madd_epi16(_mm512_maskz_loadu_epi32(m, x.sum16 + 2 * b0), _mm512_set1_epi16(1));
    offset = _mm512_fmadd_ps(fz, _mm512_cvtepi32_ps(sums), offset);
    int k = 0;
    const auto block = [&](int kk) {
      const int b = b0 + kk;
      const __m256i lv = _mm256_shuffle_epi8(table, block_codes<T>(codes + b * kCodeBytes));
      const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lv,
                                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * b)));
      return _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(f + kk));
    };
    for (; k + 2 <= cnt; k += 2) {
      _mm_prefetch(reinterpret_cast<const char*>(codes + (b0 + k) * kCodeBytes) + 2048, _MM_HINT_T0);
      acc0 = _mm256_add_ps(acc0, block(k));
      acc1 = _mm256_add_ps(acc1, block(k + 1));
    }
    if (k < cnt) acc0 = _mm256_add_ps(acc0, block(k));
  }
  const __m512 a = _mm512_insertf32x8(_mm512_castps256_ps512(acc0), acc1, 1);
  return lq_scale(T, w) * _mm512_reduce_add_ps(_mm512_fnmadd_ps(_mm512_set1_ps(128.f), offset, a));
}

template <GgmlType T>
void rows_lq_ymm(int n, const void* w, size_t rb, int nrows, const ActRow& x, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(w);
  for (int r = 0; r < nrows; ++r) out[r] = row_lq_ymm<T>(n, p + r * rb, x);
}

}  // namespace

void fill_lq_avx512(DotTable& t) {
  t.q[int(GgmlType::LQ2)] = rows_lq_ymm<GgmlType::LQ2>;
  t.q[int(GgmlType::LQ3)] = rows_lq_ymm<GgmlType::LQ3>;
  t.q[int(GgmlType::LQ4)] = rows_lq_ymm<GgmlType::LQ4>;
}

}  // namespace leanlm
