#include "quant/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/leanquant.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {
namespace {

float round_fp16(float x) { return fp16_to_f32_ref(f32_to_fp16_ref(x)); }
uint16_t fp16(float x) { return f32_to_fp16_ref(x); }
int clamp_round(float v, int lo, int hi) { return std::clamp(int(std::lrintf(v)), lo, hi); }

float sq_error_symmetric(const float* x, int n, float s, int lo, int hi) {
  float err = 0;
  for (int i = 0; i < n; ++i) {
    const float e = x[i] - s * clamp_round(x[i] / s, lo, hi);
    err += e * e;
  }
  return err;
}

// Symmetric codes q in [lo, hi] with x ~ s * q: the scale among a few candidates with the least
// squared error. Candidates: the largest magnitude mapped to code hi, or to lo + j for j up to half the range
// (data that already lies on a coarser grid, such as a dequantized model, is matched exactly when
// its extreme code count divides), and lo scaled by up to 15 % less (a clipped extreme traded for
// finer steps). 0 for an all-zero x. Q8_0 tries lo and lo + 1 only: at 256 levels the coarser grids
// gain nothing and would cost 64 passes per block.
float fit_symmetric(const float* x, int n, int lo, int hi) {
  float m = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(m)) m = x[i];
  if (m == 0) return 0;
  float best_s = m / lo, best_err = INFINITY;
  const auto consider = [&](float c) {
    const float s = m / c, err = sq_error_symmetric(x, n, s, lo, hi);
    if (err < best_err) best_err = err, best_s = s;
  };
  const int coarser = lo < -32 ? 1 : -lo / 2;
  for (int j = 0; j <= coarser; ++j) consider(float(lo + j));
  consider(float(hi));  // the largest magnitude on the positive extreme (exact for a grid that used it)
  for (int k = 1; k <= 6; ++k) consider(lo * (1.f - 0.025f * k));
  return best_s;
}

// Asymmetric codes q in [0, qmax] with x ~ a * q - b, a >= 0: the range [lo, hi] cut into k steps
// for k from qmax down to qmax / 2 (again matching data on a coarser grid), the best of those, then
// two rounds of least squares for (a, b) given its codes, kept where they lower the error.
// b_nonnegative: the K formats store b as an unsigned minimum (the sub-block's minimum taken as at
// most 0); Q4_1 / Q5_1 store any minimum.
void fit_affine(const float* x, int n, int qmax, bool b_nonnegative, float* a_out, float* b_out) {
  float lo = x[0], hi = x[0];
  for (int i = 0; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  if (b_nonnegative) lo = std::min(lo, 0.f);
  *b_out = -lo;
  if (hi == lo) {
    *a_out = 0;
    return;
  }
  const auto sq_error = [&](float a, float b) {
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const float e = x[i] - (a * clamp_round((x[i] + b) / a, 0, qmax) - b);
      err += e * e;
    }
    return err;
  };
  float a = (hi - lo) / qmax, b = -lo, best = sq_error(a, b);
  for (int k = qmax - 1; k >= qmax / 2; --k) {
    const float ak = (hi - lo) / k, err = sq_error(ak, b);
    if (err < best) best = err, a = ak;
  }
  for (int round = 0; round < 2; ++round) {
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      const int q = clamp_round((x[i] + b) / a, 0, qmax);
      sq += q, sqq += double(q) * q, sx += x[i], sqx += double(q) * x[i];
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) break;
    double na = (n * sqx - sq * sx) / det, nb = (sq * sqx - sqq * sx) / det;  // x ~ na q - nb
    if (b_nonnegative && nb < 0) nb = 0, na = sqq > 0 ? sqx / sqq : a;  // the minimum at 0
    if (!(na > 0)) break;
    const float err = sq_error(float(na), float(nb));
    if (!(err < best)) break;
    best = err, a = float(na), b = float(nb);
  }
  *a_out = a, *b_out = b;
}

void q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK) {
    const float d = round_fp16(fit_symmetric(x, QK, -128, 127));
    y[i].d = fp16(d);
    for (int j = 0; j < QK; ++j) y[i].qs[j] = int8_t(d ? clamp_round(x[j] / d, -128, 127) : 0);
  }
}

// Q4_0 / Q5_0: (q - 8) * d or (q - 16) * d; Q4_1 / Q5_1: q * d + m.
template <class Block, int kBits, bool kMin>
void legacy(const float* x, Block* y, int64_t nb) {
  constexpr int kMax = (1 << kBits) - 1, kOffset = kMin ? 0 : 1 << (kBits - 1);
  for (int64_t i = 0; i < nb; ++i, x += QK) {
    float d, m = 0;
    if constexpr (kMin) {
      float a, b;
      fit_affine(x, QK, kMax, false, &a, &b);
      d = round_fp16(a), m = round_fp16(-b);
      y[i].m = fp16(m);
    } else {
      d = round_fp16(fit_symmetric(x, QK, -kOffset, kMax - kOffset));
    }
    y[i].d = fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < QK / 2; ++j) {
      int q[2];
      for (int h = 0; h < 2; ++h) {
        const float v = x[j + 16 * h] - m;
        q[h] = d ? clamp_round(v / d + kOffset, 0, kMax) : kOffset;
      }
      y[i].qs[j] = uint8_t((q[0] & 0xF) | ((q[1] & 0xF) << 4));
      if constexpr (kBits == 5) qh |= uint32_t(q[0] >> 4) << j | uint32_t(q[1] >> 4) << (j + 16);
    }
    if constexpr (kBits == 5) std::memcpy(y[i].qh, &qh, 4);
  }
}

// Q4_K / Q5_K: 8 sub-blocks of 32, each x ~ d*sc*q - dmin*m with 6-bit sc, m.
template <class Block, int kBits>
void k45(const float* x, Block* y, int64_t nb) {
  constexpr int kMax = (1 << kBits) - 1;
  for (int64_t i = 0; i < nb; ++i, x += QK_K) {
    float a[8], b[8], amax = 0, bmax = 0;
    for (int j = 0; j < 8; ++j) {
      fit_affine(x + 32 * j, 32, kMax, true, &a[j], &b[j]);
      amax = std::max(amax, a[j]), bmax = std::max(bmax, b[j]);
    }
    const float d = round_fp16(amax / 63), dmin = round_fp16(bmax / 63);
    y[i].d = fp16(d), y[i].dmin = fp16(dmin);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = uint8_t(d ? clamp_round(a[j] / d, 0, 63) : 0);
      mn[j] = uint8_t(dmin ? clamp_round(b[j] / dmin, 0, 63) : 0);
    }
    uint8_t* s = y[i].scales;  // the packing unpack_k4_scale_min reads
    for (int j = 0; j < 4; ++j) s[j] = sc[j], s[j + 4] = mn[j];
    for (int j = 4; j < 8; ++j) {
      s[j + 4] = uint8_t((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
      s[j - 4] |= uint8_t((sc[j] >> 4) << 6);
      s[j] |= uint8_t((mn[j] >> 4) << 6);
    }
    uint8_t q[QK_K];
    for (int j = 0; j < 8; ++j) {
      const float step = d * sc[j], off = dmin * mn[j];
      for (int l = 0; l < 32; ++l) q[32 * j + l] = uint8_t(step ? clamp_round((x[32 * j + l] + off) / step, 0, kMax) : 0);
    }
    // 64 elements per 32 bytes: element l in the low nibble, l + 32 in the high one.
    uint8_t* qs = y[i].qs;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) qs[32 * c + l] = uint8_t((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
    if constexpr (kBits == 5) {
      std::memset(y[i].qh, 0, sizeof y[i].qh);
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l)
          y[i].qh[l] |= uint8_t(((q[64 * c + l] >> 4) << (2 * c)) | ((q[64 * c + 32 + l] >> 4) << (2 * c + 1)));
    }
  }
}

// Q6_K: 16 sub-blocks of 16, x ~ d * sc * (q - 32) with int8 sc.
void q6_k(const float* x, BlockQ6_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK_K) {
    float s[16], smax = 0;
    for (int j = 0; j < 16; ++j) {
      s[j] = fit_symmetric(x + 16 * j, 16, -32, 31);
      smax = std::max(smax, std::fabs(s[j]));
    }
    const float d = round_fp16(smax / 127);
    y[i].d = fp16(d);
    int q[QK_K];
    for (int j = 0; j < 16; ++j) {
      y[i].scales[j] = int8_t(d ? clamp_round(s[j] / d, -128, 127) : 0);
      const float step = d * y[i].scales[j];
      for (int l = 0; l < 16; ++l) q[16 * j + l] = (step ? clamp_round(x[16 * j + l] / step, -32, 31) : 0) + 32;
    }
    // Per half of 128: ql[l] holds elements l (low) and l + 64 (high), ql[l + 32] elements l + 32
    // and l + 96; qh[l] their top two bits at shifts 0, 2, 4, 6.
    for (int h = 0; h < 2; ++h) {
      const int* qq = q + 128 * h;
      uint8_t* ql = y[i].ql + 64 * h;
      uint8_t* qhp = y[i].qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = uint8_t((qq[l] & 0xF) | ((qq[l + 64] & 0xF) << 4));
        ql[l + 32] = uint8_t((qq[l + 32] & 0xF) | ((qq[l + 96] & 0xF) << 4));
        qhp[l] = uint8_t((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
      }
    }
  }
}


// The position of element e (0-255) of a Q2_K / Q3_K super-block: byte qs[byte] at bit shift, and
// for Q3_K the high bit in hmask[hbyte] at bit hbit. Elements run through halves of 128, then four
// 2-bit planes of 32, then two parts of 16 (deq_q2_k / deq_q3_k); scale index e / 16.
struct K23Place {
  int byte, shift, hbyte, hbit;
};
K23Place k23_place(int e) {
  const int half = e / 128, r = e % 128, plane = r / 32, part = (r % 32) / 16, l = r % 16;
  return {32 * half + 16 * part + l, 2 * plane, 16 * part + l, half * 4 + plane};
}

// Q2_K: 16 sub-blocks of 16, x ~ d * sc * q - dmin * m with q in 0-3 and 4-bit sc, m.
void q2_k(const float* x, BlockQ2_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK_K) {
    float a[16], b[16], amax = 0, bmax = 0;
    for (int j = 0; j < 16; ++j) {
      fit_affine(x + 16 * j, 16, 3, true, &a[j], &b[j]);
      amax = std::max(amax, a[j]), bmax = std::max(bmax, b[j]);
    }
    const float d = round_fp16(amax / 15), dmin = round_fp16(bmax / 15);
    y[i].d = fp16(d), y[i].dmin = fp16(dmin);
    std::memset(y[i].qs, 0, sizeof y[i].qs);
    for (int j = 0; j < 16; ++j) {
      const int sc = d ? clamp_round(a[j] / d, 0, 15) : 0, m = dmin ? clamp_round(b[j] / dmin, 0, 15) : 0;
      y[i].scales[j] = uint8_t(sc | (m << 4));
      const float step = d * sc, off = dmin * m;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * j + l, q = step ? clamp_round((x[e] + off) / step, 0, 3) : 0;
        const K23Place p = k23_place(e);
        y[i].qs[p.byte] |= uint8_t(q << p.shift);
      }
    }
  }
}

// Q3_K: 16 sub-blocks of 16, x ~ d * sc * (u - 4) with u in 0-7 (two low bits in qs, the third in
// hmask) and signed 6-bit sc (stored + 32, packed as unpack_q3k_scales reads them).
void q3_k(const float* x, BlockQ3_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += QK_K) {
    float s[16], big = 0;
    for (int j = 0; j < 16; ++j) {
      s[j] = fit_symmetric(x + 16 * j, 16, -4, 3);
      if (std::fabs(s[j]) > std::fabs(big)) big = s[j];
    }
    // The largest sub-block scale maps to -32 or to +31, whichever represents all sixteen better
    // (scales of both signs: -32 alone would clip an equal one of the other sign to +31).
    float d = 0, best = INFINITY;
    for (float c : {-32.f, 31.f}) {
      const float dc = round_fp16(big / c);
      float err = 0;
      for (int j = 0; j < 16; ++j) {
        const float e = dc ? s[j] - dc * clamp_round(s[j] / dc, -32, 31) : s[j];
        err += e * e;
      }
      if (err < best) best = err, d = dc;
    }
    y[i].d = fp16(d);
    std::memset(y[i].qs, 0, sizeof y[i].qs);
    std::memset(y[i].hmask, 0, sizeof y[i].hmask);
    std::memset(y[i].scales, 0, sizeof y[i].scales);
    for (int j = 0; j < 16; ++j) {
      const int sc = d ? clamp_round(s[j] / d, -32, 31) : 0;
      const int raw = sc + 32;
      if (j < 8) y[i].scales[j] |= uint8_t(raw & 0xF);
      else y[i].scales[j - 8] |= uint8_t((raw & 0xF) << 4);
      y[i].scales[8 + j % 4] |= uint8_t((raw >> 4) << (2 * (j / 4)));
      const float step = d * sc;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * j + l, u = (step ? clamp_round(x[e] / step, -4, 3) : 0) + 4;
        const K23Place p = k23_place(e);
        y[i].qs[p.byte] |= uint8_t((u & 3) << p.shift);
        if (u & 4) y[i].hmask[p.hbyte] |= uint8_t(1 << p.hbit);
      }
    }
  }
}

}  // namespace

bool can_quantize(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0: case GgmlType::Q4_0:
    case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q2_K: case GgmlType::Q3_K:
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::LQ2: case GgmlType::LQ3: case GgmlType::LQ4:
      return true;
    default:
      return false;
  }
}

void quantize_row(GgmlType t, const float* x, void* dst, int64_t n) {
  const TypeTraits* tr = type_traits(uint32_t(t));
  if (!tr || !can_quantize(t)) fail("quantize: cannot write type " + type_name(uint32_t(t)));
  if (n % tr->block_elems) fail(strfmt("quantize: a row of %lld is not whole %s blocks", (long long)n, tr->name));
  const int64_t nb = n / tr->block_elems;
  auto* out = static_cast<uint8_t*>(dst);
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, x, size_t(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = fp16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q8_0: return q8_0(x, static_cast<BlockQ8_0*>(dst), nb);
    case GgmlType::Q4_0: return legacy<BlockQ4_0, 4, false>(x, static_cast<BlockQ4_0*>(dst), nb);
    case GgmlType::Q4_1: return legacy<BlockQ4_1, 4, true>(x, static_cast<BlockQ4_1*>(dst), nb);
    case GgmlType::Q5_0: return legacy<BlockQ5_0, 5, false>(x, static_cast<BlockQ5_0*>(dst), nb);
    case GgmlType::Q5_1: return legacy<BlockQ5_1, 5, true>(x, static_cast<BlockQ5_1*>(dst), nb);
    case GgmlType::Q2_K: return q2_k(x, static_cast<BlockQ2_K*>(dst), nb);
    case GgmlType::Q3_K: return q3_k(x, static_cast<BlockQ3_K*>(dst), nb);
    case GgmlType::Q4_K: return k45<BlockQ4_K, 4>(x, static_cast<BlockQ4_K*>(dst), nb);
    case GgmlType::Q5_K: return k45<BlockQ5_K, 5>(x, static_cast<BlockQ5_K*>(dst), nb);
    case GgmlType::Q6_K: return q6_k(x, static_cast<BlockQ6_K*>(dst), nb);
    case GgmlType::LQ2: case GgmlType::LQ3: case GgmlType::LQ4:  // no Hessian: k-means and nearest level
      return lq_quantize_matrix(t, x, 1, int(n), identity_factor(int(n)), LeanQuantOptions{}, out);
    default: break;
  }
}

}  // namespace leanlm
