// 256-bit SIMD dot kernels, shared by the AVX2 and AVX-512 translation units.
//
// Included inside a namespace by dot_avx2.cc / dot_avx512.cc (which include util/unaligned.h for
// load_u16 / load_u32 first), after they define
//   __m256i dot_u8s8(__m256i u, __m256i s);  // 8 x int32: sums of 4 adjacent u8*s8 products
// (maddubs+madd on AVX2, vpdpbusd on AVX-512 VNNI). Everything else is common.
//
// Weight codes are unsigned; signed offsets are applied afterwards with the activation sums
// (see act_quant.h), so one u8*s8 primitive serves every format.
//
// Why the kernels look the way they do (decode is a stream of weight bytes; these kernels must
// keep up with memory, not with themselves; measurements in docs/benchmarks.md):
//   - one row at a time, front to back, with software prefetch: the rows of a matrix lie one after
//     the other, and reading 2 or 4 rows in one pass (to share each activation load) turned one
//     sequential stream into interleaved ones and measured 1.6-2x slower; the activation row is
//     in L1 either way;
//   - K formats accumulate a whole 256-element super-block in int32 (sub-block scales applied with
//     madd on int16 products, minimums and code offsets through the activation block sums), then
//     convert once: one float multiply-add per super-block instead of one per sub-block. They
//     assume the Q8_K activation scheme (one scale per 256 elements, act_quant.h) and read the
//     scale of the super-block's first 32-block only;
//   - the legacy formats fold four blocks into one float multiply-add.

using simd::hsum;
using simd::hsum_epi32;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Software prefetch distance. One core streaming a single row has too few misses in flight for
// the hardware prefetchers alone to reach the memory's speed; prefetching this far ahead of the
// block being read was measured best (bench/bench_gemv, 512-4096 tried).
constexpr int kPrefetchAhead = 2048;
inline void prefetch_ahead(const void* block, size_t bytes) {
  const char* p = static_cast<const char*>(block) + kPrefetchAhead;
  for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// 32 bits -> 32 bytes, byte j = 0x10 if bit j is set (the 5th bit of Q5 codes).
inline __m256i expand_bits_x16(uint32_t bits) {
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                         0x0101010101010101, 0x0000000000000000);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(bits)), shuf);
  const __m256i bitsel = _mm256_set1_epi64x(0x8040201008040201);
  v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bitsel), bitsel);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

inline __m256i load32(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256i load32u(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load16u(const void* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline int sum32(const ActRow& x, int b) { return int(x.sum16[2 * b]) + int(x.sum16[2 * b + 1]); }

// Signed x signed via |w| and sign transfer.
inline __m256i dot_s8s8(__m256i w, __m256i x) {
  return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

// ---- legacy 32-element formats --------------------------------------------------------------
// Per 32-block both operands carry a float scale, so each block ends in a float multiply-add.

float row_q8_0(int n, const uint8_t* w, const ActRow& x) {
  const auto* blk = reinterpret_cast<const BlockQ8_0*>(w);
  __m256 acc = _mm256_setzero_ps();
  for (int b = 0; b < n / 32; ++b) {
    prefetch_ahead(blk + b, 1);
    const __m256i p = dot_s8s8(load32u(reinterpret_cast<const uint8_t*>(blk[b].qs)), load32(x.q + 32 * b));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(blk[b].d) * x.d[b]), _mm256_cvtepi32_ps(p), acc);
  }
  return hsum(acc);
}

// Q4_0, Q5_0 (codes with an offset of 8 or 16) and Q4_1, Q5_1 (a float minimum per block).
// Four blocks at a time: their integer sums are folded by horizontal adds into one register (lane i
// of each half belongs to block i), converted once and scaled by the four blocks' scales in one
// multiply-add; offsets and minimums go through the activation block sums, one multiply-add per
// four blocks. The nibbles are split with one variable shift of a register holding the 16 bytes
// twice.
template <bool kQ5, bool kMin>
float row_q45_legacy(int n, const uint8_t* w, const ActRow& x) {
  using Block = std::conditional_t<kMin, std::conditional_t<kQ5, BlockQ5_1, BlockQ4_1>,
                                   std::conditional_t<kQ5, BlockQ5_0, BlockQ4_0>>;
  const Block* blk = reinterpret_cast<const Block*>(w);
  const int nb = n / 32;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i high_half_by_4 = _mm256_set_epi64x(4, 4, 0, 0);
  auto codes = [&](const Block& bk) {
    const __m256i q = _mm256_broadcastsi128_si256(load16u(bk.qs));
    __m256i u = _mm256_and_si256(_mm256_srlv_epi64(q, high_half_by_4), m4);
    if constexpr (kQ5) u = _mm256_or_si256(u, expand_bits_x16(load_u32(bk.qh)));
    return u;
  };
  __m256 acc = _mm256_setzero_ps();
  __m128 corr = _mm_setzero_ps();  // (offset scale or minimum) * activation scale * code sum, per block
  int b = 0;
  for (; b + 4 <= nb; b += 4) {
    prefetch_ahead(blk + b, 4 * sizeof(Block));
    __m256i p[4];
    for (int i = 0; i < 4; ++i) p[i] = dot_u8s8(codes(blk[b + i]), load32(x.q + 32 * (b + i)));
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    const __m128 dw = _mm_cvtph_ps(_mm_setr_epi16(short(blk[b].d), short(blk[b + 1].d), short(blk[b + 2].d),
                                                  short(blk[b + 3].d), 0, 0, 0, 0));
    const __m128 xd = _mm_loadu_ps(x.d + b);
    const __m128 scale = _mm_mul_ps(dw, xd);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_set_m128(scale, scale), acc);
    // xd * (sum of the block's 32 activation codes), for four blocks
    const __m128 xsum = _mm_mul_ps(xd, _mm_cvtepi32_ps(_mm_madd_epi16(load16u(x.sum16 + 2 * b), _mm_set1_epi16(1))));
    if constexpr (kMin) {
      const __m128 m = _mm_cvtph_ps(_mm_setr_epi16(short(blk[b].m), short(blk[b + 1].m), short(blk[b + 2].m),
                                                   short(blk[b + 3].m), 0, 0, 0, 0));
      corr = _mm_fmadd_ps(m, xsum, corr);
    } else {
      corr = _mm_fmadd_ps(dw, xsum, corr);
    }
  }
  float tail = 0.f, tail_corr = 0.f;
  for (; b < nb; ++b) {
    const float xd = x.d[b];
    tail += h2f(blk[b].d) * xd * float(hsum_epi32(dot_u8s8(codes(blk[b]), load32(x.q + 32 * b))));
    float c;
    if constexpr (kMin) c = h2f(blk[b].m);
    else c = h2f(blk[b].d);
    tail_corr += c * xd * float(sum32(x, b));
  }
  __m128 c2 = _mm_add_ps(corr, _mm_movehl_ps(corr, corr));
  c2 = _mm_add_ss(c2, _mm_movehdup_ps(c2));
  const float c = _mm_cvtss_f32(c2) + tail_corr;
  constexpr float kOffset = kMin ? 1.f : (kQ5 ? -16.f : -8.f);  // minimum added, or code offset subtracted
  return hsum(acc) + tail + kOffset * c;
}

// ---- K formats (256-element super-blocks) ---------------------------------------------------
// The activation has one scale per super-block (Q8_K), so a super-block's integer sum needs only
// one float multiply-add per row.

// int16 lane j of a 128-bit vector broadcast to all sixteen lanes of a 256-bit one whose halves
// both hold that vector: shuffle control for lane j.
inline __m256i lane16_mask(int j) { return _mm256_set1_epi16(int16_t(((2 * j + 1) << 8) | (2 * j))); }
// Shuffle control that puts int16 lane 2k in the low 128 bits and lane 2k+1 in the high 128 bits:
// the scales of the two 16-element halves of one 32-element group.
inline __m256i lane16_pair_mask(int k) {
  return _mm256_set_m128i(_mm_set1_epi16(int16_t(((4 * k + 3) << 8) | (4 * k + 2))),
                          _mm_set1_epi16(int16_t(((4 * k + 1) << 8) | (4 * k))));
}

// 12 packed bytes (Q4_K / Q5_K) -> 8 six-bit scales and 8 six-bit minimums, as int16.
inline void k4_scales_mins(const uint8_t* p, __m128i* sc, __m128i* mn) {
  const uint32_t a = load_u32(p), b = load_u32(p + 4), c = load_u32(p + 8);
  const uint32_t sc_lo = a & 0x3F3F3F3Fu, mn_lo = b & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
  const uint32_t mn_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
  *sc = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, int(sc_hi), int(sc_lo)));
  *mn = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, int(mn_hi), int(mn_lo)));
}

template <bool kQ5>
float row_q45_k(int n, const uint8_t* w, const ActRow& x) {
  constexpr size_t kBytes = kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  constexpr size_t kQsAt = kQ5 ? 48 : 16;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  for (int sb = 0; sb < n / 256; ++sb) {
    const uint8_t* blk = w + sb * kBytes;
    prefetch_ahead(blk, kBytes);
    const int8_t* xq = x.q + 256 * sb;
    const float xd = x.d[8 * sb];
    __m128i sc, mn;
    k4_scales_mins(blk + 4, &sc, &mn);
    // minimums times the eight 32-element sums of the activation codes
    const __m128i bsum = _mm_hadd_epi16(load16u(x.sum16 + 16 * sb), load16u(x.sum16 + 16 * sb + 8));
    const __m256i msum = _mm256_zextsi128_si256(_mm_madd_epi16(mn, bsum));
    acc = _mm256_fnmadd_ps(_mm256_set1_ps(h2f(load_u16(blk + 2)) * xd), _mm256_cvtepi32_ps(msum), acc);
    const __m256i scales = _mm256_broadcastsi128_si256(sc);
    __m256i qh = kQ5 ? load32u(blk + 16) : _mm256_setzero_si256();
    __m256i isum = _mm256_setzero_si256();
    for (int g = 0; g < 4; ++g) {
      const __m256i q = load32u(blk + kQsAt + 32 * g);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (kQ5) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      // codes <= 31, activations <= 127: the int16 pair sums cannot saturate
      const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(xq + 64 * g)),
                                           _mm256_shuffle_epi8(scales, lane16_mask(2 * g)));
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load32(xq + 64 * g + 32)),
                                           _mm256_shuffle_epi8(scales, lane16_mask(2 * g + 1)));
      isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(load_u16(blk)) * xd), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc);
}

// The formats with one scale per 16 elements (Q6_K, Q2_K, Q3_K): their 16 scales as int16, split
// into two registers whose 128-bit halves both hold scales 0-7 (half 0) or 8-15 (half 1).
struct Scales16 {
  __m256i half[2];
  explicit Scales16(__m256i sc16)
      : half{_mm256_permute2x128_si256(sc16, sc16, 0x00), _mm256_permute2x128_si256(sc16, sc16, 0x11)} {}
  // The int16 products p of group k (0-3) of a half times their two scales, summed into int32.
  __m256i apply(__m256i p, int h, int k) const {
    return _mm256_madd_epi16(p, _mm256_shuffle_epi8(half[h], lane16_pair_mask(k)));
  }
};

// Q6_K: 6-bit codes with offset 32, one signed scale per 16 elements.
float row_q6_k(int n, const uint8_t* w, const ActRow& x) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  for (int sb = 0; sb < n / 256; ++sb) {
    const auto* blk = reinterpret_cast<const BlockQ6_K*>(w) + sb;
    prefetch_ahead(blk, sizeof(BlockQ6_K));
    const int8_t* xq = x.q + 256 * sb;
    const __m256i sc16 = _mm256_cvtepi8_epi16(load16u(blk->scales));
    const Scales16 scales(sc16);
    // offset: -32 * sum over 16-element groups of scale * activation sum
    const __m256i xsum16 = load32u(reinterpret_cast<const uint8_t*>(x.sum16 + 16 * sb));
    __m256i isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sc16, xsum16), 5));
    for (int half = 0; half < 2; ++half) {
      const __m256i ql0 = load32u(blk->ql + 64 * half);
      const __m256i ql1 = load32u(blk->ql + 64 * half + 32);
      const __m256i qh = load32u(blk->qh + 32 * half);
      __m256i u[4];
      u[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
      u[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
      u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
      u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
      for (int k = 0; k < 4; ++k)  // codes <= 63, activations <= 127: int16 pair sums <= 16002
        isum = _mm256_add_epi32(isum, scales.apply(_mm256_maddubs_epi16(u[k], load32(xq + 128 * half + 32 * k)), half, k));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(blk->d) * x.d[8 * sb]), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc);
}

// Q2_K: 2-bit codes, a 4-bit scale and a 4-bit minimum per 16 elements.
float row_q2_k(int n, const uint8_t* w, const ActRow& x) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  for (int sb = 0; sb < n / 256; ++sb) {
    const auto* blk = reinterpret_cast<const BlockQ2_K*>(w) + sb;
    prefetch_ahead(blk, sizeof(BlockQ2_K));
    const int8_t* xq = x.q + 256 * sb;
    const float xd = x.d[8 * sb];
    const __m128i packed = load16u(blk->scales);
    const Scales16 scales(_mm256_cvtepu8_epi16(_mm_and_si128(packed, m4)));
    const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
    const __m256i xsum16 = load32u(reinterpret_cast<const uint8_t*>(x.sum16 + 16 * sb));
    acc = _mm256_fnmadd_ps(_mm256_set1_ps(h2f(blk->dmin) * xd), _mm256_cvtepi32_ps(_mm256_madd_epi16(mn16, xsum16)), acc);
    __m256i isum = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load32u(blk->qs + 32 * half);
      for (int k = 0; k < 4; ++k) {
        const __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);
        isum = _mm256_add_epi32(isum, scales.apply(_mm256_maddubs_epi16(u, load32(xq + 128 * half + 32 * k)), half, k));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(blk->d) * xd), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc);
}

// Q3_K's 16 six-bit scales (packed in 12 bytes: low nibbles of scales 0-7 and 8-15 in bytes 0-7,
// two high bits of each in bytes 8-11) as signed bytes, offset -32 applied (unpack_q3k_scales).
inline __m128i q3k_scales(const uint8_t* p) {
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m128i low8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(low8, m4), _mm_and_si128(_mm_srli_epi16(low8, 4), m4));
  const uint32_t a = load_u32(p + 8);
  const __m128i hi = _mm_set_epi32(int((a >> 6) & 0x03030303u), int((a >> 4) & 0x03030303u),
                                   int((a >> 2) & 0x03030303u), int(a & 0x03030303u));
  return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
}

// Q3_K: 3-bit codes (two low bits plus a high-bit mask) with offset 4, a signed 6-bit scale per 16.
float row_q3_k(int n, const uint8_t* w, const ActRow& x) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m256i four = _mm256_set1_epi8(4);
  __m256 acc = _mm256_setzero_ps();
  for (int sb = 0; sb < n / 256; ++sb) {
    const auto* blk = reinterpret_cast<const BlockQ3_K*>(w) + sb;
    prefetch_ahead(blk, sizeof(BlockQ3_K));
    const int8_t* xq = x.q + 256 * sb;
    const __m256i sc16 = _mm256_cvtepi8_epi16(q3k_scales(blk->scales));
    const Scales16 scales(sc16);
    const __m256i xsum16 = load32u(reinterpret_cast<const uint8_t*>(x.sum16 + 16 * sb));
    __m256i isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sc16, xsum16), 2));
    const __m256i hm = load32u(blk->hmask);
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load32u(blk->qs + 32 * half);
      for (int k = 0; k < 4; ++k) {
        const __m256i bit = _mm256_set1_epi8(char(1 << (half * 4 + k)));
        const __m256i hb = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), four);
        const __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3), hb);
        isum = _mm256_add_epi32(isum, scales.apply(_mm256_maddubs_epi16(u, load32(xq + 128 * half + 32 * k)), half, k));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(blk->d) * x.d[8 * sb]), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc);
}

// ---- float formats ---------------------------------------------------------------------------

template <GgmlType T>
float row_float(int n, const uint8_t* w, const float* x) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int i = 0;
  auto load = [&](int k) -> __m256 {
    if constexpr (T == GgmlType::F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(w) + k);
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * k));
    if constexpr (T == GgmlType::F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  };
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(load(i + 8), _mm256_loadu_ps(x + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(x + i), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    float wi;
    if constexpr (T == GgmlType::F32) std::memcpy(&wi, w + 4 * i, 4);
    else {
      uint16_t h;
      std::memcpy(&h, w + 2 * i, 2);
      wi = T == GgmlType::F16 ? h2f(h) : bf16_to_f32(h);
    }
    s += wi * x[i];
  }
  return s;
}

// ---- table glue --------------------------------------------------------------------------------

// A one-row kernel over every row.
template <float (*Fn)(int, const uint8_t*, const ActRow&)>
void rows_one(int n, const void* w, size_t rb, int nrows, const ActRow& x, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(w);
  for (int r = 0; r < nrows; ++r) out[r] = Fn(n, p + r * rb, x);
}

template <GgmlType T>
void rows_f(int n, const void* w, size_t rb, int nrows, const float* x, float* out) {
  for (int r = 0; r < nrows; ++r) out[r] = row_float<T>(n, static_cast<const uint8_t*>(w) + r * rb, x);
}

inline void fill_common(DotTable& t) {
  t.q[int(GgmlType::Q8_0)] = rows_one<row_q8_0>;
  t.q[int(GgmlType::Q4_0)] = rows_one<row_q45_legacy<false, false>>;
  t.q[int(GgmlType::Q4_1)] = rows_one<row_q45_legacy<false, true>>;
  t.q[int(GgmlType::Q5_0)] = rows_one<row_q45_legacy<true, false>>;
  t.q[int(GgmlType::Q5_1)] = rows_one<row_q45_legacy<true, true>>;
  t.q[int(GgmlType::Q4_K)] = rows_one<row_q45_k<false>>;
  t.q[int(GgmlType::Q5_K)] = rows_one<row_q45_k<true>>;
  t.q[int(GgmlType::Q6_K)] = rows_one<row_q6_k>;
  t.q[int(GgmlType::Q2_K)] = rows_one<row_q2_k>;
  t.q[int(GgmlType::Q3_K)] = rows_one<row_q3_k>;
  t.f[int(GgmlType::F32)] = rows_f<GgmlType::F32>;
  t.f[int(GgmlType::F16)] = rows_f<GgmlType::F16>;
  t.f[int(GgmlType::BF16)] = rows_f<GgmlType::BF16>;
}
