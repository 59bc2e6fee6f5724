// q4_0: llama.cpp's 4-bit KV type, kept for comparison. Per token, groups of 32 channels share one
// fp16 scale d = m / -8, where m is the group's value of largest magnitude (sign kept), and
// x = d * (q - 8) with q in 0..15. In a group's 16 code bytes, channel c sits in the low nibble of
// byte c (c < 16) or the high nibble of byte c - 16.
// Block layout: scales [T][D/32] fp16, then codes [T][D/2].
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kv/block_codec.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

class Q4_0Codec : public BlockCodec {
 public:
  using BlockCodec::BlockCodec;
  size_t block_bytes() const override { return size_t(tokens_) * (dim_ / 32 * 2 + dim_ / 2); }
  std::vector<size_t> row_planes() const override { return {size_t(dim_) / 32 * 2, size_t(dim_) / 2}; }

  void encode(int, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      for (int g = 0; g < dim_ / 32; ++g) {
        float m = 0;
        for (int c = 0; c < 32; ++c)
          if (std::fabs(r[g * 32 + c]) > std::fabs(m)) m = r[g * 32 + c];
        const uint16_t dh = f32_to_fp16(m / -8.f);
        const float d = fp16_to_f32(dh), inv = d != 0 ? 1.f / d : 0.f;
        std::memcpy(blk + 2 * (size_t(j) * (dim_ / 32) + g), &dh, 2);
        uint8_t* q = codes(blk, j) + g * 16;
        auto code = [&](float v) { return uint8_t(std::min(15.f, std::max(0.f, std::nearbyint(v * inv) + 8.f))); };
        for (int c = 0; c < 16; ++c) q[c] = uint8_t(code(r[g * 32 + c]) | code(r[g * 32 + c + 16]) << 4);
      }
    }
  }

  void decode(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    const __m256i mask = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
    for (int j = j0; j < j1; ++j) {
      const uint8_t* q = codes(blk, j);
      float* o = x + size_t(j - j0) * dim_;
      for (int g = 0; g < dim_ / 32; ++g) {
        const __m256 d = _mm256_set1_ps(fp16_to_f32(scale(blk, j, g)));
        for (int c = 0; c < 16; c += 8) {
          const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + g * 16 + c)));
          const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(b, mask), eight);
          const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(b, 4), eight);
          _mm256_storeu_ps(o + g * 32 + c, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)));
          _mm256_storeu_ps(o + g * 32 + 16 + c, _mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)));
        }
      }
    }
  }

  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c) {
        const uint8_t b = codes(blk, j)[c / 32 * 16 + c % 16];
        const int q = (c % 32) < 16 ? (b & 15) : (b >> 4);
        x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(scale(blk, j, c / 32)) * float(q - 8);
      }
  }

 private:
  uint16_t scale(const uint8_t* blk, int j, int g) const {
    uint16_t v;
    std::memcpy(&v, blk + 2 * (size_t(j) * (dim_ / 32) + g), 2);
    return v;
  }
  size_t codes_offset() const { return size_t(tokens_) * (dim_ / 32) * 2; }
  uint8_t* codes(uint8_t* blk, int j) const { return blk + codes_offset() + size_t(j) * dim_ / 2; }
  const uint8_t* codes(const uint8_t* blk, int j) const { return blk + codes_offset() + size_t(j) * dim_ / 2; }
};

}  // namespace

std::unique_ptr<BlockCodec> make_q4_0_codec(int dim, int tokens) { return std::make_unique<Q4_0Codec>(dim, tokens); }

}  // namespace leanlm
