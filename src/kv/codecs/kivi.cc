// KIVI (Liu et al., ICML 2024): asymmetric min-max quantization to 2 or 4 bits.
//   keys   per channel: for each channel, the block's T tokens share one fp16 scale and minimum;
//   values per token:   for each token, groups of G channels share one fp16 scale and minimum.
// x = min + scale * q, scale = (max - min) / (2^b - 1), q = round((x - min) / scale) in 0 .. 2^b - 1.
//
// Key block  ([T] tokens, [D] channels): scale [D] fp16, min [D] fp16, codes in lanes
//            [D*b/32][T][4] (kv_kernels.h, lane keys).
// Value block: scale [D/G][T] fp16, min [D/G][T] fp16, codes [T][D*b/8] in units of 32 channels
//            (kv_kernels.h, code rows).
//
// Scores never decode keys: with qs_c = q_c * scale_c, q . k_j = sum_c q_c min_c + sum_c qs_c q_cj;
// qs is quantized to int8 once per block and multiplied with the codes by byte dot products.
// Values are accumulated the same way: out += (w_j scale_jg) q_j + (w_j min_jg).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kv/block_codec.h"
#include "kv/kv_kernels.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

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
    std::vector<uint8_t> q(size_t(tokens_) * dim_, 0);  // [T][D]
    std::vector<uint8_t> col(tokens_);
    for (int c = 0; c < dim_; ++c) {
      uint16_t sh, mh;
      quantize_group<B>(x + c, size_t(x_stride), n, col.data(), sh, mh);
      store_h(blk, c, sh);
      store_h(blk + 2 * dim_, c, mh);
      for (int j = 0; j < n; ++j) q[size_t(j) * dim_ + c] = col[j];
    }
    for (int j = 0; j < tokens_; ++j) pack_lane_key(q.data() + size_t(j) * dim_, dim_, B, tokens_, j, lanes(blk));
  }

  void decode(int h, const uint8_t* blk, int j0, int j1, float* x) const override { decode_ref(h, blk, j0, j1, x); }
  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c)
        x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(load_h(blk + 2 * dim_, c)) +
                                       fp16_to_f32_ref(load_h(blk, c)) * lane_key_code(lanes(blk), dim_, B, tokens_, j, c);
  }

  // Per block: the queries times the block's channel scales, quantized to int8 (in the kernel).
  void dot(int, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const override {
    const LaneKeys k{lanes(blk), tokens_, B, nullptr, 0};
    const uint16_t* h = reinterpret_cast<const uint16_t*>(blk);
    best_kv_kernels().kivi_key_scores(k, h, h + dim_, j0, j1, dim_, p.q, p.n_q, p.q_stride, out, out_stride);
  }

 private:
  const uint8_t* lanes(const uint8_t* blk) const { return blk + size_t(dim_) * 4; }
  uint8_t* lanes(uint8_t* blk) const { return blk + size_t(dim_) * 4; }
};

template <int B>
class KiviValueCodec : public BlockCodec {
 public:
  KiviValueCodec(int dim, int tokens) : BlockCodec(dim, tokens), group_(std::min(tokens, dim)), ng_(dim / group_) {}
  size_t block_bytes() const override { return size_t(tokens_) * ng_ * 4 + size_t(tokens_) * dim_ * B / 8; }
  // scale [ng][T], min [ng][T], codes [T][D * b / 8]
  std::vector<RowPlane> row_planes() const override { return {{2, ng_}, {2, ng_}, {size_t(dim_) * B / 8, 1}}; }

  void encode(int, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    uint8_t q[256];
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      uint8_t* row = codes(blk, j);
      std::memset(row, 0, size_t(dim_) * B / 8);
      for (int g = 0; g < ng_; ++g) {
        uint16_t sh, mh;
        quantize_group<B>(r + g * group_, 1, group_, q + g * group_, sh, mh);
        store_h(blk, size_t(g) * tokens_ + j, sh);
        store_h(mins(blk), size_t(g) * tokens_ + j, mh);
      }
      for (int c = 0; c < dim_; ++c) {  // units of 32 channels (kv_kernels.h, code rows)
        uint8_t* unit = row + size_t(c / 32) * (32 * B / 8);
        const int e = c % 32;
        if constexpr (B == 4) unit[e % 16] |= uint8_t(q[c] << (e < 16 ? 0 : 4));
        else unit[e % 8] |= uint8_t(q[c] << (2 * (e / 8)));
      }
    }
  }

  void decode(int h, const uint8_t* blk, int j0, int j1, float* x) const override { decode_ref(h, blk, j0, j1, x); }
  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c) {
        const int g = c / group_;
        const uint8_t* unit = codes(blk, j) + size_t(c / 32) * (32 * B / 8);
        const int e = c % 32;
        const int q = B == 4 ? (e < 16 ? unit[e] & 15 : unit[e - 16] >> 4) : (unit[e % 8] >> (2 * (e / 8))) & 3;
        x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(load_h(mins(blk), size_t(g) * tokens_ + j)) +
                                       fp16_to_f32_ref(load_h(blk, size_t(g) * tokens_ + j)) * q;
      }
  }

  void axpy(int, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
            int out_stride) const override {
    const CodeRows v{codes(blk, j0), size_t(dim_) * B / 8, B, group_, reinterpret_cast<const uint16_t*>(blk) + j0,
                     reinterpret_cast<const uint16_t*>(mins(blk)) + j0, size_t(tokens_), 0};
    best_kv_kernels().code_accum(v, j1 - j0, dim_, w, n_q, w_stride, out, out_stride);
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
