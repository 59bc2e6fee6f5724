// Quantized matrix x matrix products for prompt processing (many tokens at once).
//
// A decode step multiplies each weight row with one activation row, so it is bound by reading the
// weights and the per-row kernels in dot.h are the right tool. A prompt of T tokens reuses every
// weight row T times; there the cost is arithmetic, and the per-row kernels waste most of it
// unpacking the same weight block again for every token. The GEMM here unpacks a tile of weight
// rows once into plain bytes, then streams the tokens past it:
//
//   weights  UnpackedRows  w[r][k] = scale[r][g] * code[r][k] + offset[r][g],  g = k / group
//            (codes are u8; group is 32 for the legacy formats and Q4_K/Q5_K, 16 for Q2_K/Q3_K/Q6_K)
//   tokens   ActPanels     int8 codes of 16 tokens interleaved four bytes at a time, the layout in
//            which one VNNI instruction (vpdpbusd) multiplies four bytes of one weight row with
//            four bytes of 16 tokens and adds them into 16 int32 lanes.
//
// The integer products are exact, so the GEMM equals the per-row kernels up to the order of the
// float additions.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant/act_quant.h"
#include "quant/quant_types.h"
#include "util/aligned.h"

namespace leanlm {

constexpr int kPanelTokens = 16;

// A batch of activation rows, quantized like ActBatch (act_quant.h) and packed in panels of 16 tokens. Tokens past n_tokens in the last panel are zero.
struct ActPanels {
  int n_tokens = 0, n = 0, n_panels = 0;
  AlignedVec<int8_t> q;  // [panel][n/4][16 tokens][4]
  AlignedVec<float> d;   // [panel][n/32][16]   scale of each 32-block
  AlignedVec<float> s;   // [panel][n/16][16]   scale * (sum of the 16 codes)

  void pack(const float* x, int n_tokens, int n, int64_t x_stride, ActScheme scheme);
  const int8_t* panel_q(int p) const { return q.data() + size_t(p) * n * kPanelTokens; }
  const float* panel_d(int p) const { return d.data() + size_t(p) * (n / 32) * kPanelTokens; }
  const float* panel_s(int p) const { return s.data() + size_t(p) * (n / 16) * kPanelTokens; }
};

// Weight rows unpacked to one code byte per weight plus a float scale and offset per group.
struct UnpackedRows {
  int n = 0, rows = 0, group = 32;
  int code_bits = 8;          // codes are below 2^code_bits
  AlignedVec<uint8_t> codes;  // [rows][n]
  AlignedVec<float> scale;    // [rows][n/group]
  AlignedVec<float> offset;   // [rows][n/group]

  const uint8_t* row_codes(int r) const { return codes.data() + size_t(r) * n; }
  const float* row_scale(int r) const { return scale.data() + size_t(r) * (n / group); }
  const float* row_offset(int r) const { return offset.data() + size_t(r) * (n / group); }
};

// True for the weight types the GEMM handles (the int8-activation types).
bool gemm_supports(GgmlType t);
// Group size of the unpacked form (32 or 16).
int gemm_group(GgmlType t);
// Bits of the unpacked codes (2-6; 8 for Q8_0).
int gemm_code_bits(GgmlType t);

// Unpacks nrows rows of n weights (row_bytes apart) into out.
void unpack_rows(GgmlType t, const uint8_t* w, size_t row_bytes, int nrows, int n, UnpackedRows& out);

// out[r][j] = W[r] . x[token 16*p + j]  for r < w.rows, j < 16, each panel p in [p_begin, p_end);
// out is [w.rows][out_stride] and panel p's results start at column 16*(p - p_begin).
using GemmPanelsFn = void (*)(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                              int out_stride);

void gemm_panels_scalar(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                        int out_stride);
// AVX-512 VNNI kernel (gemm_avx512.cc); call only when the CPU has it.
void gemm_panels_avx512(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                        int out_stride);
// AVX2 kernel (gemm_avx2.cc): codes must be below 128, so every type but Q8_0.
void gemm_panels_avx2(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                      int out_stride);

// The fastest kernel this CPU runs for weight type t, or nullptr when only the reference would
// (the per-row dot kernels are then faster than the scalar GEMM).
GemmPanelsFn best_gemm_kernel(GgmlType t);

}  // namespace leanlm
