// 256-bit dot kernels for the LQ rows (lq_format.h), shared by the AVX2 and AVX-512 translation
// units: included inside their namespace after dot_simd_impl.h (dot_s8s8, loads, prefetch).
//
// Per 32-block the codes are spread one per byte, looked up in the row's level table with one
// byte shuffle (2^b <= 16 int8 levels: the table is a shuffle operand, as IQ4_NL's fixed one is),
// and multiplied with the int8 activations; each block's float sum is scaled by its block scale
// times activation scale, formed eight at a time and taken by a broadcast load; the row's unit
// multiplies the sum once.
//
// Levels are int8 in [-127, 127] as written by leanquant.cc; a file's -128 still cannot saturate
// maddubs (128 * 127 * 2 < 32768).

// The 32 codes of one block, one byte each, in element order.
template <GgmlType T>
inline __m256i lq_codes(const uint8_t* c) {
  if constexpr (T == GgmlType::LQ4) {
    const __m256i q = _mm256_broadcastsi128_si256(load16u(c));  // low nibbles 0-15, high 16-31
    return _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0F));
  } else {
    // Element 8 g + i sits in bits 2 g of byte i: each 64-bit lane g shifts by 2 g.
    __m256i u = _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x(int64_t(load_u64(c))), _mm256_set_epi64x(6, 4, 2, 0)),
                                 _mm256_set1_epi8(3));
    if constexpr (T == GgmlType::LQ3) {  // bit l of the next 4 bytes is element l's third bit
      const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
      const __m256i bitsel = _mm256_set1_epi64x(0x8040201008040201);
      const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(load_u32(c + 8))), shuf);
      u = _mm256_or_si256(u, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bitsel), bitsel), _mm256_set1_epi8(4)));
    }
    return u;
  }
}

template <GgmlType T>
float row_lq(int n, const uint8_t* w, const ActRow& x) {
  constexpr int kCodeBytes = lq_code_bytes(T);
  const __m256i table = _mm256_broadcastsi128_si256(load16u(w));  // levels; entries past 2^b unused
  const uint8_t* bs = lq_block_scales(T, w);
  const uint8_t* codes = lq_block_codes(T, w, n, 0);
  const int nb = n / 32;
  auto block = [&](int b, const float* f) {
    const __m256i p = dot_s8s8(_mm256_shuffle_epi8(table, lq_codes<T>(codes + b * kCodeBytes)), load32(x.q + 32 * b));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(f));
  };
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  alignas(32) float f[8];  // block scale * activation scale of 8 blocks, each taken by a broadcast load
  for (int b0 = 0; b0 < nb; b0 += 8) {
    const int cnt = std::min(8, nb - b0);
    if (cnt == 8) {
      const __m256 u = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bs + b0))));
      _mm256_store_ps(f, _mm256_mul_ps(u, _mm256_loadu_ps(x.d + b0)));
    } else {
      for (int k = 0; k < cnt; ++k) f[k] = x.d[b0 + k] * float(bs[b0 + k]);
    }
    int k = 0;
    for (; k + 2 <= cnt; k += 2) {
      prefetch_ahead(codes + (b0 + k) * kCodeBytes, 2 * kCodeBytes);
      acc0 = _mm256_add_ps(acc0, block(b0 + k, f + k));
      acc1 = _mm256_add_ps(acc1, block(b0 + k + 1, f + k + 1));
    }
    if (k < cnt) acc0 = _mm256_add_ps(acc0, block(b0 + k, f + k));
  }
  return lq_scale(T, w) * hsum(_mm256_add_ps(acc0, acc1));
}

inline void fill_lq(DotTable& t) {
  t.q[int(GgmlType::LQ2)] = rows_one<row_lq<GgmlType::LQ2>>;
  t.q[int(GgmlType::LQ3)] = rows_one<row_lq<GgmlType::LQ3>>;
  t.q[int(GgmlType::LQ4)] = rows_one<row_lq<GgmlType::LQ4>>;
}
