// Dispatch of the KV kernels, the query quantizer and the lane layout (shared by every ISA).
#include "kv/kv_kernels.h"

#include <algorithm>
#include <cmath>

namespace leanlm {

const KvKernels& kv_kernels(Isa isa) {
  static const IsaTables<KvKernels> tables(fill_kv_scalar, fill_kv_avx2, fill_kv_avx512);
  return tables[isa];
}

void quantize_queries(const float* x, int n, int stride, int dim, const float* mul, QuantQueries& out) {
  out.n = n, out.dim = dim;
  out.codes.resize(size_t(n) * dim);
  out.d.resize(n);
  out.sum.resize(size_t(n) * (dim / 32));
  out.bias.clear();
  thread_local std::vector<float> v;
  v.resize(dim);
  for (int i = 0; i < n; ++i) {
    const float* xi = x + size_t(i) * stride;
    float amax = 0.f;
    for (int c = 0; c < dim; ++c) {
      v[c] = mul ? xi[c] * mul[c] : xi[c];
      amax = std::max(amax, std::fabs(v[c]));
    }
    const float d = amax / 127.f, inv = amax > 0.f ? 127.f / amax : 0.f;
    out.d[i] = d;
    int8_t* q = out.codes.data() + size_t(i) * dim;
    for (int c = 0; c < dim; ++c) q[c] = int8_t(std::clamp(std::nearbyint(v[c] * inv), -127.f, 127.f));
    for (int g = 0; g < dim / 32; ++g) {
      int32_t s = 0;
      for (int c = 0; c < 32; ++c) s += q[g * 32 + c];
      out.sum[size_t(i) * (dim / 32) + g] = s;
    }
  }
}

// Channel c of a lane layout of `bits`: its column, byte within the lane, and bit offset.
static inline void lane_place(int c, int bits, int& u, int& k, int& shift) {
  const int W = 32 / bits;  // channels per column
  u = c / W;
  const int r = c % W;      // r = 4 * s + k: s picks the bit field, k the byte
  k = r % 4;
  shift = (r / 4) * bits;
}

void pack_lane_key(const uint8_t* codes, int dim, int bits, int T, int j, uint8_t* lanes) {
  for (int u = 0; u < dim * bits / 32; ++u)
    for (int k = 0; k < 4; ++k) lanes[(size_t(u) * T + j) * 4 + k] = 0;
  const int mask = bits == 8 ? 0xff : (1 << bits) - 1;
  for (int c = 0; c < dim; ++c) {
    int u, k, shift;
    lane_place(c, bits, u, k, shift);
    lanes[(size_t(u) * T + j) * 4 + k] |= uint8_t((codes[c] & mask) << shift);
  }
}

int lane_key_code(const uint8_t* lanes, int dim, int bits, int T, int j, int c) {
  int u, k, shift;
  lane_place(c, bits, u, k, shift);
  const uint8_t b = lanes[(size_t(u) * T + j) * 4 + k];
  if (bits == 8) return int(int8_t(b));
  return (b >> shift) & ((1 << bits) - 1);
}

}  // namespace leanlm
