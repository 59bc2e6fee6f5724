// The LeanQuant weight types LQ2, LQ3, LQ4 (leanlm's own; ids in quant_types.h): per output row a
// table of 2^b levels and a unit, then a scale byte for every 32-element block, then the blocks'
// b-bit codes.
// Weight j of a row is scale * block_scale[j / 32] * level[code_j].
//
// Row layout (little-endian, packed) for a row of n elements, nb = n / 32 blocks:
//   int8   level[2^b]       the row's grid, fitted by weighted k-means (leanquant.h), in
//                            [-64, 63]: a level outside reads as the nearest end (lq_level)
//   f32    scale            the row's unit (a weight of 1e-3 over 127 levels and 255 block steps
//                            is below fp16's normal range)
//   uint8  block_scale[nb]  each block's multiple of the unit (0 for a block of zeros)
//   nb blocks of codes:     LQ4 16 bytes: element l < 16 in the low nibble of byte l, l + 16 in
//                                         its high nibble (as Q4_0)
//                           LQ2  8 bytes: element l in bits 2 (l / 8) of byte l % 8
//                           LQ3 12 bytes: the low 2 bits as LQ2, then 4 bytes: bit l % 8 of byte
//                                         8 + l / 8 is element l's third bit
// Bits per weight: b + 8/32 (lq4 4.25, lq3 3.25, lq2 2.25) plus the row header.
// Integer levels (not fp16) make the table a byte-shuffle operand and the product an integer dot.
// Seven bits, not eight: level + 64 is an unsigned byte below 128, so the kernels' u8 x s8 pair
// products (at most 2 * 127 * 127) never saturate int16 and take the block scale as an int16
// multiply without a sign transfer (lq_dot_simd.h). The rounding step, 1/63 of the largest level,
// is ~8x finer than a 4-bit grid's spacing (its error variance ~1.5 % of the grid's own) and ~30x
// finer than a 2-bit one's. The block scale is there because one grid per row fits rows whose
// magnitude changes along the row badly: on Gemma 3 270M (blk.3, no feedback) a per-row grid alone
// had a relative MSE of 0.0139 against Q4_0's 0.0096.
#pragma once
#include <cstdint>
#include <cstring>

#include "quant/quant_types.h"

namespace leanlm {

constexpr int kLqLevelMin = -64, kLqLevelMax = 63;

constexpr bool is_lq(GgmlType t) { return t == GgmlType::LQ2 || t == GgmlType::LQ3 || t == GgmlType::LQ4; }
constexpr int lq_bits(GgmlType t) { return t == GgmlType::LQ2 ? 2 : t == GgmlType::LQ3 ? 3 : 4; }
// Code bytes of one 32-element block (4 b).
constexpr int lq_code_bytes(GgmlType t) { return t == GgmlType::LQ2 ? 8 : t == GgmlType::LQ3 ? 12 : 16; }

// Bytes before a row's block scales: the level table and the f32 unit (= traits(t).row_header;
// inline here because the kernels take it for every row, and traits() is a table search).
constexpr int lq_header_bytes(GgmlType t) { return (1 << lq_bits(t)) + 4; }

// The row's level table (2^b int8), scale, block scales and the codes of block b.
inline const int8_t* lq_levels(const uint8_t* row) { return reinterpret_cast<const int8_t*>(row); }
// Level `code` of a row as every reader takes it: clamped to [kLqLevelMin, kLqLevelMax].
inline int lq_level(const uint8_t* row, int code) {
  const int v = lq_levels(row)[code];
  return v < kLqLevelMin ? kLqLevelMin : v > kLqLevelMax ? kLqLevelMax : v;
}
// The row's 2^b levels as lq_level reads them: lv[2^b].
inline void lq_level_table(GgmlType t, const uint8_t* row, int* lv) {
  for (int i = 0; i < (1 << lq_bits(t)); ++i) lv[i] = lq_level(row, i);
}
inline float lq_scale(GgmlType t, const uint8_t* row) {
  float s;
  std::memcpy(&s, row + (1 << lq_bits(t)), 4);
  return s;
}
inline const uint8_t* lq_block_scales(GgmlType t, const uint8_t* row) { return row + lq_header_bytes(t); }
inline const uint8_t* lq_block_codes(GgmlType t, const uint8_t* row, int64_t n, int64_t b) {
  return row + lq_header_bytes(t) + n / 32 + b * lq_code_bytes(t);
}
// The 32 codes of block b of a row of n elements, one byte each (< 2^b).
void lq_unpack_block(GgmlType t, const uint8_t* row, int64_t n, int64_t b, uint8_t* codes);
// The row's codes, one byte each (< 2^b): codes[n].
void lq_unpack_codes(GgmlType t, const uint8_t* row, int64_t n, uint8_t* codes);
// Writes a row: levels[2^b], scale, block_scales[n / 32], codes[n] (< 2^b).
void lq_pack_row(GgmlType t, const int8_t* levels, float scale, const uint8_t* block_scales, const uint8_t* codes,
                 int64_t n, uint8_t* row);
// w[j] = scale * block_scale[j / 32] * lq_level(row, code_j).
void lq_dequantize_row(GgmlType t, const uint8_t* row, float* w, int64_t n);

}  // namespace leanlm
