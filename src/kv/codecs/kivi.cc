// KIVI (Liu et al., ICML 2024): asymmetric min-max quantization to 2 or 4 bits.
//   keys   per channel: for each channel, the block's G tokens share one fp16 scale and minimum;
//   values per token:   for each token, groups of G channels share one fp16 scale and minimum.
// x = min + scale * q, scale = (max - min) / (2^b - 1), q = round((x - min) / scale) in 0 .. 2^b - 1.
//
// Codes are packed in units of 32 along the grouped axis (tokens for keys, channels for values):
//   2 bits: 8 bytes; element 8k + i sits in bits 2k..2k+1 of byte i (k = 0..3, i = 0..7);
//   4 bits: 16 bytes; element i sits in the low nibble of byte i, element 16 + i in the high nibble.
// Both unpack into four 8-lane vectors holding elements 0-7, 8-15, 16-23, 24-31 of the unit.
//
// Key block  ([T] tokens, [D] channels): scale [D] fp16, min [D] fp16, codes [D][T * b / 8].
// Value block:                           scale [T][D/G] fp16, min [T][D/G] fp16, codes [T][D * b / 8].
//
// Scores never decode keys: with qs_c = q_c * scale_c, q . k_j = sum_c q_c min_c + sum_c qs_c q_cj,
// so one block costs one pass over its packed codes per query pair. Values are accumulated the same
// way: out += (w_j scale_jg) q_j + (w_j min_jg).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kv/block_codec.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

template <int B>
constexpr int kUnitBytes = 32 * B / 8;

// Element e (0..31) of a packed unit.
template <int B>
inline int code_at(const uint8_t* unit, int e) {
  if constexpr (B == 2) return (unit[e % 8] >> (2 * (e / 8))) & 3;
  else return e < 16 ? (unit[e] & 15) : (unit[e - 16] >> 4);
}

template <int B>
inline void pack_unit(const uint8_t* q /*[32]*/, uint8_t* unit) {
  if constexpr (B == 2) {
    for (int i = 0; i < 8; ++i) unit[i] = uint8_t(q[i] | q[8 + i] << 2 | q[16 + i] << 4 | q[24 + i] << 6);
  } else {
    for (int i = 0; i < 16; ++i) unit[i] = uint8_t(q[i] | q[16 + i] << 4);
  }
}

template <int B>
inline void unpack_unit(const uint8_t* unit, __m256 f[4]) {
  if constexpr (B == 2) {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(unit)));
    const __m256i m = _mm256_set1_epi32(3);
    f[0] = _mm256_cvtepi32_ps(_mm256_and_si256(b, m));
    f[1] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, 2), m));
    f[2] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, 4), m));
    f[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 6));
  } else {
    const __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(unit)));
    const __m256i hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(unit + 8)));
    const __m256i m = _mm256_set1_epi32(15);
    f[0] = _mm256_cvtepi32_ps(_mm256_and_si256(lo, m));
    f[1] = _mm256_cvtepi32_ps(_mm256_and_si256(hi, m));
    f[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(lo, 4));
    f[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(hi, 4));
  }
}

// Min-max quantization of n values (stride apart) into codes q[0..n); returns fp16 scale and min.
template <int B>
void quantize_group(const float* x, size_t stride, int n, uint8_t* q, uint16_t& scale_h, uint16_t& min_h) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i * stride]), hi = std::max(hi, x[i * stride]);
  constexpr int kMax = (1 << B) - 1;
  min_h = f32_to_fp16(lo);
  scale_h = f32_to_fp16((hi - lo) / kMax);
  const float mn = fp16_to_f32(min_h), s = fp16_to_f32(scale_h), inv = s > 0 ? 1.f / s : 0.f;
  for (int i = 0; i < n; ++i)
    q[i] = uint8_t(std::clamp(std::nearbyint((x[i * stride] - mn) * inv), 0.f, float(kMax)));
}

inline uint16_t load_h(const uint8_t* p, size_t i) {
  uint16_t v;
  std::memcpy(&v, p + 2 * i, 2);
  return v;
}
inline void store_h(uint8_t* p, size_t i, uint16_t v) { std::memcpy(p + 2 * i, &v, 2); }

template <int B>
class KiviKeyCodec : public BlockCodec {
 public:
  using BlockCodec::BlockCodec;
  size_t block_bytes() const override { return size_t(dim_) * 4 + size_t(dim_) * tokens_ * B / 8; }
  bool per_token() const override { return false; }

  void encode(int, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    // j0 == 0 always (per_token() is false): the whole block is quantized at once.
    uint8_t q[256];
    for (int c = 0; c < dim_; ++c) {
      uint16_t sh, mh;
      quantize_group<B>(x + c, size_t(x_stride), n, q, sh, mh);
      std::fill(q + n, q + tokens_, 0);
      store_h(blk, c, sh);
      store_h(blk + 2 * dim_, c, mh);
      for (int u = 0; u < tokens_ / 32; ++u) pack_unit<B>(q + 32 * u, codes(blk, c) + u * kUnitBytes<B>);
    }
  }

  void decode(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int c = 0; c < dim_; ++c) {
      const float s = fp16_to_f32(load_h(blk, c)), mn = fp16_to_f32(load_h(blk + 2 * dim_, c));
      const uint8_t* cc = codes(blk, c);
      for (int j = j0; j < j1; ++j) x[size_t(j - j0) * dim_ + c] = mn + s * code_at<B>(cc + j / 32 * kUnitBytes<B>, j % 32);
    }
  }

  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c)
        x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(load_h(blk + 2 * dim_, c)) +
                                       fp16_to_f32_ref(load_h(blk, c)) * code_at<B>(codes(blk, c) + j / 32 * kUnitBytes<B>, j % 32);
  }

  // Two queries at a time: 8 accumulators (32 tokens each) plus the 4 unpacked code vectors.
  void dot(int, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const override {
    thread_local AlignedVec<float> qs;  // [2][D] queries times scales
    if (qs.size() < size_t(2) * dim_) qs.resize(size_t(2) * dim_);
    alignas(32) float acc_out[2][32];
    for (int i = 0; i < p.n_q; i += 2) {
      const int nq = std::min(2, p.n_q - i);
      float bias[2] = {0, 0};
      for (int r = 0; r < nq; ++r) {
        const float* q = p.q + size_t(i + r) * p.q_stride;
        for (int c = 0; c < dim_; ++c) {
          qs[size_t(r) * dim_ + c] = q[c] * fp16_to_f32(load_h(blk, c));
          bias[r] += q[c] * fp16_to_f32(load_h(blk + 2 * dim_, c));
        }
      }
      for (int u = j0 / 32; u * 32 < j1; ++u) {
        __m256 a[2][4];
        for (auto& ar : a)
          for (auto& v : ar) v = _mm256_setzero_ps();
        const uint8_t* base = blk + size_t(dim_) * 4 + size_t(u) * kUnitBytes<B>;
        const size_t cstride = size_t(tokens_) * B / 8;
        if (nq == 2) {
          for (int c = 0; c < dim_; ++c) {
            __m256 f[4];
            unpack_unit<B>(base + c * cstride, f);
            const __m256 x0 = _mm256_broadcast_ss(&qs[c]), x1 = _mm256_broadcast_ss(&qs[dim_ + c]);
            for (int k = 0; k < 4; ++k) a[0][k] = _mm256_fmadd_ps(x0, f[k], a[0][k]), a[1][k] = _mm256_fmadd_ps(x1, f[k], a[1][k]);
          }
        } else {
          for (int c = 0; c < dim_; ++c) {
            __m256 f[4];
            unpack_unit<B>(base + c * cstride, f);
            const __m256 x0 = _mm256_broadcast_ss(&qs[c]);
            for (int k = 0; k < 4; ++k) a[0][k] = _mm256_fmadd_ps(x0, f[k], a[0][k]);
          }
        }
        const int lo = std::max(j0, u * 32), hi = std::min(j1, u * 32 + 32);
        for (int r = 0; r < nq; ++r) {
          for (int k = 0; k < 4; ++k) _mm256_store_ps(acc_out[r] + 8 * k, a[r][k]);
          float* o = out + size_t(i + r) * out_stride;
          for (int j = lo; j < hi; ++j) o[j - j0] = bias[r] + acc_out[r][j - u * 32];
        }
      }
    }
  }

 private:
  const uint8_t* codes(const uint8_t* blk, int c) const { return blk + size_t(dim_) * 4 + size_t(c) * tokens_ * B / 8; }
  uint8_t* codes(uint8_t* blk, int c) const { return blk + size_t(dim_) * 4 + size_t(c) * tokens_ * B / 8; }
};

template <int B>
class KiviValueCodec : public BlockCodec {
 public:
  KiviValueCodec(int dim, int tokens) : BlockCodec(dim, tokens), group_(std::min(tokens, dim)), ng_(dim / group_) {}
  size_t block_bytes() const override { return size_t(tokens_) * ng_ * 4 + size_t(tokens_) * dim_ * B / 8; }
  // scale [T][ng], min [T][ng], codes [T][D * b / 8]
  std::vector<size_t> row_planes() const override { return {size_t(ng_) * 2, size_t(ng_) * 2, size_t(dim_) * B / 8}; }

  void encode(int, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    uint8_t q[256];
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      for (int g = 0; g < ng_; ++g) {
        uint16_t sh, mh;
        quantize_group<B>(r + g * group_, 1, group_, q + 0, sh, mh);
        store_h(blk, size_t(j) * ng_ + g, sh);
        store_h(mins(blk), size_t(j) * ng_ + g, mh);
        for (int u = 0; u < group_ / 32; ++u)
          pack_unit<B>(q + 32 * u, codes(blk, j) + (g * group_ / 32 + u) * kUnitBytes<B>);
      }
    }
  }

  void decode(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; c += 32) {
        const int g = c / group_;
        const __m256 s = _mm256_set1_ps(fp16_to_f32(load_h(blk, size_t(j) * ng_ + g)));
        const __m256 m = _mm256_set1_ps(fp16_to_f32(load_h(mins(blk), size_t(j) * ng_ + g)));
        __m256 f[4];
        unpack_unit<B>(codes(blk, j) + c / 32 * kUnitBytes<B>, f);
        for (int k = 0; k < 4; ++k) _mm256_storeu_ps(x + size_t(j - j0) * dim_ + c + 8 * k, _mm256_fmadd_ps(s, f[k], m));
      }
  }

  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c) {
        const int g = c / group_;
        x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(load_h(mins(blk), size_t(j) * ng_ + g)) +
                                       fp16_to_f32_ref(load_h(blk, size_t(j) * ng_ + g)) *
                                           code_at<B>(codes(blk, j) + c / 32 * kUnitBytes<B>, c % 32);
      }
  }

  // Per 32-channel unit, the outputs of a query pair stay in registers while the tokens stream by;
  // the minimum terms are summed per group and added once.
  void axpy(int, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
            int out_stride) const override {
    for (int i = 0; i < n_q; i += 2) {
      const int nq = std::min(2, n_q - i);
      const float* w0 = w + size_t(i) * w_stride;
      const float* w1 = nq == 2 ? w0 + w_stride : w0;
      for (int g = 0; g < ng_; ++g) {
        float m0 = 0, m1 = 0;
        for (int j = j0; j < j1; ++j) {
          const float mn = fp16_to_f32(load_h(mins(blk), size_t(j) * ng_ + g));
          m0 += w0[j - j0] * mn, m1 += w1[j - j0] * mn;
        }
        for (int c = g * group_; c < (g + 1) * group_; c += 32) {
          float* o0 = out + size_t(i) * out_stride + c;
          float* o1 = nq == 2 ? o0 + out_stride : o0;
          __m256 a0[4], a1[4];
          for (int k = 0; k < 4; ++k) a0[k] = _mm256_set1_ps(m0), a1[k] = _mm256_set1_ps(m1);
          for (int j = j0; j < j1; ++j) {
            const float s = fp16_to_f32(load_h(blk, size_t(j) * ng_ + g));
            const float c0 = w0[j - j0] * s, c1 = w1[j - j0] * s;
            if (c0 == 0.f && c1 == 0.f) continue;
            __m256 f[4];
            unpack_unit<B>(codes(blk, j) + c / 32 * kUnitBytes<B>, f);
            const __m256 x0 = _mm256_set1_ps(c0), x1 = _mm256_set1_ps(c1);
            for (int k = 0; k < 4; ++k) a0[k] = _mm256_fmadd_ps(x0, f[k], a0[k]), a1[k] = _mm256_fmadd_ps(x1, f[k], a1[k]);
          }
          for (int k = 0; k < 4; ++k) _mm256_storeu_ps(o0 + 8 * k, _mm256_add_ps(_mm256_loadu_ps(o0 + 8 * k), a0[k]));
          if (nq == 2)
            for (int k = 0; k < 4; ++k) _mm256_storeu_ps(o1 + 8 * k, _mm256_add_ps(_mm256_loadu_ps(o1 + 8 * k), a1[k]));
        }
      }
    }
  }

 private:
  uint8_t* mins(uint8_t* blk) const { return blk + size_t(tokens_) * ng_ * 2; }
  const uint8_t* mins(const uint8_t* blk) const { return blk + size_t(tokens_) * ng_ * 2; }
  size_t codes_offset() const { return size_t(tokens_) * ng_ * 4; }
  uint8_t* codes(uint8_t* blk, int j) const { return blk + codes_offset() + size_t(j) * dim_ * B / 8; }
  const uint8_t* codes(const uint8_t* blk, int j) const { return blk + codes_offset() + size_t(j) * dim_ * B / 8; }

  int group_, ng_;  // channels per group, groups per token
};

}  // namespace

std::unique_ptr<BlockCodec> make_kivi_codec(KvSide side, int bits, int dim, int tokens) {
  if (side == KvSide::Key) {
    if (bits == 2) return std::make_unique<KiviKeyCodec<2>>(dim, tokens);
    return std::make_unique<KiviKeyCodec<4>>(dim, tokens);
  }
  if (bits == 2) return std::make_unique<KiviValueCodec<2>>(dim, tokens);
  return std::make_unique<KiviValueCodec<4>>(dim, tokens);
}

}  // namespace leanlm
