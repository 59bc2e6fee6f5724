// q8_0: llama.cpp's 8-bit KV type, kept for comparison. Per token, groups of 32 channels share one
// fp16 scale d = max|x| / 127; codes are int8, x = d * q.
// Block layout ([T] tokens, [D] channels): scales [T][D/32] fp16, then codes [T][D] int8.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kv/block_codec.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

class Q8_0Codec : public BlockCodec {
 public:
  using BlockCodec::BlockCodec;
  size_t block_bytes() const override { return size_t(tokens_) * (dim_ / 32 * 2 + dim_); }
  std::vector<size_t> row_planes() const override { return {size_t(dim_) / 32 * 2, size_t(dim_)}; }

  void encode(int, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      for (int g = 0; g < dim_ / 32; ++g) {
        float amax = 0;
        for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(r[g * 32 + c]));
        const uint16_t dh = f32_to_fp16(amax / 127.f);
        const float d = fp16_to_f32(dh), inv = d > 0 ? 1.f / d : 0.f;
        std::memcpy(scales(blk) + (size_t(j) * (dim_ / 32) + g), &dh, 2);
        int8_t* q = codes(blk, j) + g * 32;
        for (int c = 0; c < 32; ++c) q[c] = int8_t(std::max(-127.f, std::min(127.f, std::nearbyint(r[g * 32 + c] * inv))));
      }
    }
  }

  void decode(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j) {
      const int8_t* q = codes(blk, j);
      float* o = x + size_t(j - j0) * dim_;
      for (int g = 0; g < dim_ / 32; ++g) {
        const __m256 d = _mm256_set1_ps(fp16_to_f32(scale(blk, j, g)));
        for (int c = 0; c < 32; c += 8) {
          const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + g * 32 + c)));
          _mm256_storeu_ps(o + g * 32 + c, _mm256_mul_ps(d, _mm256_cvtepi32_ps(v)));
        }
      }
    }
  }

  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c)
        x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(scale(blk, j, c / 32)) * float(codes(blk, j)[c]);
  }

 private:
  uint16_t* scales(uint8_t* blk) const { return reinterpret_cast<uint16_t*>(blk); }
  uint16_t scale(const uint8_t* blk, int j, int g) const {
    uint16_t v;
    std::memcpy(&v, blk + 2 * (size_t(j) * (dim_ / 32) + g), 2);
    return v;
  }
  size_t codes_offset() const { return size_t(tokens_) * (dim_ / 32) * 2; }
  int8_t* codes(uint8_t* blk, int j) const { return reinterpret_cast<int8_t*>(blk + codes_offset()) + size_t(j) * dim_; }
  const int8_t* codes(const uint8_t* blk, int j) const {
    return reinterpret_cast<const int8_t*>(blk + codes_offset()) + size_t(j) * dim_;
  }
};

}  // namespace

std::unique_ptr<BlockCodec> make_q8_0_codec(int dim, int tokens) { return std::make_unique<Q8_0Codec>(dim, tokens); }

}  // namespace leanlm
