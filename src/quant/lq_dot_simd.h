// 256-bit dot kernels for the LQ rows (lq_format.h), one template for the AVX2 and the AVX-512
// translation units: each includes this inside its own namespace and passes a policy P with
//   static __m256i third_bit(__m256i u, const uint8_t* bits)  // LQ3: u + 4 where bit l of bits[4] is set
// (a compare on AVX2, a mask register on AVX-512). Needs kernels/simd_avx2.h, lq_format.h,
// act_quant.h and util/unaligned.h.
//
// Per 32-block, R rows at a time (the activation block is loaded once for all of them):
//   codes spread one per byte -> one byte shuffle in the row's table of level + 64 (0..127)
//   -> maddubs with the int8 activations: int16 pairs of at most 2 * 127 * 127, no saturation
//   -> times the block scale as int16 pairs, into int32 lanes (madd + add: vpdpwssd measured no
//      faster on Zen 4).
// The blocks of one activation scale group (Q8_G: 256 elements where n allows, act_quant.h) sum as
// integers, at most 8 * 2 * 32258 * 255 < 2^31 a lane, and become float once per group: per block
// there is no conversion and no float multiply. The + 64 adds 64 * u_b * sum(x_b) to block b; it is
// taken off once per row from the activation sums:
//   row = unit * (sum_g d_g * I_g - 64 * sum_b u_b * (d_b * S_b)).
// The block scales of R rows are widened to int16 pairs once per chunk of blocks and come to each
// block by a broadcast load (a load, not a shuffle: the shuffle port is the level lookup's).

namespace lq {

constexpr int kOffset = 64;    // level + 64 is 0..127 for levels in [-64, 63]
constexpr int kChunk = 256;    // blocks whose widened scales sit on the stack at once

// The row's table: its levels clamped to [-64, 63], plus 64, in both 128-bit lanes (16 bytes are
// read; entries past 2^b are never indexed).
inline __m256i level_table(const uint8_t* row) {
  __m128i lv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row));
  lv = _mm_min_epi8(_mm_max_epi8(lv, _mm_set1_epi8(kLqLevelMin)), _mm_set1_epi8(kLqLevelMax));
  return _mm256_broadcastsi128_si256(_mm_add_epi8(lv, _mm_set1_epi8(kOffset)));
}

// The 32 codes of one block, one byte each, in element order.
template <class P, GgmlType T>
inline __m256i block_codes(const uint8_t* c) {
  if constexpr (T == GgmlType::LQ4) {
    const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
    return _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0F));
  } else {
    // Element 8 g + i sits in bits 2 g of byte i: each 64-bit lane g shifts by 2 g.
    const __m256i u = _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x(int64_t(load_u64(c))), _mm256_set_epi64x(6, 4, 2, 0)),
                                       _mm256_set1_epi8(3));
    if constexpr (T == GgmlType::LQ3) return P::third_bit(u, c + 8);
    return u;
  }
}

// out[r] for rows r < R of a tile; G blocks per activation scale group.
template <class P, GgmlType T, int R, int G>
inline void tile(int n, const uint8_t* w, size_t rb, const ActRow& x, float* out) {
  constexpr int kCodeBytes = lq_code_bytes(T);
  const int nb = n / 32;
  __m256i table[R];
  const uint8_t* bsc[R];
  const uint8_t* codes[R];
  __m256 facc[R], off[R];
  float off_tail[R];
  for (int r = 0; r < R; ++r) {
    const uint8_t* row = w + r * rb;
    table[r] = level_table(row);
    bsc[r] = lq_block_scales(T, row);
    codes[r] = lq_block_codes(T, row, n, 0);
    facc[r] = off[r] = _mm256_setzero_ps();
    off_tail[r] = 0.f;
  }
  const uint8_t* pf = w + R * rb;
  const size_t step = (R * rb + nb - 1) / nb;  // at most 128: a block's bytes of R rows plus their share of the headers
  alignas(32) int32_t s2[R][kChunk];  // u_b | u_b << 16: the block scale as an int16 pair
  alignas(32) float ds[kChunk];        // d_b * S_b, shared by the tile's rows
  for (int c0 = 0; c0 < nb; c0 += kChunk) {
    const int c1 = std::min(nb, c0 + kChunk), c8 = c0 + (c1 - c0) / 8 * 8;
    for (int b = c0; b < c8; b += 8) {
      const __m256i sum = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.sum16 + 2 * b)),
                                            _mm256_set1_epi16(1));
      _mm256_store_ps(ds + (b - c0), _mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_loadu_ps(x.d + b)));
    }
    for (int b = c8; b < c1; ++b) ds[b - c0] = x.d[b] * float(int(x.sum16[2 * b]) + int(x.sum16[2 * b + 1]));
    for (int r = 0; r < R; ++r) {
      for (int b = c0; b < c8; b += 8) {
        const __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bsc[r] + b)));
        _mm256_store_si256(reinterpret_cast<__m256i*>(&s2[r][b - c0]), _mm256_or_si256(u, _mm256_slli_epi32(u, 16)));
        off[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(u), _mm256_load_ps(ds + (b - c0)), off[r]);
      }
      for (int b = c8; b < c1; ++b) {
        const int u = bsc[r][b];
        s2[r][b - c0] = u | (u << 16);
        off_tail[r] += float(u) * ds[b - c0];
      }
    }
    for (int g0 = c0; g0 < c1; g0 += G) {
      __m256i acc[R];
      for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
      for (int b = g0; b < g0 + G; ++b) {
        // The tile's rows are R short streams that the hardware prefetcher does not follow: the
        // next tile is fetched in address order, step bytes per block.
        _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(pf) + 64, _MM_HINT_T0);
        pf += step;
        const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * b));
        for (int r = 0; r < R; ++r) {
          const __m256i lv = _mm256_shuffle_epi8(table[r], block_codes<P, T>(codes[r] + b * kCodeBytes));
          acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_maddubs_epi16(lv, xb), _mm256_set1_epi32(s2[r][b - c0])));
        }
      }
      const __m256 d = _mm256_broadcast_ss(x.d + g0);
      for (int r = 0; r < R; ++r) facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), d, facc[r]);
    }
  }
  const __m256 k64 = _mm256_set1_ps(float(kOffset));
  for (int r = 0; r < R; ++r)
    out[r] = lq_scale(T, w + r * rb) * (simd::hsum(_mm256_fnmadd_ps(k64, off[r], facc[r])) - float(kOffset) * off_tail[r]);
}

template <class P, GgmlType T, int G>
void rows_g(int n, const uint8_t* w, size_t rb, int nrows, const ActRow& x, float* out) {
  constexpr int kRows = 4;
  int r = 0;
  for (; r + kRows <= nrows; r += kRows) tile<P, T, kRows, G>(n, w + r * rb, rb, x, out + r);
  for (; r < nrows; ++r) tile<P, T, 1, G>(n, w + r * rb, rb, x, out + r);
}

template <class P, GgmlType T>
void rows(int n, const void* w, size_t rb, int nrows, const ActRow& x, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(w);
  switch (act_group(n, ActScheme::Q8_G) / 32) {
    case 8: return rows_g<P, T, 8>(n, p, rb, nrows, x, out);
    case 4: return rows_g<P, T, 4>(n, p, rb, nrows, x, out);
    case 2: return rows_g<P, T, 2>(n, p, rb, nrows, x, out);
    default: return rows_g<P, T, 1>(n, p, rb, nrows, x, out);
  }
}

template <class P>
inline void fill(DotTable& t) {
  t.q[int(GgmlType::LQ2)] = rows<P, GgmlType::LQ2>;
  t.q[int(GgmlType::LQ3)] = rows<P, GgmlType::LQ3>;
  t.q[int(GgmlType::LQ4)] = rows<P, GgmlType::LQ4>;
}

template <class P>
inline void fill_lq3(DotTable& t) {
  t.q[int(GgmlType::LQ3)] = rows<P, GgmlType::LQ3>;
}

}  // namespace lq
