// ggml tensor types as stored in GGUF files: ids, block sizes and block layouts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace leanlm {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
  // leanlm's own LeanQuant types (lq_format.h), numbered past ggml's (which end below 40): a row
  // is a table of 2^b 7-bit levels, a unit and per-32-block scales, then b-bit codes. Earlier
  // layouts' files are refused as an unknown type, not misread: 60-62 had no block scales, 56-58
  // had 8-bit levels.
  LQ2 = 53, LQ3 = 54, LQ4 = 55,
};
constexpr int kTypeSlots = 64;  // kernel tables are indexed by type id

struct TypeTraits {
  const char* name;
  int block_elems;   // weights per block
  int block_bytes;   // bytes per block
  bool supported;    // leanlm can compute with it
  int row_header = 0;  // bytes before a row's first block (the LQ types' level table)
};

// Traits for a type id; nullptr for ids leanlm does not know.
const TypeTraits* type_traits(uint32_t type_id);
inline const TypeTraits& traits(GgmlType t) { return *type_traits(uint32_t(t)); }
std::string type_name(uint32_t type_id);
// Bytes of one row of n elements (n must be a multiple of the block size), header included.
size_t row_bytes(GgmlType t, int64_t n);

// ---- Block layouts (little-endian, packed, as in the file) -------------------------------------
constexpr int QK = 32;    // elements per block of the legacy formats
constexpr int QK_K = 256; // elements per super-block of the K formats

#pragma pack(push, 1)
struct BlockQ4_0 { uint16_t d; uint8_t qs[QK / 2]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[QK / 2]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[QK]; };
struct BlockQ2_K { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
struct BlockQ6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };
#pragma pack(pop)

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scale and min packed into 12 bytes.
inline void unpack_k4_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q3_K: 16 signed 6-bit scales packed into 12 bytes; returns them with the -32 offset applied.
void unpack_q3k_scales(const uint8_t* packed, int8_t out[16]);

}  // namespace leanlm
