// fp16 rows in blocks: the uncompressed baseline in paged form, used when an eviction policy runs
// on an f16 cache (the plain f16 cache without eviction is DenseKvStore). Block: [T][D] fp16.
#include <cstring>

#include "kv/block_codec.h"
#include "kv/kv_kernels.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

class F16Codec : public BlockCodec {
 public:
  using BlockCodec::BlockCodec;
  size_t block_bytes() const override { return size_t(tokens_) * dim_ * 2; }
  std::vector<RowPlane> row_planes() const override { return {{size_t(dim_) * 2, 1}}; }

  void encode(int, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    for (int j = j0; j < n; ++j)
      for (int c = 0; c < dim_; ++c) row(blk, j)[c] = f32_to_fp16(x[size_t(j - j0) * x_stride + c]);
  }
  void decode(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c) x[size_t(j - j0) * dim_ + c] = fp16_to_f32(row(blk, j)[c]);
  }
  void decode_ref(int, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int c = 0; c < dim_; ++c) x[size_t(j - j0) * dim_ + c] = fp16_to_f32_ref(row(blk, j)[c]);
  }
  void dot(int, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const override {
    best_kv_kernels().rows_scores_f16(row(blk, j0), dim_, j1 - j0, dim_, p.q, p.n_q, p.q_stride, out, out_stride);
  }
  void axpy(int, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
            int out_stride) const override {
    best_kv_kernels().rows_accum_f16(row(blk, j0), dim_, j1 - j0, dim_, w, n_q, w_stride, out, out_stride);
  }

 private:
  uint16_t* row(uint8_t* blk, int j) const { return reinterpret_cast<uint16_t*>(blk) + size_t(j) * dim_; }
  const uint16_t* row(const uint8_t* blk, int j) const { return reinterpret_cast<const uint16_t*>(blk) + size_t(j) * dim_; }
};

}  // namespace

std::unique_ptr<BlockCodec> make_f16_codec(int dim, int tokens) { return std::make_unique<F16Codec>(dim, tokens); }

}  // namespace leanlm
