// 256-bit SIMD dot kernels, shared by the AVX2 and AVX-512 translation units.
//
// Included inside a namespace by dot_avx2.cc / dot_avx512.cc, after they define
//   __m256i dot_u8s8(__m256i u, __m256i s);  // 8 x int32: sums of 4 adjacent u8*s8 products
// (maddubs+madd on AVX2, vpdpbusd on AVX-512 VNNI). Everything else is common.
//
// Weight codes are unsigned; signed offsets are applied afterwards with the activation sums
// (see act_quant.h), so one u8*s8 primitive serves every format.

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// 16 packed bytes -> 32 codes: low nibbles (elements 0-15), then high nibbles (16-31).
inline __m256i unpack_nibbles_16(const uint8_t* p) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
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
inline int sum32(const ActRow& x, int b) { return int(x.sum16[2 * b]) + int(x.sum16[2 * b + 1]); }

// Signed x signed via |w| and sign transfer.
inline __m256i dot_s8s8(__m256i w, __m256i x) {
  return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

// ---- legacy 32-element formats --------------------------------------------------------------

float row_q8_0(int n, const BlockQ8_0* w, const ActRow& x) {
  __m256 acc = _mm256_setzero_ps();
  for (int b = 0; b < n / 32; ++b) {
    const __m256i p = dot_s8s8(load32u(reinterpret_cast<const uint8_t*>(w[b].qs)), load32(x.q + 32 * b));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x.d[b]), _mm256_cvtepi32_ps(p), acc);
  }
  return hsum(acc);
}

float row_q4_0(int n, const BlockQ4_0* w, const ActRow& x) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int b = 0; b < n / 32; ++b) {
    const float dd = h2f(w[b].d) * x.d[b];
    const __m256i p = dot_u8s8(unpack_nibbles_16(w[b].qs), load32(x.q + 32 * b));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
    corr += dd * float(sum32(x, b));
  }
  return hsum(acc) - 8.f * corr;
}

float row_q4_1(int n, const BlockQ4_1* w, const ActRow& x) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int b = 0; b < n / 32; ++b) {
    const __m256i p = dot_u8s8(unpack_nibbles_16(w[b].qs), load32(x.q + 32 * b));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x.d[b]), _mm256_cvtepi32_ps(p), acc);
    corr += h2f(w[b].m) * x.d[b] * float(sum32(x, b));
  }
  return hsum(acc) + corr;
}

template <bool kHasMin, typename Block>
float row_q5(int n, const Block* w, const ActRow& x) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int b = 0; b < n / 32; ++b) {
    uint32_t qh;
    std::memcpy(&qh, w[b].qh, 4);
    const __m256i u = _mm256_or_si256(unpack_nibbles_16(w[b].qs), expand_bits_x16(qh));
    const __m256i p = dot_u8s8(u, load32(x.q + 32 * b));
    const float dd = h2f(w[b].d) * x.d[b];
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
    if constexpr (kHasMin) corr += h2f(w[b].m) * x.d[b] * float(sum32(x, b));
    else corr -= 16.f * dd * float(sum32(x, b));
  }
  return hsum(acc) + corr;
}

// ---- K formats (256-element super-blocks) ---------------------------------------------------

template <bool kQ5>
float row_q45_k(int n, const uint8_t* w, const ActRow& x) {
  const size_t bytes = kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int sb = 0; sb < n / 256; ++sb, w += bytes) {
    uint16_t dh, mh;
    std::memcpy(&dh, w, 2);
    std::memcpy(&mh, w + 2, 2);
    const float d = h2f(dh), dmin = h2f(mh);
    const uint8_t* scales = w + 4;
    const uint8_t* qs = w + 16 + (kQ5 ? 32 : 0);
    __m256i qh = kQ5 ? load32u(w + 16) : _mm256_setzero_si256();
    for (int g = 0; g < 4; ++g) {
      const __m256i q = load32u(qs + 32 * g);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (kQ5) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      const int b0 = sb * 8 + 2 * g;  // activation block of the low-nibble sub-block
      uint8_t sc0, mn0, sc1, mn1;
      unpack_k4_scale_min(2 * g, scales, &sc0, &mn0);
      unpack_k4_scale_min(2 * g + 1, scales, &sc1, &mn1);
      const __m256i p0 = dot_u8s8(lo, load32(x.q + 32 * b0));
      const __m256i p1 = dot_u8s8(hi, load32(x.q + 32 * (b0 + 1)));
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc0 * x.d[b0]), _mm256_cvtepi32_ps(p0), acc);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc1 * x.d[b0 + 1]), _mm256_cvtepi32_ps(p1), acc);
      corr += dmin * (mn0 * x.d[b0] * float(sum32(x, b0)) + mn1 * x.d[b0 + 1] * float(sum32(x, b0 + 1)));
    }
  }
  return hsum(acc) - corr;
}

// One 32-code group whose halves (16 elements each) carry their own integer scales s0, s1.
inline __m256 scale_halves(__m256i p, float f0, float f1) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set_m128(_mm_set1_ps(f1), _mm_set1_ps(f0)));
}

float row_q6_k(int n, const BlockQ6_K* w, const ActRow& x) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int sb = 0; sb < n / 256; ++sb) {
    const float d = h2f(w[sb].d);
    const int8_t* sc = w[sb].scales;
    for (int half = 0; half < 2; ++half) {
      const __m256i ql0 = load32u(w[sb].ql + 64 * half);
      const __m256i ql1 = load32u(w[sb].ql + 64 * half + 32);
      const __m256i qh = load32u(w[sb].qh + 32 * half);
      __m256i u[4];
      u[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
      u[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
      u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
      u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
      for (int k = 0; k < 4; ++k) {
        const int b = sb * 8 + half * 4 + k;
        const int is = half * 8 + 2 * k;
        const float f = d * x.d[b];
        const __m256i p = dot_u8s8(u[k], load32(x.q + 32 * b));
        acc = _mm256_add_ps(acc, scale_halves(p, f * sc[is], f * sc[is + 1]));
        corr += f * float(sc[is] * x.sum16[2 * b] + sc[is + 1] * x.sum16[2 * b + 1]);
      }
    }
  }
  return hsum(acc) - 32.f * corr;
}

float row_q2_k(int n, const BlockQ2_K* w, const ActRow& x) {
  const __m256i m3 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int sb = 0; sb < n / 256; ++sb) {
    const float d = h2f(w[sb].d), dmin = h2f(w[sb].dmin);
    const uint8_t* sc = w[sb].scales;
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load32u(w[sb].qs + 32 * half);
      for (int k = 0; k < 4; ++k) {
        const int b = sb * 8 + half * 4 + k;
        const int is = half * 8 + 2 * k;
        const __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);
        const __m256i p = dot_u8s8(u, load32(x.q + 32 * b));
        const float f = d * x.d[b];
        acc = _mm256_add_ps(acc, scale_halves(p, f * (sc[is] & 0xF), f * (sc[is + 1] & 0xF)));
        corr += dmin * x.d[b] * float((sc[is] >> 4) * x.sum16[2 * b] + (sc[is + 1] >> 4) * x.sum16[2 * b + 1]);
      }
    }
  }
  return hsum(acc) - corr;
}

float row_q3_k(int n, const BlockQ3_K* w, const ActRow& x) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m256i four = _mm256_set1_epi8(4);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int sb = 0; sb < n / 256; ++sb) {
    const float d = h2f(w[sb].d);
    int8_t sc[16];
    unpack_q3k_scales(w[sb].scales, sc);
    const __m256i hm = load32u(w[sb].hmask);
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load32u(w[sb].qs + 32 * half);
      for (int k = 0; k < 4; ++k) {
        const int b = sb * 8 + half * 4 + k;
        const int is = half * 8 + 2 * k;
        const __m256i bit = _mm256_set1_epi8(char(1 << (half * 4 + k)));
        const __m256i hb = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), four);
        const __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3), hb);
        const __m256i p = dot_u8s8(u, load32(x.q + 32 * b));
        const float f = d * x.d[b];
        acc = _mm256_add_ps(acc, scale_halves(p, f * sc[is], f * sc[is + 1]));
        corr += f * float(sc[is] * x.sum16[2 * b] + sc[is + 1] * x.sum16[2 * b + 1]);
      }
    }
  }
  return hsum(acc) - 4.f * corr;
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

template <typename Block, float (*Fn)(int, const Block*, const ActRow&)>
void rows_q(int n, const void* w, size_t rb, int nrows, const ActRow& x, float* out) {
  for (int r = 0; r < nrows; ++r)
    out[r] = Fn(n, reinterpret_cast<const Block*>(static_cast<const uint8_t*>(w) + r * rb), x);
}

template <GgmlType T>
void rows_f(int n, const void* w, size_t rb, int nrows, const float* x, float* out) {
  for (int r = 0; r < nrows; ++r) out[r] = row_float<T>(n, static_cast<const uint8_t*>(w) + r * rb, x);
}

inline void fill_common(DotTable& t) {
  t.q[int(GgmlType::Q8_0)] = rows_q<BlockQ8_0, row_q8_0>;
  t.q[int(GgmlType::Q4_0)] = rows_q<BlockQ4_0, row_q4_0>;
  t.q[int(GgmlType::Q4_1)] = rows_q<BlockQ4_1, row_q4_1>;
  t.q[int(GgmlType::Q5_0)] = rows_q<BlockQ5_0, row_q5<false, BlockQ5_0>>;
  t.q[int(GgmlType::Q5_1)] = rows_q<BlockQ5_1, row_q5<true, BlockQ5_1>>;
  t.q[int(GgmlType::Q4_K)] = rows_q<uint8_t, row_q45_k<false>>;
  t.q[int(GgmlType::Q5_K)] = rows_q<uint8_t, row_q45_k<true>>;
  t.q[int(GgmlType::Q6_K)] = rows_q<BlockQ6_K, row_q6_k>;
  t.q[int(GgmlType::Q2_K)] = rows_q<BlockQ2_K, row_q2_k>;
  t.q[int(GgmlType::Q3_K)] = rows_q<BlockQ3_K, row_q3_k>;
  t.f[int(GgmlType::F32)] = rows_f<GgmlType::F32>;
  t.f[int(GgmlType::F16)] = rows_f<GgmlType::F16>;
  t.f[int(GgmlType::BF16)] = rows_f<GgmlType::BF16>;
}
