#include "quant/random_blocks.h"

#include <cstring>

#include "util/fp16.h"

namespace leanlm {

namespace {
std::vector<uint8_t> row_with_scales(GgmlType t, int n, std::mt19937& rng, bool saturated) {
  const TypeTraits& tr = traits(t);
  std::vector<uint8_t> row(size_t(n / tr.block_elems) * tr.block_bytes);
  for (auto& b : row) b = saturated ? 0xFF : uint8_t(rng());
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  auto put_h = [&](uint8_t* p, float v) {
    uint16_t h = f32_to_fp16_ref(v);
    std::memcpy(p, &h, 2);
  };
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

}  // namespace leanlm
