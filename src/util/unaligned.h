// Little-endian loads from byte pointers with no alignment (memcpy: the compilers make it one
// move), for the packed weight formats' scale and bit fields.
#pragma once
#include <cstdint>
#include <cstring>

namespace leanlm {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace leanlm
