// Half-precision conversions. The scalar versions are the reference; hot loops use F16C.
#pragma once
#include <cstdint>
#include <cstring>
#include <immintrin.h>

namespace leanlm {

// Bit-exact IEEE binary16 -> binary32 (handles subnormals, inf, nan).
float fp16_to_f32_ref(uint16_t h);
// Round-to-nearest-even binary32 -> binary16.
uint16_t f32_to_fp16_ref(float f);

inline float fp16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t f32_to_fp16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 64);  // quiet nan
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

}  // namespace leanlm
