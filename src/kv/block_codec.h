// A KV codec: how one side (keys or values) of one layer is stored in compressed blocks, and how
// attention computes on that compressed form directly.
//
// A block holds up to `tokens` consecutive token vectors of `dim` channels of one KV head. The
// paged store (paged_store.h) owns the blocks; a codec only knows how to fill, read and compute on
// one. Adding a method means adding one codecs/*.cc file that implements this interface and
// registering its names in block_codec.cc.
//
// Scores may come from decoded keys (KIVI: scales folded into the query) or from per-query lookup
// tables (CQ: q . centroid computed once per call): `prepare` turns the raw queries of one scores()
// call into whatever the codec's `dot` reads, once, before it scans many blocks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kv/kv_kernels.h"
#include "util/aligned.h"

namespace leanlm {

// The queries of one scores() call, after BlockCodec::prepare.
struct QueryPrep {
  const float* q = nullptr;  // [n_q][q_stride] raw queries (dim channels used)
  int n_q = 0, q_stride = 0;
  AlignedVec<float> table;   // codec-specific (e.g. lookup tables); may stay empty
  QuantQueries quant;        // int8 queries, for codecs that score in the integer domain
  AlignedVec<uint8_t> lut8;  // uint8 lookup tables (PQ keys: [n_q][M][16]), or empty
  std::vector<float> lut_scale, lut_bias;  // [n_q]: score = scale * (sum of lut8 entries) + bias
};

// One plane of a block's layout for per-token codecs: each row owns `units` pieces of `unit`
// bytes, piece u of row j at the plane's start + (u * tokens + j) * unit (units == 1: the plane is
// token-major rows; more: a layout interleaved across tokens, like lane keys).
struct RowPlane {
  size_t unit = 0;
  int units = 1;
};

class BlockCodec {
 public:
  BlockCodec(int dim, int tokens) : dim_(dim), tokens_(tokens) {}
  virtual ~BlockCodec() = default;
  int dim() const { return dim_; }
  int tokens() const { return tokens_; }

  // Bytes of one block (codes, scales, zero points: everything it stores).
  virtual size_t block_bytes() const = 0;
  // Compresses rows j0 .. n-1 of KV head h into blk; row j is read from x + (j - j0) * x_stride.
  // Rows before j0 were written by an earlier call. Codecs that group across tokens (per-channel
  // keys) take j0 == 0 only: see per_token().
  virtual void encode(int h, const float* x, int x_stride, int j0, int n, uint8_t* blk) const = 0;
  // Whether each row is compressed on its own (rows can be appended one at a time).
  virtual bool per_token() const { return true; }
  // Per-token codecs lay a block out as planes (scales, then codes, ...), in order. Empty: rows
  // cannot move between blocks as bytes (codes grouped across tokens) and must be re-encoded.
  virtual std::vector<RowPlane> row_planes() const { return {}; }
  // Whether encoded rows move between blocks exactly without decoding (planes, or copy_row's own way).
  virtual bool rows_copyable() const { return !row_planes().empty(); }
  // Copies encoded row sj of src to row dj of dst, exactly (src may be dst). Needs rows_copyable().
  virtual void copy_row(const uint8_t* src, int sj, uint8_t* dst, int dj) const;
  // Rows [j0, j1) of blk -> x: [j1 - j0][dim], the fast way; decode_ref is the plain reference.
  virtual void decode(int h, const uint8_t* blk, int j0, int j1, float* x) const = 0;
  virtual void decode_ref(int h, const uint8_t* blk, int j0, int j1, float* x) const { decode(h, blk, j0, j1, x); }

  // Per-call query preparation (lookup tables, ...). The default keeps just the pointers.
  virtual void prepare(int h, const float* q, int n_q, int q_stride, QueryPrep& p) const {
    p.q = q, p.n_q = n_q, p.q_stride = q_stride;
  }
  // out[i * out_stride + (j - j0)] = q_i . x_j  for rows j in [j0, j1) of the block. The default
  // decodes the rows into a small tile (stays in L1) and runs the dense kernel on it.
  virtual void dot(int h, const uint8_t* blk, int j0, int j1, const QueryPrep& p, float* out, int out_stride) const;
  // out[i * out_stride + c] += sum_{j in [j0, j1)} w[i * w_stride + (j - j0)] * x_j[c]. Same default.
  virtual void axpy(int h, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
                    int out_stride) const;

  // The same two computations the plain way (decode_ref, then double loops). Tests compare with these.
  void dot_ref(int h, const uint8_t* blk, int j0, int j1, const float* q, int n_q, int q_stride, float* out,
               int out_stride) const;
  void axpy_ref(int h, const uint8_t* blk, int j0, int j1, const float* w, int n_q, int w_stride, float* out,
                int out_stride) const;

 protected:
  int dim_, tokens_;
};

// Which side of the cache a codec instance serves (KIVI groups keys per channel, values per token).
enum class KvSide { Key, Value };

// Codebooks learned by `leanlm calibrate` (CQ; PQ keys: c = d_sub, 4 bits), for one layer and side:
// [n_kv_head][n_groups][2^bits][c].
struct Codebook {
  int channels = 0, bits = 0;    // c channels per group, 2^bits centroids
  std::vector<float> centroids;  // [n_kv_head][dim / c][1 << bits][c]
  // Query-aware books (keys): the metric the centroids were learned in, per group the upper
  // triangular U ([n_kv_head][dim / c][c][c], row-major) with U^T U = E[q_g q_g^T] over the queries
  // that read the head. A key is coded to the centroid nearest in |U (x - c)|, the error of the
  // scores q . x that the k-means minimised. Empty: plain Euclidean.
  std::vector<float> metric;
};

// The codebooks of every layer (index = layer), as `leanlm calibrate` writes them.
struct ModelCodebooks {
  std::vector<Codebook> key, value;
};

struct CodecSpec;
// One codec instance for a layer's keys or values. With ThinK, keys store only kept_channels[h]
// (dim of the head's channels, ascending); codecs that learned per-channel-group tables (CQ) map
// them back to their groups.
std::unique_ptr<BlockCodec> make_block_codec(const CodecSpec& spec, KvSide side, int n_kv_head, int dim,
                                             const Codebook* codebook,
                                             const std::vector<std::vector<int>>* kept_channels = nullptr);

}  // namespace leanlm
