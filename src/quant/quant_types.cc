#include "quant/quant_types.h"

#include <cstring>

#include "util/error.h"

namespace leanlm {

namespace {
struct Entry { uint32_t id; TypeTraits t; };
const Entry kTypes[] = {
    {0, {"F32", 1, 4, true}},
    {1, {"F16", 1, 2, true}},
    {2, {"Q4_0", QK, sizeof(BlockQ4_0), true}},
    {3, {"Q4_1", QK, sizeof(BlockQ4_1), true}},
    {6, {"Q5_0", QK, sizeof(BlockQ5_0), true}},
    {7, {"Q5_1", QK, sizeof(BlockQ5_1), true}},
    {8, {"Q8_0", QK, sizeof(BlockQ8_0), true}},
    {9, {"Q8_1", QK, 36, false}},
    {10, {"Q2_K", QK_K, sizeof(BlockQ2_K), true}},
    {11, {"Q3_K", QK_K, sizeof(BlockQ3_K), true}},
    {12, {"Q4_K", QK_K, sizeof(BlockQ4_K), true}},
    {13, {"Q5_K", QK_K, sizeof(BlockQ5_K), true}},
    {14, {"Q6_K", QK_K, sizeof(BlockQ6_K), true}},
    {15, {"Q8_K", QK_K, 292, false}},
    {16, {"IQ2_XXS", QK_K, 66, false}},
    {17, {"IQ2_XS", QK_K, 74, false}},
    {18, {"IQ3_XXS", QK_K, 98, false}},
    {19, {"IQ1_S", QK_K, 50, false}},
    {20, {"IQ4_NL", QK, 18, false}},
    {21, {"IQ3_S", QK_K, 110, false}},
    {22, {"IQ2_S", QK_K, 82, false}},
    {23, {"IQ4_XS", QK_K, 136, false}},
    {24, {"I8", 1, 1, false}},
    {25, {"I16", 1, 2, false}},
    {26, {"I32", 1, 4, false}},
    {27, {"I64", 1, 8, false}},
    {28, {"F64", 1, 8, false}},
    {29, {"IQ1_M", QK_K, 56, false}},
    {30, {"BF16", 1, 2, true}},
    {53, {"LQ2", QK, QK * 2 / 8 + 1, true, 4 + 4}},
    {54, {"LQ3", QK, QK * 3 / 8 + 1, true, 8 + 4}},
    {55, {"LQ4", QK, QK * 4 / 8 + 1, true, 16 + 4}},
};
}  // namespace

const TypeTraits* type_traits(uint32_t id) {
  for (const auto& e : kTypes)
    if (e.id == id) return &e.t;
  return nullptr;
}

std::string type_name(uint32_t id) {
  const TypeTraits* t = type_traits(id);
  return t ? t->name : strfmt("type#%u", id);
}

size_t row_bytes(GgmlType t, int64_t n) {
  const TypeTraits& tr = traits(t);
  return size_t(tr.row_header) + size_t(n / tr.block_elems) * tr.block_bytes;
}

void unpack_q3k_scales(const uint8_t* p, int8_t out[16]) {
  // Layout: low 4 bits of scales 0-7 in p[0..7] (low nibble: 0-7, high nibble: 8-15),
  // high 2 bits of all 16 in p[8..11], 2 bits each.
  for (int j = 0; j < 16; ++j) {
    int lo = (j < 8) ? (p[j] & 0xF) : (p[j - 8] >> 4);
    int hi = (p[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    out[j] = int8_t((lo | (hi << 4)) - 32);
  }
}

}  // namespace leanlm
