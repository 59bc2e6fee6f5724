// 256-bit dot kernels for the LQ rows (lq_format.h), shared by the AVX2 and AVX-512 translation
// units: included inside their namespace after dot_simd_impl.h (dot_s8s8, loads, prefetch).
//
// Per 32-block the codes are spread one per byte, looked up in the row's level table with one
// byte shuffle (2^b <= 16 int8 levels: the table is a shuffle operand, as IQ4_NL's fixed one is),
// and multiplied with the int8 activations; four blocks fold into one float multiply-add whose
// scales are block scale * activation scale; the row's unit multiplies the sum once.
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
    uint64_t low;
    std::memcpy(&low, c, 8);
    __m256i u = _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x(int64_t(low)), _mm256_set_epi64x(6, 4, 2, 0)),
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
  auto block_dot = [&](int b) {
    return dot_s8s8(_mm256_shuffle_epi8(table, lq_codes<T>(codes + b * kCodeBytes)), load32(x.q + 32 * b));
  };
  __m256 acc = _mm256_setzero_ps();
  int b = 0;
  for (; b + 4 <= nb; b += 4) {
    prefetch_ahead(codes + b * kCodeBytes, 4 * kCodeBytes);
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(block_dot(b), block_dot(b + 1)),
                                        _mm256_hadd_epi32(block_dot(b + 2), block_dot(b + 3)));
    const __m128 u = _mm_cvtepi32_ps(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(int(load_u32(bs + b)))));
    const __m128 scale = _mm_mul_ps(_mm_loadu_ps(x.d + b), u);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_set_m128(scale, scale), acc);
  }
  float tail = 0.f;
  for (; b < nb; ++b) tail += (x.d[b] * float(bs[b])) * float(hsum_epi32(block_dot(b)));
  return lq_scale(T, w) * (hsum(acc) + tail);
}

inline void fill_lq(DotTable& t) {
  t.q[int(GgmlType::LQ2)] = rows_one<row_lq<GgmlType::LQ2>>;
  t.q[int(GgmlType::LQ3)] = rows_one<row_lq<GgmlType::LQ3>>;
  t.q[int(GgmlType::LQ4)] = rows_one<row_lq<GgmlType::LQ4>>;
}
