// Scalar reference dot products.
//
// Each weight block is decoded to integer codes u and, per 16 elements, a float scale a and offset
// b, so that weight = a*u + b. The dot with an int8 activation block (scale xd, codes q) is then
//   xd * sum_16groups (a * sum(u*q) + b * sum(q)),
// which is exactly what the SIMD kernels compute, in a different order.
#include <cstring>

#include "quant/dot.h"
#include "quant/lq_format.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

float h2f(uint16_t h) { return fp16_to_f32_ref(h); }

struct Decoded {
  int u[256];
  float a[16];
  float b[16];
};

// Fills codes/scales for one block of `type`; returns elements in the block.
int decode_block(GgmlType type, const uint8_t* blk, Decoded& o) {
  switch (type) {
    case GgmlType::Q4_0: {
      auto* b = reinterpret_cast<const BlockQ4_0*>(blk);
      for (int j = 0; j < 16; ++j) { o.u[j] = b->qs[j] & 0xF; o.u[j + 16] = b->qs[j] >> 4; }
      const float d = h2f(b->d);
      o.a[0] = o.a[1] = d;
      o.b[0] = o.b[1] = -8.f * d;
      return 32;
    }
    case GgmlType::Q4_1: {
      auto* b = reinterpret_cast<const BlockQ4_1*>(blk);
      for (int j = 0; j < 16; ++j) { o.u[j] = b->qs[j] & 0xF; o.u[j + 16] = b->qs[j] >> 4; }
      o.a[0] = o.a[1] = h2f(b->d);
      o.b[0] = o.b[1] = h2f(b->m);
      return 32;
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool q51 = type == GgmlType::Q5_1;
      const uint8_t* qh_p = blk + (q51 ? 4 : 2);
      const uint8_t* qs = qh_p + 4;
      uint32_t qh;
      std::memcpy(&qh, qh_p, 4);
      for (int j = 0; j < 16; ++j) {
        o.u[j] = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
        o.u[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      }
      uint16_t dh, mh = 0;
      std::memcpy(&dh, blk, 2);
      if (q51) std::memcpy(&mh, blk + 2, 2);
      const float d = h2f(dh);
      o.a[0] = o.a[1] = d;
      o.b[0] = o.b[1] = q51 ? h2f(mh) : -16.f * d;
      return 32;
    }
    case GgmlType::Q8_0: {
      auto* b = reinterpret_cast<const BlockQ8_0*>(blk);
      for (int j = 0; j < 32; ++j) o.u[j] = b->qs[j];
      o.a[0] = o.a[1] = h2f(b->d);
      o.b[0] = o.b[1] = 0.f;
      return 32;
    }
    case GgmlType::Q2_K: {
      auto* b = reinterpret_cast<const BlockQ2_K*>(blk);
      const float d = h2f(b->d), dmin = h2f(b->dmin);
      int k = 0, is = 0;
      for (int half = 0; half < 2; ++half)
        for (int shift = 0; shift < 8; shift += 2)
          for (int part = 0; part < 2; ++part, ++is) {
            o.a[is] = d * float(b->scales[is] & 0xF);
            o.b[is] = -dmin * float(b->scales[is] >> 4);
            for (int l = 0; l < 16; ++l) o.u[k++] = (b->qs[32 * half + 16 * part + l] >> shift) & 3;
          }
      return 256;
    }
    case GgmlType::Q3_K: {
      auto* b = reinterpret_cast<const BlockQ3_K*>(blk);
      const float d = h2f(b->d);
      int8_t sc[16];
      unpack_q3k_scales(b->scales, sc);
      int k = 0, is = 0;
      uint8_t m = 1;
      for (int half = 0; half < 2; ++half)
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
          for (int part = 0; part < 2; ++part, ++is) {
            o.a[is] = d * float(sc[is]);
            o.b[is] = -4.f * o.a[is];
            for (int l = 0; l < 16; ++l) {
              const int idx = 16 * part + l;
              o.u[k++] = ((b->qs[32 * half + idx] >> shift) & 3) | ((b->hmask[idx] & m) ? 4 : 0);
            }
          }
      return 256;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool q5 = type == GgmlType::Q5_K;
      uint16_t dh, mh;
      std::memcpy(&dh, blk, 2);
      std::memcpy(&mh, blk + 2, 2);
      const float d = h2f(dh), dmin = h2f(mh);
      const uint8_t* scales = blk + 4;
      const uint8_t* qh = blk + 16;
      const uint8_t* qs = blk + 16 + (q5 ? 32 : 0);
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, mn;
        unpack_k4_scale_min(j, scales, &sc, &mn);
        o.a[2 * j] = o.a[2 * j + 1] = d * sc;
        o.b[2 * j] = o.b[2 * j + 1] = -dmin * mn;
        const uint8_t* q = qs + 32 * (j / 2);
        for (int l = 0; l < 32; ++l) {
          int v = (j % 2) ? (q[l] >> 4) : (q[l] & 0xF);
          if (q5 && (qh[l] >> j) & 1) v += 16;
          o.u[32 * j + l] = v;
        }
      }
      return 256;
    }
    case GgmlType::Q6_K: {
      auto* b = reinterpret_cast<const BlockQ6_K*>(blk);
      const float d = h2f(b->d);
      for (int half = 0; half < 2; ++half) {
        const uint8_t* ql = b->ql + 64 * half;
        const uint8_t* qh = b->qh + 32 * half;
        int* u = o.u + 128 * half;
        for (int l = 0; l < 32; ++l) {
          u[l] = (ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4);
          u[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
          u[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
          u[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
      }
      for (int is = 0; is < 16; ++is) {
        o.a[is] = d * float(b->scales[is]);
        o.b[is] = -32.f * o.a[is];
      }
      return 256;
    }
    default: return 0;
  }
}

float dot_row_q(GgmlType type, int n, const uint8_t* w, const ActRow& x) {
  const int bytes = traits(type).block_bytes;
  Decoded dec;
  float sum = 0.f;
  for (int base = 0; base < n;) {
    const int ne = decode_block(type, w, dec);
    w += bytes;
    for (int g = 0; g < ne / 16; ++g) {
      const int e0 = base + 16 * g;
      int isum = 0;
      for (int l = 0; l < 16; ++l) isum += dec.u[16 * g + l] * x.q[e0 + l];
      const float xd = x.d[e0 / 32];
      sum += xd * (dec.a[g] * float(isum) + dec.b[g] * float(x.sum16[e0 / 16]));
    }
    base += ne;
  }
  return sum;
}

// LQ rows: per 32-block the exact integer sum of level[code] * activation code, times the block's
// activation scale and block scale, summed, then the row's scale.
float dot_row_lq(GgmlType type, int n, const uint8_t* w, const ActRow& x) {
  int lv[16];
  lq_level_table(type, w, lv);
  const uint8_t* bs = lq_block_scales(type, w);
  uint8_t c[32];
  float sum = 0.f;
  for (int base = 0; base < n; base += 32) {
    lq_unpack_block(type, w, n, base / 32, c);
    int isum = 0;
    for (int l = 0; l < 32; ++l) isum += lv[c[l]] * x.q[base + l];
    sum += (x.d[base / 32] * float(bs[base / 32])) * float(isum);
  }
  return lq_scale(type, w) * sum;
}

template <GgmlType T>
void dot_rows_lq(int n, const void* w, size_t row_bytes, int nrows, const ActRow& x, float* out) {
  for (int r = 0; r < nrows; ++r) out[r] = dot_row_lq(T, n, static_cast<const uint8_t*>(w) + r * row_bytes, x);
}

template <GgmlType T>
void dot_rows_q(int n, const void* w, size_t row_bytes, int nrows, const ActRow& x, float* out) {
  for (int r = 0; r < nrows; ++r)
    out[r] = dot_row_q(T, n, static_cast<const uint8_t*>(w) + r * row_bytes, x);
}

template <GgmlType T>
void dot_rows_f(int n, const void* w, size_t row_bytes, int nrows, const float* x, float* out) {
  for (int r = 0; r < nrows; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(w) + r * row_bytes;
    float sum = 0.f;
    for (int i = 0; i < n; ++i) {
      float wi;
      if constexpr (T == GgmlType::F32) std::memcpy(&wi, row + 4 * i, 4);
      else {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        wi = T == GgmlType::F16 ? h2f(h) : bf16_to_f32(h);
      }
      sum += wi * x[i];
    }
    out[r] = sum;
  }
}

}  // namespace

void fill_scalar_table(DotTable& t) {
#define Q(T) t.q[int(GgmlType::T)] = dot_rows_q<GgmlType::T>
  Q(Q4_0); Q(Q4_1); Q(Q5_0); Q(Q5_1); Q(Q8_0); Q(Q2_K); Q(Q3_K); Q(Q4_K); Q(Q5_K); Q(Q6_K);
#undef Q
  t.q[int(GgmlType::LQ2)] = dot_rows_lq<GgmlType::LQ2>;
  t.q[int(GgmlType::LQ3)] = dot_rows_lq<GgmlType::LQ3>;
  t.q[int(GgmlType::LQ4)] = dot_rows_lq<GgmlType::LQ4>;
  t.f[int(GgmlType::F32)] = dot_rows_f<GgmlType::F32>;
  t.f[int(GgmlType::F16)] = dot_rows_f<GgmlType::F16>;
  t.f[int(GgmlType::BF16)] = dot_rows_f<GgmlType::BF16>;
}

}  // namespace leanlm
