// The inner loops of attention over the KV cache: scores q . k over stored keys and the weighted
// sum of stored values, for every storage form the cache has. One table per ISA (the scalar
// reference, AVX2, AVX-512), chosen at run time through quant/dot.h's best_isa(), like the weight
// kernels: kv_kernels_scalar.cc is the reference every faster variant is tested against
// (tests/test_kv_kernels.cc), kv_kernels_simd.h holds the one implementation that
// kv_kernels_avx2.cc and kv_kernels_avx512.cc compile for their vector widths.
//
// Storage forms:
//   rows        token-major fp16 or f32 rows, row j at data + j * stride (the recent window, the
//               plain f16 cache's values, decoded tiles)
//   tkeys       fp16 keys transposed in blocks: kt[c * ld + j] is channel c of token j (the plain
//               f16 cache's keys), so that one vector holds one channel of consecutive tokens
//   lane keys   integer codes of keys (q8_0, q4_0, KIVI) in lanes of 4 bytes per token, scored in
//               the integer domain against int8-quantized queries (VNNI dot products on AVX-512)
//   code rows   per-token integer codes of values (q8_0, q4_0, KIVI), accumulated with the softmax
//               weight folded into each group's scale
//   codebook    8-bit codes of centroids (CQ: groups of C channels, 256 centroids per group); keys
//               scored through per-query lookup tables (gathers), values accumulated by gathering
//               each token's centroids
//   pq codes    4-bit codes of product-quantized keys (NoMAD: 16 centroids per sub-space), two
//               tokens' codes per byte, scored with byte shuffles from per-query uint8 tables
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant/dot.h"
#include "util/aligned.h"

namespace leanlm {

// Queries quantized to int8 for lane-key scores: q_i ~= d[i] * codes[i][c], codes in -127..127.
struct QuantQueries {
  int n = 0, dim = 0;
  AlignedVec<int8_t> codes;   // [n][dim]
  std::vector<float> d;       // [n]
  std::vector<int32_t> sum;   // [n][dim / 32] sums of codes per 32 channels (offset corrections)
  std::vector<float> bias;    // [n] added to every score (KIVI: q . min), or empty
};
// x: [n][stride] floats (dim used), optionally times per-channel factors mul[dim] (KIVI folds its
// key scales into the query this way). The same rounding on every ISA.
void quantize_queries(const float* x, int n, int stride, int dim, const float* mul, QuantQueries& out);

// Integer key codes of one block of T tokens (T a multiple of 16), in lanes: column u of W = 32 / bits
// channels holds, for each token j, 4 bytes at codes + (u * T + j) * 4; byte k of them holds
//   bits 8: channel 4u + k as int8 (q8_0, signed)
//   bits 4: channel 8u + k (low nibble) and 8u + 4 + k (high nibble), unsigned
//   bits 2: channels 16u + k, 16u + 4 + k, 16u + 8 + k, 16u + 12 + k in bit pairs 0-1 .. 6-7, unsigned
// so that masking and shifting a lane gives 4 consecutive channels as bytes, the operand of a
// 4-way byte dot product. Key j, channel c: x = scale[c / 32][j] * (code - zero), or, without
// scales, the plain integer code (KIVI folds its scales into the query and adds q . min as bias).
struct LaneKeys {
  const uint8_t* codes = nullptr;
  int T = 0;                         // tokens per block: the lane stride
  int bits = 8;
  const uint16_t* scale = nullptr;   // [dim / 32][T] fp16, or null
  int zero = 0;
};
void pack_lane_key(const uint8_t* codes /*[dim] one token, unsigned or int8*/, int dim, int bits, int T, int j,
                   uint8_t* lanes);
int lane_key_code(const uint8_t* lanes, int dim, int bits, int T, int j, int c);  // the inverse, one code

// Integer codes of values, token-major: row j at codes + j * stride, 32 channels per unit of
// 32 * bits / 8 bytes:
//   bits 8: int8 per channel (signed);  bits 4: element i in the low nibble of byte i, 16 + i in
//   the high nibble;  bits 2: element 8k + i in bits 2k..2k+1 of byte i.
// Scales (and minimums) are group-major, so that one vector load holds consecutive tokens':
// value j, channel c, group g = c / group: x = scale[g * scale_stride + j] * (code - zero)
// + min[g * scale_stride + j].
struct CodeRows {
  const uint8_t* codes = nullptr;
  size_t stride = 0;
  int bits = 8;
  int group = 32;                   // channels per scale (a multiple of 32)
  const uint16_t* scale = nullptr;  // [dim / group][scale_stride] fp16, token 0 of the rows first
  const uint16_t* min = nullptr;    // same shape, or null
  size_t scale_stride = 0;
  int zero = 0;
};

struct KvKernels {
  // out[i * os + j] = q_i . row_j, j in [0, n).
  void (*rows_scores_f16)(const uint16_t* rows, size_t stride, int n, int dim, const float* q, int nq, int qs,
                          float* out, int os);
  void (*rows_scores_f32)(const float* rows, size_t stride, int n, int dim, const float* q, int nq, int qs,
                          float* out, int os);
  // out[i * os + c] += sum_j w[i * ws + j] * row_j[c].
  void (*rows_accum_f16)(const uint16_t* rows, size_t stride, int n, int dim, const float* w, int nq, int ws,
                         float* out, int os);
  void (*rows_accum_f32)(const float* rows, size_t stride, int n, int dim, const float* w, int nq, int ws,
                         float* out, int os);
  // out[i * os + (j - j0)] = q_i . k_j for tokens [j0, j1) of transposed fp16 keys kt ([dim][ld]).
  void (*tkeys_scores_f16)(const uint16_t* kt, int ld, int j0, int j1, int dim, const float* q, int nq, int qs,
                           float* out, int os);
  // out[i * os + (j - j0)] = d_i * sum_c q_ic * x_jc (+ bias_i), tokens [j0, j1) of a lane block.
  void (*lane_scores)(const LaneKeys& k, int j0, int j1, int dim, const QuantQueries& q, float* out, int os);
  // KIVI keys (a lane block without scales, codes unsigned) with per-channel fp16 scale and min:
  // out[i * os + (j - j0)] = q_i . (min + scale * code_j), each query row multiplied by the scales
  // and quantized to int8 (as quantize_queries with mul = scale) inside, q_i . min added in float.
  void (*kivi_key_scores)(const LaneKeys& k, const uint16_t* scale, const uint16_t* min, int j0, int j1, int dim,
                          const float* q, int nq, int qs, float* out, int os);
  // out[i * os + c] += sum_j w[i * ws + j] * x_jc for value rows j in [0, n).
  void (*code_accum)(const CodeRows& v, int n, int dim, const float* w, int nq, int ws, float* out, int os);
  // Codebook keys, codes group-major in a block ([ng][T] bytes, T a multiple of 16):
  // out[i * os + (j - j0)] = sum_g lut[(i * ng + g) * 256 + codes[g * T + j]], summed in order of g
  // (so every ISA gives the same bits).
  void (*lut_scores)(const uint8_t* codes, int T, int j0, int j1, int ng, const float* lut, int nq, float* out,
                     int os);
  // The lookup tables of nq query rows: lut[(i * ng + g) * 256 + k] = sum_e q[i * qs + g * C + e] *
  // cen_t[(g * C + e) * 256 + k], with cen_t the codebook transposed ([ng][C][256]).
  void (*lut_build)(const float* cen_t, int ng, int C, const float* q, int nq, int qs, float* lut);
  // Codebook values, token-major rows (row j: dim / C codes at codes + j * stride), C in {1, 2, 4, 8}:
  // out[i * os + c] += sum_j w[i * ws + j] * cen[(c / C * 256 + code_j[c / C]) * C + c % C] for rows
  // j in [0, n), cen the codebook [dim / C][256][C]; rows no query row weighs are not read.
  void (*centroid_accum)(const uint8_t* codes, size_t stride, int n, int dim, int C, const float* cen, const float* w,
                         int nq, int ws, float* out, int os);
  // Product-quantized keys with 4-bit codes (NoMAD-Attention). A block is sub-blocks of 32 tokens,
  // M * 16 bytes each: byte k of sub-space m of sub-block s (at codes + (s * M + m) * 16 + k) holds
  // the code of token 32s + k in its low nibble and of token 32s + 16 + k in its high nibble, so a
  // token is appended by setting one nibble. lut: [nq][M][16] uint8 per query, sub-space and
  // centroid; the caller scales the tables so that any sum over m fits in 16 bits (the kernels add
  // in uint16). M a multiple of 4. For tokens j in [j0, j1):
  //   out[i * os + (j - j0)] = fma(scale[i], sum_m lut[i][m][code_m(j)], bias[i]).
  void (*pq_scores)(const uint8_t* codes, int j0, int j1, int M, const uint8_t* lut, int nq, const float* scale,
                    const float* bias, float* out, int os);
  // The pieces of attention's online softmax: x[i] = exp(x[i] - m), returning the sum; the maximum.
  float (*exp_shift_sum)(float* x, int n, float m);
  float (*max_of)(const float* x, int n);
};

const KvKernels& kv_kernels(Isa isa);
inline const KvKernels& best_kv_kernels() { return kv_kernels(best_isa()); }

// Per-ISA registration (kv_kernels_scalar.cc, kv_kernels_avx2.cc, kv_kernels_avx512.cc).
void fill_kv_scalar(KvKernels& t);
void fill_kv_avx2(KvKernels& t);
void fill_kv_avx512(KvKernels& t);

}  // namespace leanlm
