#include "kv/block_codec.h"

#include <algorithm>
#include <cstring>

#include "kv/kv_kernels.h"
#include "kv/kv_config.h"
#include "util/error.h"

namespace leanlm {

// The codecs (one file each under codecs/).
std::unique_ptr<BlockCodec> make_f16_codec(int dim, int tokens);
std::unique_ptr<BlockCodec> make_q8_0_codec(KvSide side, int dim, int tokens);
std::unique_ptr<BlockCodec> make_q4_0_codec(KvSide side, int dim, int tokens);
std::unique_ptr<BlockCodec> make_kivi_codec(KvSide side, int bits, int dim, int tokens);
std::unique_ptr<BlockCodec> make_cq_codec(const Codebook& book, KvSide side, int n_kv_head, int dim, int tokens,
                                          const std::vector<std::vector<int>>* groups);
std::unique_ptr<BlockCodec> make_pq_codec(const Codebook& book, int n_kv_head, int dim, int tokens);

namespace {

// Rows are decoded this many at a time into a per-thread tile (32 x 256 floats = 32 KiB).
constexpr int kTileRows = 32;

float* tile(size_t n) {
  thread_local AlignedVec<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace

void BlockCodec::dot(int h, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const {
  float* x = tile(size_t(kTileRows) * dim_);
  for (int a = j0; a < j1; a += kTileRows) {
    const int b = std::min(j1, a + kTileRows);
    decode(h, blk, a, b, x);
    best_kv_kernels().rows_scores_f32(x, dim_, b - a, dim_, p.q, p.n_q, p.q_stride, out + (a - j0), out_stride);
  }
}

void BlockCodec::axpy(int h, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
                      int out_stride) const {
  float* x = tile(size_t(kTileRows) * dim_);
  for (int a = j0; a < j1; a += kTileRows) {
    const int b = std::min(j1, a + kTileRows);
    decode(h, blk, a, b, x);
    best_kv_kernels().rows_accum_f32(x, dim_, b - a, dim_, w + (a - j0), n_q, w_stride, out, out_stride);
  }
}

void BlockCodec::copy_row(const uint8_t* src, int sj, uint8_t* dst, int dj) const {
  size_t plane = 0;
  for (const RowPlane& p : row_planes()) {
    for (int u = 0; u < p.units; ++u)
      std::memmove(dst + plane + (size_t(u) * tokens_ + dj) * p.unit, src + plane + (size_t(u) * tokens_ + sj) * p.unit,
                   p.unit);
    plane += size_t(tokens_) * p.units * p.unit;
  }
}

void BlockCodec::dot_ref(int h, const uint8_t* blk, int j0, int j1, const float* q, int n_q, int q_stride, float* out,
                         int out_stride) const {
  std::vector<float> x(size_t(j1 - j0) * dim_);
  decode_ref(h, blk, j0, j1, x.data());
  for (int i = 0; i < n_q; ++i)
    for (int j = j0; j < j1; ++j) {
      double s = 0;
      for (int c = 0; c < dim_; ++c) s += double(q[size_t(i) * q_stride + c]) * x[size_t(j - j0) * dim_ + c];
      out[size_t(i) * out_stride + (j - j0)] = float(s);
    }
}

void BlockCodec::axpy_ref(int h, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
                          int out_stride) const {
  std::vector<float> x(size_t(j1 - j0) * dim_);
  decode_ref(h, blk, j0, j1, x.data());
  for (int i = 0; i < n_q; ++i)
    for (int c = 0; c < dim_; ++c) {
      double s = out[size_t(i) * out_stride + c];
      for (int j = j0; j < j1; ++j) s += double(w[size_t(i) * w_stride + (j - j0)]) * x[size_t(j - j0) * dim_ + c];
      out[size_t(i) * out_stride + c] = float(s);
    }
}

namespace {

using Make = std::unique_ptr<BlockCodec> (*)(const CodecSpec&, KvSide, int n_kv_head, int dim, const Codebook*,
                                             const std::vector<std::vector<int>>* kept_channels);

std::unique_ptr<BlockCodec> make_f16(const CodecSpec& s, KvSide, int, int dim, const Codebook*,
                                     const std::vector<std::vector<int>>*) {
  return make_f16_codec(dim, s.group);
}
std::unique_ptr<BlockCodec> make_q8_0(const CodecSpec& s, KvSide side, int, int dim, const Codebook*,
                                      const std::vector<std::vector<int>>*) {
  return make_q8_0_codec(side, dim, s.group);
}
std::unique_ptr<BlockCodec> make_q4_0(const CodecSpec& s, KvSide side, int, int dim, const Codebook*,
                                      const std::vector<std::vector<int>>*) {
  return make_q4_0_codec(side, dim, s.group);
}
std::unique_ptr<BlockCodec> make_kivi(const CodecSpec& s, KvSide side, int, int dim, const Codebook*,
                                      const std::vector<std::vector<int>>*) {
  if (dim % s.group != 0 && side == KvSide::Value)
    fail(strfmt("%s: head size %d is not a multiple of the group size %d", s.name().c_str(), dim, s.group));
  return make_kivi_codec(side, s.bits, dim, s.group);
}
std::unique_ptr<BlockCodec> make_cq(const CodecSpec& s, KvSide side, int n_kv_head, int dim, const Codebook* book,
                                    const std::vector<std::vector<int>>* kept_channels) {
  if (!book) fail(s.name() + " needs codebooks: run `leanlm calibrate` and pass --kv-codebooks FILE");
  if (!kept_channels) return make_cq_codec(*book, side, n_kv_head, dim, s.group, nullptr);
  // ThinK keeps whole codebook groups: map the stored groups to the codebook's.
  const int c = book->channels;
  std::vector<std::vector<int>> groups(n_kv_head);
  for (int h = 0; h < n_kv_head; ++h) {
    const std::vector<int>& ch = (*kept_channels)[h];
    if (int(ch.size()) != dim) fail("internal error: kept channels disagree with the codec size");
    for (int i = 0; i < dim; i += c) {
      if (ch[i] % c != 0) fail("internal error: CQ keeps whole channel groups");
      groups[h].push_back(ch[i] / c);
    }
  }
  return make_cq_codec(*book, side, n_kv_head, dim, s.group, &groups);
}

std::unique_ptr<BlockCodec> make_pq(const CodecSpec& s, KvSide side, int n_kv_head, int dim, const Codebook* book,
                                    const std::vector<std::vector<int>>* kept_channels) {
  if (side == KvSide::Value) return make_block_codec(s.value_spec(), side, n_kv_head, dim, nullptr, kept_channels);
  if (kept_channels) fail(s.name() + ": key-channel pruning (--kv-think) is not supported with PQ keys");
  if (!book) fail(s.name() + " needs codebooks: run `leanlm calibrate --kv-codec " + s.name() +
                  "` and pass --kv-codebooks FILE");
  if (book->channels != s.cq_channels || book->bits != s.bits)
    fail(s.name() + ": the codebooks are for another configuration (recalibrate)");
  return make_pq_codec(*book, n_kv_head, dim, s.group);
}

// One row per codec family (kv_config.cc names the codecs of each family).
struct FamilyRow {
  CodecSpec::Kind kind;
  Make make;
};
constexpr FamilyRow kFamilies[] = {{CodecSpec::Kind::F16, make_f16},
                                   {CodecSpec::Kind::Q8_0, make_q8_0},
                                   {CodecSpec::Kind::Q4_0, make_q4_0},
                                   {CodecSpec::Kind::Kivi, make_kivi},
                                   {CodecSpec::Kind::CQ, make_cq},
                                   {CodecSpec::Kind::PQ, make_pq}};

}  // namespace

std::unique_ptr<BlockCodec> make_block_codec(const CodecSpec& spec, KvSide side, int n_kv_head, int dim,
                                             const Codebook* codebook,
                                             const std::vector<std::vector<int>>* kept_channels) {
  if (dim % 32 != 0) fail(strfmt("KV codec %s: head size %d is not a multiple of 32", spec.name().c_str(), dim));
  // The codecs' and kernels' per-row buffers hold up to 256 channels (every supported model's head).
  if (dim > 256) fail(strfmt("KV codec %s: head size %d is above 256; use --kv-codec f16", spec.name().c_str(), dim));
  for (const FamilyRow& f : kFamilies)
    if (f.kind == spec.kind) return f.make(spec, side, n_kv_head, dim, codebook, kept_channels);
  fail("internal error: " + spec.name() + " is not a block codec");
}

}  // namespace leanlm
