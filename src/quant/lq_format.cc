#include "quant/lq_format.h"

#include <cstring>

#include "util/fp16.h"

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

float lq_scale(GgmlType t, const uint8_t* row) {
  uint16_t h;
  std::memcpy(&h, row + (1 << lq_bits(t)), 2);
  return fp16_to_f32_ref(h);
}

void lq_unpack_block(GgmlType t, const uint8_t* row, int64_t b, uint8_t* c) {
  unpack_block(t, row + traits(t).row_header + b * traits(t).block_bytes, c);
}

void lq_unpack_codes(GgmlType t, const uint8_t* row, int64_t n, uint8_t* c) {
  const uint8_t* b = row + traits(t).row_header;
  for (int64_t base = 0; base < n; base += 32, b += traits(t).block_bytes) unpack_block(t, b, c + base);
}

void lq_pack_row(GgmlType t, const int8_t* levels, float scale, const uint8_t* c, int64_t n, uint8_t* row) {
  const int k = 1 << lq_bits(t);
  std::memcpy(row, levels, k);
  const uint16_t h = f32_to_fp16_ref(scale);
  std::memcpy(row + k, &h, 2);
  uint8_t* b = row + traits(t).row_header;
  const int bytes = traits(t).block_bytes;
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
  const int8_t* lv = lq_levels(row);
  const float s = lq_scale(t, row);
  uint8_t c[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    lq_unpack_block(t, row, b, c);
    for (int l = 0; l < 32; ++l) w[32 * b + l] = s * float(lv[c[l]]);
  }
}

}  // namespace leanlm
