#include "quant/lq_format.h"

#include <cstring>


namespace leanlm {

namespace {

// The 32 codes of one block.
void unpack_block(GgmlType t, const uint8_t* b, uint8_t* c) {
  switch (t) {
    case GgmlType::LQ4:
      for (int l = 0; l < 16; ++l) c[l] = b[l] & 15, c[l + 16] = b[l] >> 4;
      break;
    case GgmlType::LQ2:
      for (int l = 0; l < 32; ++l) c[l] = (b[l % 8] >> (2 * (l / 8))) & 3;
      break;
    default:  // LQ3
      for (int l = 0; l < 32; ++l) c[l] = ((b[l % 8] >> (2 * (l / 8))) & 3) | (((b[8 + l / 8] >> (l % 8)) & 1) << 2);
      break;
  }
}

}  // namespace

void lq_unpack_block(GgmlType t, const uint8_t* row, int64_t n, int64_t b, uint8_t* c) {
  unpack_block(t, lq_block_codes(t, row, n, b), c);
}

void lq_unpack_codes(GgmlType t, const uint8_t* row, int64_t n, uint8_t* c) {
  const uint8_t* b = lq_block_codes(t, row, n, 0);
  for (int64_t base = 0; base < n; base += 32, b += lq_code_bytes(t)) unpack_block(t, b, c + base);
}

void lq_pack_row(GgmlType t, const int8_t* levels, float scale, const uint8_t* block_scales, const uint8_t* c,
                 int64_t n, uint8_t* row) {
  const int k = 1 << lq_bits(t);
  std::memcpy(row, levels, k);
  std::memcpy(row + k, &scale, 4);
  std::memcpy(row + lq_header_bytes(t), block_scales, size_t(n / 32));
  uint8_t* b = row + lq_header_bytes(t) + n / 32;
  const int bytes = lq_code_bytes(t);
  for (int64_t base = 0; base < n; base += 32, b += bytes, c += 32) {
    std::memset(b, 0, bytes);
    switch (t) {
      case GgmlType::LQ4:
        for (int l = 0; l < 16; ++l) b[l] = uint8_t(c[l] | (c[l + 16] << 4));
        break;
      case GgmlType::LQ2:
        for (int l = 0; l < 32; ++l) b[l % 8] |= uint8_t(c[l] << (2 * (l / 8)));
        break;
      default:
        for (int l = 0; l < 32; ++l) {
          b[l % 8] |= uint8_t((c[l] & 3) << (2 * (l / 8)));
          b[8 + l / 8] |= uint8_t((c[l] >> 2) << (l % 8));
        }
        break;
    }
  }
}

void lq_dequantize_row(GgmlType t, const uint8_t* row, float* w, int64_t n) {
  int lv[16];
  lq_level_table(t, row, lv);
  const float s = lq_scale(t, row);
  const uint8_t* bs = lq_block_scales(t, row);
  uint8_t c[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    lq_unpack_block(t, row, n, b, c);
    const float sb = s * float(bs[b]);
    for (int l = 0; l < 32; ++l) w[32 * b + l] = sb * float(lv[c[l]]);
  }
}

}  // namespace leanlm
