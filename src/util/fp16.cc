#include "util/fp16.h"

#include <cmath>

namespace leanlm {

float fp16_to_f32_ref(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(float(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(float(mant | 0x400), int(exp) - 25);
  }
  return sign ? -v : v;
}

uint16_t f32_to_fp16_ref(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t absx = x & 0x7fffffff;
  if (absx > 0x7f800000) return uint16_t(sign | 0x7e00);  // nan
  if (absx >= 0x477ff000) {                               // rounds to >= 65520 -> inf
    return uint16_t(sign | 0x7c00);
  }
  if (absx < 0x38800000) {  // subnormal half (or zero)
    // value = absx as float; half subnormal unit is 2^-24.
    float a;
    std::memcpy(&a, &absx, 4);
    float scaled = a * 16777216.0f;  // / 2^-24
    uint32_t m = uint32_t(std::nearbyint(scaled));
    return uint16_t(sign | m);
  }
  uint32_t e = ((absx >> 23) - 127 + 15);
  uint32_t m = absx & 0x7fffff;
  uint32_t half = (e << 10) | (m >> 13);
  uint32_t rem = m & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
  return uint16_t(sign | half);
}

}  // namespace leanlm
