// Rotation before quantization: an orthogonal transform per KV head, R = H S / sqrt(D), with H the
// Walsh-Hadamard matrix and S a fixed random sign vector. Keys, values and queries are rotated;
// q . k = (Rq) . (Rk) in exact arithmetic, and attention's output is rotated back (R^T = S H / sqrt(D)).
// Rotation spreads outlier channels over the whole head, so a per-token or per-channel grid fits the
// values better (QuaRot and llama.cpp's quantized caches use the same idea).
#pragma once
#include <vector>

namespace leanlm {

class HeadRotation {
 public:
  explicit HeadRotation(int dim);  // dim: a power of two
  int dim() const { return dim_; }
  void forward(float* x) const;    // x <- R x, in place
  void inverse(float* x) const;    // x <- R^T x, in place

 private:
  int dim_;
  float scale_;              // 1 / sqrt(dim)
  std::vector<float> sign_;  // S: +1 or -1 per channel, fixed
};

// Fast Walsh-Hadamard transform of x[0..n) in place (unnormalised), n a power of two.
void walsh_hadamard(float* x, int n);

}  // namespace leanlm
