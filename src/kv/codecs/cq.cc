// Coupled Quantization (Zhang et al., NeurIPS 2024): a head's channels are cut into groups of c
// contiguous channels; each group has a learned codebook of 2^b centroids in R^c, and a token's
// c-vector is stored as the b-bit index of its nearest centroid. Bits per channel: b / c.
// Codebooks come from `leanlm calibrate` (k-means on real activations), per layer, side and group.
//
// Block layout: with 8-bit codes (every configuration but cq-8c10b) keys are group-major, the codes
// of group g for the block's T tokens at g * T (one vector load holds consecutive tokens' codes of a
// group), and values token-major, the D/c codes of token j at j * D/c. Wider codes are packed
// little-endian per token, ceil(D/c * b / 8) bytes, on both sides.
//
// Scores go through lookup tables: for a query q, T[g][k] = q_g . centroid[g][k] is built once per
// call (prepare), and q . x_j = sum_g T[g][code_jg] costs D/c lookups per token instead of D
// multiply-adds (kv_kernels.h: lut_scores, gathers of 16 or 8 tokens at once). Tables are built
// only for small query sets (decode); a prompt block's many queries use the generic
// decode-into-a-tile path instead. Values are accumulated by gathering each token's centroids
// (kv_kernels.h: centroid_accum).
#include <algorithm>
#include <cfloat>
#include <cstring>

#include "kv/block_codec.h"
#include "util/error.h"

namespace leanlm {

namespace {

// Queries per call up to which lookup tables (keys) and gathers per row (values) pay off.
constexpr int kMaxLutQueries = 8;

class CqCodec : public BlockCodec {
 public:
  // groups (ThinK): per KV head, the codebook group of each stored group (null: all, in order).
  CqCodec(const Codebook& book, KvSide side, int n_kv_head, int dim, int tokens,
          const std::vector<std::vector<int>>* groups)
      : BlockCodec(dim, tokens), key_(side == KvSide::Key), bits_(book.bits), c_(book.channels), k_(1 << book.bits),
        ng_(dim / book.channels), row_bytes_((size_t(ng_) * book.bits + 7) / 8) {
    if (dim % c_ != 0) fail(strfmt("CQ: head size %d is not a multiple of %d channels", dim, c_));
    const int book_ng = groups ? int(book.centroids.size() / (size_t(n_kv_head) * k_ * c_)) : ng_;
    if (book.centroids.size() != size_t(n_kv_head) * book_ng * k_ * c_)
      fail("CQ codebook has the wrong size for this model (recalibrate)");
    const bool metric = !book.metric.empty();
    if (metric && book.metric.size() != size_t(n_kv_head) * book_ng * c_ * c_)
      fail("CQ codebook metric has the wrong size for this model (recalibrate)");
    // The stored groups' codebooks, in stored order: [n_kv_head][ng][K][c]; for coding keys, the
    // same in the books' metric (U c), transposed for building lookup tables, [n_kv_head][ng][c][K].
    const size_t per_group = size_t(k_) * c_;
    cen_.resize(size_t(n_kv_head) * ng_ * per_group);
    enc_t_.resize(cen_.size());
    norm_.resize(size_t(n_kv_head) * ng_ * k_);
    if (metric) metric_.resize(size_t(n_kv_head) * ng_ * c_ * c_);
    std::vector<float> u(c_);
    for (int h = 0; h < n_kv_head; ++h)
      for (int g = 0; g < ng_; ++g) {
        const int src = groups ? (*groups)[h][g] : g;
        if (src < 0 || src >= book_ng) fail("internal error: CQ group map out of range");
        const float* from = book.centroids.data() + (size_t(h) * book_ng + src) * per_group;
        const float* U = metric ? book.metric.data() + (size_t(h) * book_ng + src) * c_ * c_ : nullptr;
        if (metric) std::copy(U, U + c_ * c_, metric_.begin() + (size_t(h) * ng_ + g) * c_ * c_);
        float* to = cen_.data() + (size_t(h) * ng_ + g) * per_group;
        float* to_t = enc_t_.data() + (size_t(h) * ng_ + g) * per_group;
        std::copy(from, from + per_group, to);
        for (int k = 0; k < k_; ++k) {
          apply_metric(U, from + size_t(k) * c_, u.data());
          float nk = 0.f;
          for (int e = 0; e < c_; ++e) {
            to_t[size_t(e) * k_ + k] = u[e];
            nk += u[e] * u[e];
          }
          norm_[(size_t(h) * ng_ + g) * k_ + k] = nk;
        }
      }
    // Query tables need the centroids themselves, transposed.
    if (!metric) {
      cen_t_ = enc_t_;
    } else {
      cen_t_.resize(cen_.size());
      for (size_t hg = 0; hg < size_t(n_kv_head) * ng_; ++hg)
        for (int k = 0; k < k_; ++k)
          for (int e = 0; e < c_; ++e) cen_t_[hg * per_group + size_t(e) * k_ + k] = cen_[hg * per_group + size_t(k) * c_ + e];
    }
  }
  size_t block_bytes() const override { return size_t(tokens_) * row_bytes_; }
  std::vector<RowPlane> row_planes() const override {
    if (bytes_codes() && key_) return {{1, ng_}};
    return {{row_bytes_, 1}};
  }

  void encode(int h, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    thread_local AlignedVec<float> dots, xm;
    xm.resize(dim_);
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      if (!metric_.empty()) {  // query-aware books: code U x against U c
        for (int g = 0; g < ng_; ++g)
          apply_metric(metric_.data() + (size_t(h) * ng_ + g) * c_ * c_, r + g * c_, xm.data() + g * c_);
        r = xm.data();
      }
      if (!bytes_codes()) {
        std::memset(blk + size_t(j) * row_bytes_, 0, row_bytes_);
        for (int g = 0; g < ng_; ++g) put_code(blk, j, g, nearest(h, g, r + g * c_));
        continue;
      }
      // |x - c|^2 = |x|^2 - 2 x.c + |c|^2: the nearest centroid minimises |c|^2 - 2 x.c, and x.c for
      // every centroid of every group is one lookup-table build with x as the query.
      dots.resize(size_t(ng_) * k_);
      best_kv_kernels().lut_build(enc_t_.data() + size_t(h) * ng_ * k_ * c_, ng_, c_, r, 1, dim_, dots.data());
      for (int g = 0; g < ng_; ++g) {
        float* d = dots.data() + size_t(g) * k_;  // -> 2 x.c - |c|^2, largest for the nearest
        const float* nrm = norm_.data() + (size_t(h) * ng_ + g) * k_;
        for (int k = 0; k < k_; ++k) d[k] = 2.f * d[k] - nrm[k];
        const float m = best_kv_kernels().max_of(d, k_);
        int best = 0;
        while (best < k_ - 1 && d[best] != m) ++best;
        put_code(blk, j, g, best);
      }
    }
  }

  void decode(int h, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int g = 0; g < ng_; ++g) {
        const float* cen = centroid(h, g, get_code(blk, j, g));
        float* to = x + size_t(j - j0) * dim_ + g * c_;
        for (int e = 0; e < c_; ++e) to[e] = cen[e];
      }
  }

  void prepare(int h, const float* q, int n_q, int q_stride, QueryPrep& p) const override {
    BlockCodec::prepare(h, q, n_q, q_stride, p);
    p.table.clear();
    if (!key_ || n_q > kMaxLutQueries) return;
    p.table.resize(size_t(n_q) * ng_ * k_);
    if (bytes_codes()) {
      best_kv_kernels().lut_build(cen_t_.data() + size_t(h) * ng_ * k_ * c_, ng_, c_, q, n_q, q_stride,
                                  p.table.data());
      return;
    }
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
    if (bytes_codes()) return best_kv_kernels().lut_scores(blk, tokens_, j0, j1, ng_, p.table.data(), p.n_q, out, out_stride);
    for (int j = j0; j < j1; ++j) {
      int codes[256];
      for (int g = 0; g < ng_; ++g) codes[g] = get_code(blk, j, g);
      for (int i = 0; i < p.n_q; ++i) {
        const float* t = p.table.data() + size_t(i) * ng_ * k_;
        float s = 0;
        for (int g = 0; g < ng_; ++g) s += t[size_t(g) * k_ + codes[g]];
        out[size_t(i) * out_stride + (j - j0)] = s;
      }
    }
  }

  void axpy(int h, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
            int out_stride) const override {
    // Many query rows (a prompt block) decode each token once into a tile instead of gathering it per row.
    if (key_ || !bytes_codes() || n_q > kMaxLutQueries) return BlockCodec::axpy(h, blk, j0, j1, w, n_q, w_stride, out, out_stride);
    best_kv_kernels().centroid_accum(blk + size_t(j0) * row_bytes_, row_bytes_, j1 - j0, dim_, c_,
                                     cen_.data() + size_t(h) * ng_ * k_ * c_, w, n_q, w_stride, out, out_stride);
  }

 private:
  // One byte per code: the layouts the SIMD kernels read.
  bool bytes_codes() const { return bits_ == 8; }
  const float* centroid(int h, int g, int k) const { return cen_.data() + ((size_t(h) * ng_ + g) * k_ + k) * c_; }
  // The centroid of group g nearest to x, both in the coding metric (x already mapped).
  int nearest(int h, int g, const float* x) const {
    int best = 0;
    float bd = FLT_MAX;
    const float* t = enc_t_.data() + (size_t(h) * ng_ + g) * k_ * c_;  // [c][K]
    for (int k = 0; k < k_; ++k) {
      float d = 0;
      for (int e = 0; e < c_; ++e) d += (x[e] - t[size_t(e) * k_ + k]) * (x[e] - t[size_t(e) * k_ + k]);
      if (d < bd) bd = d, best = k;
    }
    return best;
  }
  // y = U x for an upper triangular [c][c] U; y = x without one.
  void apply_metric(const float* U, const float* x, float* y) const {
    for (int r = 0; r < c_; ++r) {
      float v = U ? 0.f : x[r];
      if (U)
        for (int e = r; e < c_; ++e) v += U[r * c_ + e] * x[e];
      y[r] = v;
    }
  }
  // Byte codes: keys at g * T + j, values at j * ng + g. Wider codes: code g of token j occupies
  // bits [g * b, (g + 1) * b) of the token's row, little-endian.
  void put_code(uint8_t* blk, int j, int g, int code) const {
    if (bytes_codes()) {
      blk[key_ ? size_t(g) * tokens_ + j : size_t(j) * ng_ + g] = uint8_t(code);
      return;
    }
    uint8_t* row = blk + size_t(j) * row_bytes_;
    const size_t bit = size_t(g) * bits_;
    for (int b = 0; b < bits_; ++b)
      if (code >> b & 1) row[(bit + b) / 8] |= uint8_t(1 << ((bit + b) % 8));
  }
  int get_code(const uint8_t* blk, int j, int g) const {
    if (bytes_codes()) return blk[key_ ? size_t(g) * tokens_ + j : size_t(j) * ng_ + g];
    const uint8_t* row = blk + size_t(j) * row_bytes_;
    const size_t bit = size_t(g) * bits_;
    uint32_t w = 0;
    std::memcpy(&w, row + bit / 8, std::min<size_t>(4, row_bytes_ - bit / 8));
    return int((w >> (bit % 8)) & uint32_t(k_ - 1));
  }

  bool key_;
  int bits_, c_, k_, ng_;
  size_t row_bytes_;
  AlignedVec<float> cen_, cen_t_;  // [n_kv_head][ng][K][c], [n_kv_head][ng][c][K]
  AlignedVec<float> enc_t_;        // [n_kv_head][ng][c][K]: U c (the centroids where keys are coded)
  std::vector<float> norm_;        // [n_kv_head][ng][K]: |U c|^2
  std::vector<float> metric_;      // [n_kv_head][ng][c][c] U of query-aware books, or empty
};

}  // namespace

std::unique_ptr<BlockCodec> make_cq_codec(const Codebook& book, KvSide side, int n_kv_head, int dim, int tokens,
                                          const std::vector<std::vector<int>>* groups) {
  return std::make_unique<CqCodec>(book, side, n_kv_head, dim, tokens, groups);
}

}  // namespace leanlm
