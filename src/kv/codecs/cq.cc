// Coupled Quantization (Zhang et al., NeurIPS 2024): a head's channels are cut into groups of c
// contiguous channels; each group has a learned codebook of 2^b centroids in R^c, and a token's
// c-vector is stored as the b-bit index of its nearest centroid. Bits per channel: b / c.
// Codebooks come from `leanlm calibrate` (k-means on real activations), per layer, side and group.
//
// Block layout: per token, D/c codes of b bits packed little-endian into ceil(D/c * b / 8) bytes.
//
// Scores go through lookup tables: for a query q, T[g][k] = q_g . centroid[g][k] is built once per
// call (prepare), and q . x_j = sum_g T[g][code_jg] costs D/c lookups per token instead of D
// multiply-adds. Tables are built only for small query sets (decode); a prompt block's many queries
// use the generic decode-into-a-tile path instead.
#include <algorithm>
#include <cfloat>
#include <cstring>

#include "kv/block_codec.h"
#include "util/error.h"

namespace leanlm {

namespace {

// Queries per call up to which lookup tables pay off.
constexpr int kMaxLutQueries = 8;

class CqCodec : public BlockCodec {
 public:
  // groups (ThinK): per KV head, the codebook group of each stored group (null: all, in order).
  CqCodec(const Codebook& book, int n_kv_head, int dim, int tokens, const std::vector<std::vector<int>>* groups)
      : BlockCodec(dim, tokens), book_(book), c_(book.channels), k_(1 << book.bits), ng_(dim / book.channels),
        row_bytes_((size_t(ng_) * book.bits + 7) / 8) {
    if (dim % c_ != 0) fail(strfmt("CQ: head size %d is not a multiple of %d channels", dim, c_));
    book_ng_ = groups ? int(book.centroids.size() / (size_t(n_kv_head) * k_ * c_)) : ng_;
    if (book.centroids.size() != size_t(n_kv_head) * book_ng_ * k_ * c_)
      fail("CQ codebook has the wrong size for this model (recalibrate)");
    gmap_.resize(size_t(n_kv_head) * ng_);
    for (int h = 0; h < n_kv_head; ++h)
      for (int g = 0; g < ng_; ++g) {
        const int src = groups ? (*groups)[h][g] : g;
        if (src < 0 || src >= book_ng_) fail("internal error: CQ group map out of range");
        gmap_[size_t(h) * ng_ + g] = src;
      }
  }
  size_t block_bytes() const override { return size_t(tokens_) * row_bytes_; }
  std::vector<RowPlane> row_planes() const override { return {{row_bytes_, 1}}; }

  void encode(int h, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      uint8_t* row = blk + size_t(j) * row_bytes_;
      std::memset(row, 0, row_bytes_);
      for (int g = 0; g < ng_; ++g) put_code(row, g, nearest(h, g, r + g * c_));
    }
  }

  void decode(int h, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j) {
      const uint8_t* row = blk + size_t(j) * row_bytes_;
      for (int g = 0; g < ng_; ++g)
        std::memcpy(x + size_t(j - j0) * dim_ + g * c_, centroid(h, g, get_code(row, g)), size_t(c_) * 4);
    }
  }

  void prepare(int h, const float* q, int n_q, int q_stride, QueryPrep& p) const override {
    BlockCodec::prepare(h, q, n_q, q_stride, p);
    p.table.clear();
    if (n_q > kMaxLutQueries) return;
    p.table.resize(size_t(n_q) * ng_ * k_);
    for (int i = 0; i < n_q; ++i)
      for (int g = 0; g < ng_; ++g) {
        const float* qg = q + size_t(i) * q_stride + g * c_;
        float* t = p.table.data() + (size_t(i) * ng_ + g) * k_;
        for (int k = 0; k < k_; ++k) {
          const float* cen = centroid(h, g, k);
          float s = 0;
          for (int e = 0; e < c_; ++e) s += qg[e] * cen[e];
          t[k] = s;
        }
      }
  }

  void dot(int h, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const override {
    if (p.table.empty()) return BlockCodec::dot(h, blk, j0, j1, p, out, out_stride);
    for (int j = j0; j < j1; ++j) {
      const uint8_t* row = blk + size_t(j) * row_bytes_;
      int codes[256];
      for (int g = 0; g < ng_; ++g) codes[g] = get_code(row, g);
      for (int i = 0; i < p.n_q; ++i) {
        const float* t = p.table.data() + size_t(i) * ng_ * k_;
        float s = 0;
        for (int g = 0; g < ng_; ++g) s += t[size_t(g) * k_ + codes[g]];
        out[size_t(i) * out_stride + (j - j0)] = s;
      }
    }
  }

 private:
  const float* centroid(int h, int g, int k) const {
    return book_.centroids.data() + ((size_t(h) * book_ng_ + gmap_[size_t(h) * ng_ + g]) * k_ + k) * c_;
  }
  int nearest(int h, int g, const float* x) const {
    int best = 0;
    float bd = FLT_MAX;
    for (int k = 0; k < k_; ++k) {
      const float* cen = centroid(h, g, k);
      float d = 0;
      for (int e = 0; e < c_; ++e) d += (x[e] - cen[e]) * (x[e] - cen[e]);
      if (d < bd) bd = d, best = k;
    }
    return best;
  }
  // Code g occupies bits [g * b, (g + 1) * b) of the row, little-endian.
  void put_code(uint8_t* row, int g, int code) const {
    const size_t bit = size_t(g) * book_.bits;
    for (int b = 0; b < book_.bits; ++b)
      if (code >> b & 1) row[(bit + b) / 8] |= uint8_t(1 << ((bit + b) % 8));
  }
  int get_code(const uint8_t* row, int g) const {
    if (book_.bits == 8) return row[g];
    const size_t bit = size_t(g) * book_.bits;
    uint32_t w = 0;
    std::memcpy(&w, row + bit / 8, std::min<size_t>(4, row_bytes_ - bit / 8));
    return int((w >> (bit % 8)) & uint32_t(k_ - 1));
  }

  const Codebook& book_;
  int c_, k_, ng_, book_ng_;
  size_t row_bytes_;
  std::vector<int> gmap_;  // [n_kv_head][ng_]: codebook group of each stored group
};

}  // namespace

std::unique_ptr<BlockCodec> make_cq_codec(const Codebook& book, int n_kv_head, int dim, int tokens,
                                          const std::vector<std::vector<int>>* groups) {
  return std::make_unique<CqCodec>(book, n_kv_head, dim, tokens, groups);
}

}  // namespace leanlm
