#include "kv/rotation.h"

#include <cmath>
#include <cstdint>

#include "util/error.h"

namespace leanlm {

void walsh_hadamard(float* x, int n) {
  for (int len = 1; len < n; len <<= 1)
    for (int i = 0; i < n; i += 2 * len)
      for (int j = i; j < i + len; ++j) {
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
}

HeadRotation::HeadRotation(int dim) : dim_(dim), scale_(1.f / std::sqrt(float(dim))), sign_(dim) {
  if (dim <= 0 || (dim & (dim - 1)) != 0) fail(strfmt("rotation: head size %d is not a power of two", dim));
  // A fixed sequence (64-bit LCG), so every store and every run rotates the same way.
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int c = 0; c < dim; ++c) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    sign_[c] = (s >> 63) ? -1.f : 1.f;
  }
}

void HeadRotation::forward(float* x) const {
  for (int c = 0; c < dim_; ++c) x[c] *= sign_[c];
  walsh_hadamard(x, dim_);
  for (int c = 0; c < dim_; ++c) x[c] *= scale_;
}

void HeadRotation::inverse(float* x) const {
  walsh_hadamard(x, dim_);
  for (int c = 0; c < dim_; ++c) x[c] *= scale_ * sign_[c];
}

}  // namespace leanlm
