// q8_0 and q4_0: llama.cpp's 8-bit and 4-bit KV types, for comparison. Per token, groups of 32
// channels share one fp16 scale d and x = d * (q - zero):
//   q8_0: d = max|x| / 127, codes int8 in -127..127, zero 0
//   q4_0: d = m / -8 with m the group's value of largest magnitude (sign kept), codes 0..15, zero 8
//
// Both sides keep scales group-major, [D/32][T] fp16. Keys are laid out for integer scores
// (kv_kernels.h, lane keys): codes in lanes [D*b/32][T][4]; the queries are quantized to int8 once
// per call and scored with byte dot products. Values stay token-major for accumulation on their
// codes (code rows): codes [T][D*b/8] (q4_0: element i of a 32-group in the low nibble of byte i,
// 16 + i in the high nibble).
#include <cmath>
#include <cstring>

#include "kv/block_codec.h"
#include "kv/kv_kernels.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

template <int B>
class LegacyCodec : public BlockCodec {
 public:
  LegacyCodec(KvSide side, int dim, int tokens) : BlockCodec(dim, tokens), key_(side == KvSide::Key) {}
  static constexpr int kZero = B == 4 ? 8 : 0;

  size_t block_bytes() const override { return size_t(tokens_) * (dim_ / 32 * 2 + dim_ * B / 8); }
  std::vector<RowPlane> row_planes() const override {
    if (key_) return {{2, dim_ / 32}, {4, dim_ * B / 32}};
    return {{2, dim_ / 32}, {size_t(dim_) * B / 8, 1}};
  }

  void encode(int, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    uint8_t q[256];
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      for (int g = 0; g < dim_ / 32; ++g) {
        const uint16_t dh = quantize_group(r + g * 32, q + g * 32);
        std::memcpy(scale_ptr(blk, j, g), &dh, 2);
      }
      if (key_) {
        pack_lane_key(q, dim_, B, tokens_, j, lanes(blk));
      } else {
        uint8_t* row = codes(blk, j);
        if constexpr (B == 8) {
          std::memcpy(row, q, dim_);
        } else {
          for (int g = 0; g < dim_ / 32; ++g)
            for (int c = 0; c < 16; ++c) row[g * 16 + c] = uint8_t(q[g * 32 + c] | q[g * 32 + 16 + c] << 4);
        }
      }
    }
  }

  void decode(int h, const uint8_t* blk, int j0, int j1, float* x) const override { decode_ref(h, blk, j0, j1, x); }
  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c) {
        uint16_t dh;
        std::memcpy(&dh, scale_ptr(blk, j, c / 32), 2);
        x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(dh) * float(code(blk, j, c) - kZero);
      }
  }

  void prepare(int h, const float* q, int n_q, int q_stride, QueryPrep& p) const override {
    BlockCodec::prepare(h, q, n_q, q_stride, p);
    if (key_) quantize_queries(q, n_q, q_stride, dim_, nullptr, p.quant);
  }
  void dot(int h, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const override {
    if (!key_) return BlockCodec::dot(h, blk, j0, j1, p, out, out_stride);
    const LaneKeys k{lanes(blk), tokens_, B, reinterpret_cast<const uint16_t*>(blk), kZero};
    best_kv_kernels().lane_scores(k, j0, j1, dim_, p.quant, out, out_stride);
  }
  void axpy(int h, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
            int out_stride) const override {
    if (key_) return BlockCodec::axpy(h, blk, j0, j1, w, n_q, w_stride, out, out_stride);
    const CodeRows v{codes(blk, j0), size_t(dim_) * B / 8, B, 32, reinterpret_cast<const uint16_t*>(blk) + j0, nullptr,
                     size_t(tokens_), kZero};
    best_kv_kernels().code_accum(v, j1 - j0, dim_, w, n_q, w_stride, out, out_stride);
  }

 private:
  // 32 values -> codes (unsigned for q4_0, int8 bytes for q8_0) and their fp16 scale.
  static uint16_t quantize_group(const float* r, uint8_t* q) {
    if constexpr (B == 8) {
      float amax = 0;
      for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(r[c]));
      const uint16_t dh = f32_to_fp16(amax / 127.f);
      const float d = fp16_to_f32(dh), inv = d > 0 ? 1.f / d : 0.f;
      for (int c = 0; c < 32; ++c) q[c] = uint8_t(int8_t(std::max(-127.f, std::min(127.f, std::nearbyint(r[c] * inv)))));
      return dh;
    } else {
      float m = 0;
      for (int c = 0; c < 32; ++c)
        if (std::fabs(r[c]) > std::fabs(m)) m = r[c];
      const uint16_t dh = f32_to_fp16(m / -8.f);
      const float d = fp16_to_f32(dh), inv = d != 0 ? 1.f / d : 0.f;
      for (int c = 0; c < 32; ++c) q[c] = uint8_t(std::min(15.f, std::max(0.f, std::nearbyint(r[c] * inv) + 8.f)));
      return dh;
    }
  }
  // Scale of token j, group g: [g][T], so that one vector load holds consecutive tokens' scales.
  size_t scale_index(int j, int g) const { return size_t(g) * tokens_ + j; }
  uint8_t* scale_ptr(uint8_t* blk, int j, int g) const { return blk + 2 * scale_index(j, g); }
  const uint8_t* scale_ptr(const uint8_t* blk, int j, int g) const { return blk + 2 * scale_index(j, g); }
  size_t codes_offset() const { return size_t(tokens_) * (dim_ / 32) * 2; }
  uint8_t* lanes(uint8_t* blk) const { return blk + codes_offset(); }
  const uint8_t* lanes(const uint8_t* blk) const { return blk + codes_offset(); }
  uint8_t* codes(uint8_t* blk, int j) const { return blk + codes_offset() + size_t(j) * dim_ * B / 8; }
  const uint8_t* codes(const uint8_t* blk, int j) const { return blk + codes_offset() + size_t(j) * dim_ * B / 8; }
  int code(const uint8_t* blk, int j, int c) const {
    if (key_) return lane_key_code(lanes(blk), dim_, B, tokens_, j, c);
    const uint8_t* row = codes(blk, j);
    if constexpr (B == 8) return int(int8_t(row[c]));
    const uint8_t b = row[c / 32 * 16 + c % 16];
    return (c % 32) < 16 ? (b & 15) : (b >> 4);
  }

  bool key_;
};

}  // namespace

std::unique_ptr<BlockCodec> make_q8_0_codec(KvSide side, int dim, int tokens) {
  return std::make_unique<LegacyCodec<8>>(side, dim, tokens);
}
std::unique_ptr<BlockCodec> make_q4_0_codec(KvSide side, int dim, int tokens) {
  return std::make_unique<LegacyCodec<4>>(side, dim, tokens);
}

}  // namespace leanlm
