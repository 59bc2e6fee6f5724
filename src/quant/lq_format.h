// The LeanQuant weight types LQ2, LQ3, LQ4 (leanlm's own; ids in quant_types.h): per output row a
// table of 2^b levels, then the row's b-bit codes. Weight j of a row is scale * level[code_j].
//
// Row layout (little-endian, packed):
//   int8   level[2^b]     the row's grid, fitted by weighted k-means (leanquant.h)
//   fp16   scale          level value = scale * level[i]
//   blocks of 32 codes:   LQ4 16 bytes: element l < 16 in the low nibble of byte l, l + 16 in its
//                                       high nibble (as Q4_0)
//                         LQ2  8 bytes: element l in bits 2 (l / 8) of byte l % 8
//                         LQ3 12 bytes: the low 2 bits as LQ2, then 4 bytes: bit l % 8 of byte
//                                       l / 8 is element l's third bit
// int8 levels (not fp16) make the table a byte-shuffle operand and the product an int8 dot, and
// cost the grid nothing measurable: the rounding step is 1/127 of the largest level, ~60x finer
// than a 4-bit grid's spacing.
#pragma once
#include <cstdint>

#include "quant/quant_types.h"

namespace leanlm {

inline bool is_lq(GgmlType t) { return t == GgmlType::LQ2 || t == GgmlType::LQ3 || t == GgmlType::LQ4; }
inline int lq_bits(GgmlType t) { return t == GgmlType::LQ2 ? 2 : t == GgmlType::LQ3 ? 3 : 4; }

// The row's level table (2^b int8) and scale.
inline const int8_t* lq_levels(const uint8_t* row) { return reinterpret_cast<const int8_t*>(row); }
float lq_scale(GgmlType t, const uint8_t* row);
// The 32 codes of block b of a row, one byte each (< 2^b).
void lq_unpack_block(GgmlType t, const uint8_t* row, int64_t b, uint8_t* codes);
// The row's codes, one byte each (< 2^b): codes[n].
void lq_unpack_codes(GgmlType t, const uint8_t* row, int64_t n, uint8_t* codes);
// Writes a row: levels[2^b], scale, codes[n] (< 2^b).
void lq_pack_row(GgmlType t, const int8_t* levels, float scale, const uint8_t* codes, int64_t n, uint8_t* row);
// w[j] = scale * level[code_j].
void lq_dequantize_row(GgmlType t, const uint8_t* row, float* w, int64_t n);

}  // namespace leanlm
