// Product-quantized keys scored through byte-shuffle lookups: the key side of NoMAD-Attention
// (Zhang et al., NeurIPS 2024), written from the paper and the product-quantization literature.
//
// A head's D channels are cut into M = D / d_sub sub-spaces of d_sub contiguous channels; each has
// 16 learned centroids (`leanlm calibrate`, per layer and KV head), and a key is stored as M 4-bit
// codes: d_sub = 1, 2, 4 gives 4, 2, 1 bits per channel. Values go in another codec (v=...).
//
// Block layout (kv_kernels.h, pq_scores): sub-blocks of 32 tokens, M * 16 bytes each; byte k of
// sub-space m holds token k's code in its low nibble and token k + 16's in its high nibble, so a
// token is appended by setting one nibble of M bytes, never re-packing.
//
// Scores: per call and query, the float table t[m][c] = q_m . centroid[m][c] is quantized to
// uint8 with a bias per sub-space (its minimum) and one scale for the whole query, chosen so that
// no entry exceeds 255 and no sum over the M sub-spaces exceeds 65535 (the kernels add in uint16):
//   q . k ~= scale * sum_m u8[m][code_m] + sum_m bias_m,
// each entry off by at most scale / 2, so a score is within M * scale / 2 of q . (decoded key).
// Tables are built for small query sets (decode); a prompt block's many queries score decoded
// centroids instead (the generic tile path), exactly.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "kv/block_codec.h"
#include "util/error.h"

namespace leanlm {

namespace {

constexpr int kCentroids = 16;
constexpr int kSubBlock = 32;      // tokens per sub-block of the layout
constexpr int kMaxLutQueries = 8;  // queries per call up to which uint8 tables pay off

class PqCodec : public BlockCodec {
 public:
  PqCodec(const Codebook& book, int n_kv_head, int dim, int tokens)
      : BlockCodec(dim, tokens), dsub_(book.channels), m_(dim / std::max(1, book.channels)) {
    if (book.bits != 4) fail("PQ codebooks have 16 centroids per sub-space (4 bits); recalibrate");
    if (dsub_ <= 0 || dim % dsub_ != 0 || m_ % 4 != 0)
      fail(strfmt("pq: head size %d does not split into a multiple of 4 sub-spaces of %d channels", dim, dsub_));
    if (tokens % kSubBlock != 0) fail(strfmt("pq: tokens per block (g=%d) must be a multiple of 32", tokens));
    if (m_ > 256 || dsub_ > 4) fail("pq: at most 256 sub-spaces of at most 4 channels");
    if (book.centroids.size() != size_t(n_kv_head) * m_ * kCentroids * dsub_)
      fail("PQ codebook has the wrong size for this model (recalibrate)");
    cen_.assign(book.centroids.begin(), book.centroids.end());
    enc_ = cen_;
    if (!book.metric.empty()) {  // query-aware books: keys are coded in the metric they were learned in
      if (book.metric.size() != size_t(n_kv_head) * m_ * dsub_ * dsub_)
        fail("PQ codebook metric has the wrong size for this model (recalibrate)");
      metric_ = book.metric;
      for (int h = 0; h < n_kv_head; ++h)
        for (int m = 0; m < m_; ++m)
          for (int c = 0; c < kCentroids; ++c)
            apply_metric(h, m, centroid(h, m, c), enc_.data() + ((size_t(h) * m_ + m) * kCentroids + c) * dsub_);
    }
  }
  size_t block_bytes() const override { return size_t(tokens_ / kSubBlock) * m_ * 16; }
  // Two tokens share each byte: rows are not planes of whole bytes, they move nibble by nibble.
  std::vector<RowPlane> row_planes() const override { return {}; }
  bool rows_copyable() const override { return true; }
  void copy_row(const uint8_t* src, int sj, uint8_t* dst, int dj) const override {
    for (int m = 0; m < m_; ++m) set_code(dst, dj, m, code(src, sj, m));
  }

  void encode(int h, const float* x, int x_stride, int j0, int n, uint8_t* blk) const override {
    for (int j = j0; j < n; ++j) {
      const float* r = x + size_t(j - j0) * x_stride;
      for (int m = 0; m < m_; ++m) set_code(blk, j, m, nearest(h, m, r + m * dsub_));
    }
  }

  void decode(int h, const uint8_t* blk, int j0, int j1, float* x) const override {
    for (int j = j0; j < j1; ++j)
      for (int m = 0; m < m_; ++m) {
        const float* c = centroid(h, m, code(blk, j, m));
        std::copy(c, c + dsub_, x + size_t(j - j0) * dim_ + m * dsub_);
      }
  }

  void prepare(int h, const float* q, int n_q, int q_stride, QueryPrep& p) const override {
    BlockCodec::prepare(h, q, n_q, q_stride, p);
    p.lut8.clear(), p.lut_scale.clear(), p.lut_bias.clear();
    if (n_q > kMaxLutQueries) return;
    p.lut8.resize(size_t(n_q) * m_ * kCentroids);
    p.lut_scale.resize(n_q);
    p.lut_bias.resize(n_q);
    for (int i = 0; i < n_q; ++i) quantized_table(h, q + size_t(i) * q_stride, p.lut8.data() + size_t(i) * m_ * kCentroids,
                                                  p.lut_scale[i], p.lut_bias[i]);
  }

  void dot(int h, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const override {
    if (p.lut8.empty()) return BlockCodec::dot(h, blk, j0, j1, p, out, out_stride);
    best_kv_kernels().pq_scores(blk, j0, j1, m_, p.lut8.data(), p.n_q, p.lut_scale.data(), p.lut_bias.data(), out,
                                out_stride);
  }

 private:
  const float* centroid(int h, int m, int c) const { return cen_.data() + ((size_t(h) * m_ + m) * kCentroids + c) * dsub_; }
  int code(const uint8_t* blk, int j, int m) const {
    const uint8_t byte = blk[(size_t(j / kSubBlock) * m_ + m) * 16 + j % 16];
    return j % kSubBlock < 16 ? byte & 15 : byte >> 4;
  }
  void set_code(uint8_t* blk, int j, int m, int c) const {
    uint8_t& byte = blk[(size_t(j / kSubBlock) * m_ + m) * 16 + j % 16];
    byte = j % kSubBlock < 16 ? uint8_t((byte & 0xf0) | c) : uint8_t((byte & 0x0f) | c << 4);
  }
  // y = U x with sub-space m's metric (upper triangular [d_sub][d_sub]); y = x without one.
  void apply_metric(int h, int m, const float* x, float* y) const {
    const float* U = metric_.empty() ? nullptr : metric_.data() + (size_t(h) * m_ + m) * dsub_ * dsub_;
    for (int r = 0; r < dsub_; ++r) {
      float v = U ? 0.f : x[r];
      if (U)
        for (int e = r; e < dsub_; ++e) v += U[r * dsub_ + e] * x[e];
      y[r] = v;
    }
  }
  // The centroid of sub-space m nearest to x in the coding metric.
  int nearest(int h, int m, const float* x) const {
    float xm[4];
    apply_metric(h, m, x, xm);
    int best = 0;
    float bd = FLT_MAX;
    for (int c = 0; c < kCentroids; ++c) {
      const float* cen = enc_.data() + ((size_t(h) * m_ + m) * kCentroids + c) * dsub_;
      float d = 0;
      for (int e = 0; e < dsub_; ++e) d += (xm[e] - cen[e]) * (xm[e] - cen[e]);
      if (d < bd) bd = d, best = c;
    }
    return best;
  }
  // One query's uint8 table [M][16], its scale and its bias (the sum of the per-sub-space minima).
  void quantized_table(int h, const float* q, uint8_t* lut, float& scale, float& bias) const {
    float t[256 * kCentroids];  // M <= 256 (head size <= 256)
    double widest = 0, ranges = 0, b = 0;
    for (int m = 0; m < m_; ++m) {
      float lo = FLT_MAX, hi = -FLT_MAX;
      for (int c = 0; c < kCentroids; ++c) {
        const float* cen = centroid(h, m, c);
        float s = 0;
        for (int e = 0; e < dsub_; ++e) s += q[m * dsub_ + e] * cen[e];
        t[m * kCentroids + c] = s;
        lo = std::min(lo, s), hi = std::max(hi, s);
      }
      for (int c = 0; c < kCentroids; ++c) t[m * kCentroids + c] -= lo;
      widest = std::max(widest, double(hi - lo));
      ranges += hi - lo;
      b += lo;
    }
    // Each entry rounds up by at most 1/2, so the sums are bounded with M/2 of room: sum <= 65535.
    double step = std::max(widest / 255.0, ranges / (65535.0 - m_));
    if (!(step > 0) || !std::isfinite(step)) step = 1.0;
    const float inv = float(1.0 / step);
    for (int i = 0; i < m_ * kCentroids; ++i)
      lut[i] = uint8_t(std::min(255.f, std::nearbyint(t[i] * inv)));
    scale = float(step);
    bias = float(b);
  }

  int dsub_, m_;
  std::vector<float> cen_;     // [n_kv_head][M][16][d_sub]
  std::vector<float> enc_;     // the same mapped by the metric (U c): where keys are coded
  std::vector<float> metric_;  // [n_kv_head][M][d_sub][d_sub] U of query-aware books, or empty
};

}  // namespace

std::unique_ptr<BlockCodec> make_pq_codec(const Codebook& book, int n_kv_head, int dim, int tokens) {
  return std::make_unique<PqCodec>(book, n_kv_head, dim, tokens);
}

}  // namespace leanlm
