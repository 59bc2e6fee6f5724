#include "quant/random_blocks.h"

#include <cstring>

#include "quant/lq_format.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

namespace {
std::vector<uint8_t> row_with_scales(GgmlType t, int n, std::mt19937& rng, bool saturated) {
  const TypeTraits& tr = traits(t);
  std::vector<uint8_t> row(row_bytes(t, n));
  for (auto& b : row) b = saturated ? 0xFF : uint8_t(rng());
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  auto put_h = [&](uint8_t* p, float v) {
    uint16_t h = f32_to_fp16_ref(v);
    std::memcpy(p, &h, 2);
  };
  if (is_lq(t)) {  // the header's f32 unit (levels, block scales and codes are any bytes)
    const float unit = u(rng) / (127.f * 255.f);
    std::memcpy(row.data() + (1 << lq_bits(t)), &unit, 4);
    return row;
  }
  for (size_t off = 0; off < row.size(); off += tr.block_bytes) {
    uint8_t* b = row.data() + off;
    switch (t) {
      case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: put_h(b, u(rng)); break;
      case GgmlType::Q4_1: case GgmlType::Q5_1: put_h(b, u(rng)); put_h(b + 2, -u(rng)); break;
      case GgmlType::Q2_K: put_h(b + 80, u(rng)); put_h(b + 82, u(rng)); break;
      case GgmlType::Q3_K: put_h(b + 108, u(rng)); break;
      case GgmlType::Q4_K: case GgmlType::Q5_K: put_h(b, u(rng)); put_h(b + 2, u(rng)); break;
      case GgmlType::Q6_K: put_h(b + 208, u(rng)); break;
      case GgmlType::F16:
        for (int i = 0; i < tr.block_bytes; i += 2) put_h(b + i, u(rng) - 0.025f);
        break;
      case GgmlType::BF16:
        for (int i = 0; i < tr.block_bytes; i += 2) {
          uint16_t h = f32_to_bf16(u(rng) - 0.025f);
          std::memcpy(b + i, &h, 2);
        }
        break;
      case GgmlType::F32: {
        float v = u(rng) - 0.025f;
        std::memcpy(b, &v, 4);
        break;
      }
      default: break;
    }
  }
  return row;
}

// rows random rows of type t, back to back.
}  // namespace

static std::vector<uint8_t> matrix_with_scales(GgmlType t, int rows, int n, std::mt19937& rng, bool saturated) {
  std::vector<uint8_t> w;
  for (int r = 0; r < rows; ++r) {
    auto row = row_with_scales(t, n, rng, saturated);
    w.insert(w.end(), row.begin(), row.end());
  }
  return w;
}

std::vector<uint8_t> random_row(GgmlType t, int n, std::mt19937& rng) { return row_with_scales(t, n, rng, false); }

std::vector<uint8_t> random_matrix(GgmlType t, int rows, int n, std::mt19937& rng) {
  return matrix_with_scales(t, rows, n, rng, false);
}

std::vector<uint8_t> saturated_matrix(GgmlType t, int rows, int n, std::mt19937& rng) {
  return matrix_with_scales(t, rows, n, rng, true);
}

std::vector<uint8_t> extreme_matrix(GgmlType t, int rows, int n, const std::vector<bool>& negative,
                                    std::mt19937& rng) {
  const TypeTraits& tr = traits(t);
  const int nb = n / tr.block_elems;
  if (int(negative.size()) != nb) fail("extreme_matrix: one polarity per block expected");
  if (is_lq(t)) fail("extreme_matrix: LQ rows have no fixed extreme layout (test_leanquant builds its own)");
  // The formats whose codes (or sub-block scales) are signed have a negative extreme larger in
  // magnitude than the positive one; the unsigned ones reach their extreme only through 0xFF.
  const bool has_negative = t == GgmlType::Q4_0 || t == GgmlType::Q5_0 || t == GgmlType::Q8_0 ||
                            t == GgmlType::Q3_K || t == GgmlType::Q6_K;
  std::vector<uint8_t> w;
  for (int r = 0; r < rows; ++r) {
    std::vector<uint8_t> row = row_with_scales(t, n, rng, true);  // 0xFF codes, small positive fp16 scales
    for (int b = 0; b < nb; ++b) {
      uint8_t* blk = row.data() + size_t(b) * tr.block_bytes;
      const bool neg = negative[b] && has_negative;
      switch (t) {
        case GgmlType::Q8_0: std::memset(blk + 2, neg ? 0x80 : 0x7F, 32); break;  // -128 or 127
        case GgmlType::Q4_0: if (neg) std::memset(blk + 2, 0x00, 16); break;       // -8 (0xFF: 7)
        case GgmlType::Q5_0: if (neg) std::memset(blk + 2, 0x00, 20); break;       // -16 (0xFF: 15)
        case GgmlType::Q3_K: if (neg) std::memset(blk, 0x00, 108); break;          // codes -4, scales -32
        case GgmlType::Q6_K:  // codes -32 with scales -128, or 31 with scales 127
          if (neg) std::memset(blk, 0x00, 192);
          std::memset(blk + 192, neg ? 0x80 : 0x7F, 16);
          break;
        default: break;
      }
    }
    w.insert(w.end(), row.begin(), row.end());
  }
  return w;
}

}  // namespace leanlm
