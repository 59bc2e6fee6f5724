#include "quant/gemm.h"

#include <cstring>
#include <vector>

#include "quant/act_quant.h"
#include "quant/dot.h"
#include "quant/lq_format.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

void ActPanels::pack(const float* x, int n_tok, int n_in, int64_t x_stride, ActScheme scheme) {
  if (n_in % 32 != 0) fail("gemm: activation rows must be a multiple of 32 long");
  n_tokens = n_tok;
  n = n_in;
  n_panels = (n_tok + kPanelTokens - 1) / kPanelTokens;
  const size_t P = size_t(n_panels) * kPanelTokens;
  if (q.size() < P * n) q.resize(P * n);
  if (d.size() < P * (n / 32)) d.resize(P * (n / 32));
  if (s.size() < P * (n / 16)) s.resize(P * (n / 16));

  std::vector<int8_t> qr(n);
  std::vector<float> dr(n / 32);
  std::vector<int16_t> sr(n / 16);
  for (int t = 0; t < n_panels * kPanelTokens; ++t) {
    const int p = t / kPanelTokens, j = t % kPanelTokens;
    if (t < n_tok) {
      quantize_act_row(x + t * x_stride, n, qr.data(), dr.data(), sr.data(), scheme);
    } else {
      std::fill(qr.begin(), qr.end(), int8_t(0));
      std::fill(dr.begin(), dr.end(), 0.f);
      std::fill(sr.begin(), sr.end(), int16_t(0));
    }
    int8_t* pq = q.data() + size_t(p) * n * kPanelTokens;
    for (int k4 = 0; k4 < n / 4; ++k4) std::memcpy(pq + (size_t(k4) * kPanelTokens + j) * 4, qr.data() + 4 * k4, 4);
    float* pd = d.data() + size_t(p) * (n / 32) * kPanelTokens;
    for (int b = 0; b < n / 32; ++b) pd[b * kPanelTokens + j] = dr[b];
    float* ps = s.data() + size_t(p) * (n / 16) * kPanelTokens;
    for (int b = 0; b < n / 16; ++b) ps[b * kPanelTokens + j] = dr[b / 2] * float(sr[b]);
  }
}

bool gemm_supports(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::LQ2: case GgmlType::LQ3: case GgmlType::LQ4:
      return true;
    default:
      return false;
  }
}

int gemm_group(GgmlType t) {
  return (t == GgmlType::Q2_K || t == GgmlType::Q3_K || t == GgmlType::Q6_K) ? 16 : 32;
}

int gemm_code_bits(GgmlType t) {
  switch (t) {
    case GgmlType::Q2_K: return 2;
    case GgmlType::Q3_K: return 3;
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q4_K: return 4;
    case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q5_K: return 5;
    case GgmlType::Q6_K: return 6;
    default: return 8;
  }
}

namespace {

float h2f(uint16_t h) { return fp16_to_f32(h); }

// Each unpacker writes one row: codes c[n], and scale/offset per group (sc, off).

void unpack_q4_0(const BlockQ4_0* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i, c += 32) {
    for (int j = 0; j < 16; ++j) c[j] = b[i].qs[j] & 0xF, c[j + 16] = b[i].qs[j] >> 4;
    sc[i] = h2f(b[i].d);
    off[i] = -8.f * sc[i];
  }
}

void unpack_q4_1(const BlockQ4_1* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i, c += 32) {
    for (int j = 0; j < 16; ++j) c[j] = b[i].qs[j] & 0xF, c[j + 16] = b[i].qs[j] >> 4;
    sc[i] = h2f(b[i].d);
    off[i] = h2f(b[i].m);
  }
}

template <typename Block>
void unpack_q5(const Block* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i, c += 32) {
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      c[j] = uint8_t((b[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4));
      c[j + 16] = uint8_t((b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
    sc[i] = h2f(b[i].d);
    if constexpr (requires { b[i].m; }) off[i] = h2f(b[i].m);
    else off[i] = -16.f * sc[i];
  }
}

void unpack_q8_0(const BlockQ8_0* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i, c += 32) {
    for (int j = 0; j < 32; ++j) c[j] = uint8_t(int(b[i].qs[j]) + 128);
    sc[i] = h2f(b[i].d);
    off[i] = -128.f * sc[i];
  }
}

void unpack_q2_k(const BlockQ2_K* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    int is = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b[i].qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2)
        for (int part = 0; part < 2; ++part, ++is, c += 16) {
          for (int l = 0; l < 16; ++l) c[l] = (q[l + 16 * part] >> shift) & 3;
          *sc++ = d * float(b[i].scales[is] & 0xF);
          *off++ = -dmin * float(b[i].scales[is] >> 4);
        }
    }
  }
}

void unpack_q3_k(const BlockQ3_K* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d);
    int8_t s[16];
    unpack_q3k_scales(b[i].scales, s);
    int is = 0;
    uint8_t m = 1;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b[i].qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2, m <<= 1)
        for (int part = 0; part < 2; ++part, ++is, c += 16) {
          for (int l = 0; l < 16; ++l) {
            const int k = l + 16 * part;
            c[l] = uint8_t(((q[k] >> shift) & 3) | ((b[i].hmask[k] & m) ? 4 : 0));
          }
          *sc = d * float(s[is]);
          *off++ = -4.f * *sc++;
        }
    }
  }
}

template <bool kQ5, typename Block>
void unpack_q45_k(const Block* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int j = 0; j < 8; j += 2) {
      const uint8_t* q = b[i].qs + 16 * j;
      for (int part = 0; part < 2; ++part, c += 32) {
        for (int l = 0; l < 32; ++l) {
          int v = part ? (q[l] >> 4) : (q[l] & 0xF);
          if constexpr (kQ5) v |= ((b[i].qh[l] >> (j + part)) & 1) << 4;
          c[l] = uint8_t(v);
        }
        uint8_t s, m;
        unpack_k4_scale_min(j + part, b[i].scales, &s, &m);
        *sc++ = d * float(s);
        *off++ = -dmin * float(m);
      }
    }
  }
}

void unpack_q6_k(const BlockQ6_K* b, int nb, uint8_t* c, float* sc, float* off) {
  for (int i = 0; i < nb; ++i, c += 256) {
    const float d = h2f(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const uint8_t* qh = b[i].qh + 32 * half;
      uint8_t* y = c + 128 * half;
      for (int l = 0; l < 32; ++l) {
        y[l] = uint8_t((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
        y[l + 32] = uint8_t((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
        y[l + 64] = uint8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
        y[l + 96] = uint8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
      }
      for (int g = 0; g < 8; ++g) {
        *sc = d * float(b[i].scales[8 * half + g]);
        *off++ = -32.f * *sc++;
      }
    }
  }
}

// LQ: the codes become their levels + 128 (uint8, as Q8_0's); a group's scale is the row scale
// times its block scale.
void unpack_lq(GgmlType t, const uint8_t* row, int n, uint8_t* c, float* sc, float* off) {
  lq_unpack_codes(t, row, n, c);
  int lv[16];
  lq_level_table(t, row, lv);
  for (int j = 0; j < n; ++j) c[j] = uint8_t(lv[c[j]] + 128);
  const float s = lq_scale(t, row);
  const uint8_t* bs = lq_block_scales(t, row);
  for (int g = 0; g < n / 32; ++g) sc[g] = s * float(bs[g]), off[g] = -128.f * sc[g];
}

}  // namespace

void unpack_rows(GgmlType t, const uint8_t* w, size_t row_bytes, int nrows, int n, UnpackedRows& out) {
  if (!gemm_supports(t)) fail("gemm: no unpacker for weight type " + type_name(uint32_t(t)));
  out.n = n;
  out.rows = nrows;
  out.group = gemm_group(t);
  out.code_bits = gemm_code_bits(t);
  const int ng = n / out.group;
  if (out.codes.size() < size_t(nrows) * n) out.codes.resize(size_t(nrows) * n);
  if (out.scale.size() < size_t(nrows) * ng) {
    out.scale.resize(size_t(nrows) * ng);
    out.offset.resize(size_t(nrows) * ng);
  }
  const int nb = n / traits(t).block_elems;
  for (int r = 0; r < nrows; ++r) {
    const void* src = w + r * row_bytes;
    uint8_t* c = out.codes.data() + size_t(r) * n;
    float* sc = out.scale.data() + size_t(r) * ng;
    float* off = out.offset.data() + size_t(r) * ng;
    switch (t) {
      case GgmlType::Q4_0: unpack_q4_0(static_cast<const BlockQ4_0*>(src), nb, c, sc, off); break;
      case GgmlType::Q4_1: unpack_q4_1(static_cast<const BlockQ4_1*>(src), nb, c, sc, off); break;
      case GgmlType::Q5_0: unpack_q5(static_cast<const BlockQ5_0*>(src), nb, c, sc, off); break;
      case GgmlType::Q5_1: unpack_q5(static_cast<const BlockQ5_1*>(src), nb, c, sc, off); break;
      case GgmlType::Q8_0: unpack_q8_0(static_cast<const BlockQ8_0*>(src), nb, c, sc, off); break;
      case GgmlType::Q2_K: unpack_q2_k(static_cast<const BlockQ2_K*>(src), nb, c, sc, off); break;
      case GgmlType::Q3_K: unpack_q3_k(static_cast<const BlockQ3_K*>(src), nb, c, sc, off); break;
      case GgmlType::Q4_K: unpack_q45_k<false>(static_cast<const BlockQ4_K*>(src), nb, c, sc, off); break;
      case GgmlType::Q5_K: unpack_q45_k<true>(static_cast<const BlockQ5_K*>(src), nb, c, sc, off); break;
      case GgmlType::Q6_K: unpack_q6_k(static_cast<const BlockQ6_K*>(src), nb, c, sc, off); break;
      case GgmlType::LQ2: case GgmlType::LQ3: case GgmlType::LQ4:
        unpack_lq(t, static_cast<const uint8_t*>(src), n, c, sc, off);
        break;
      default: break;
    }
  }
}

// The reference: plain loops over the same packed data, in the same order of float additions as
// the SIMD kernel (per group: exact integer sum, then scale and offset terms).
void gemm_panels_scalar(const UnpackedRows& w, const ActPanels& x, int p_begin, int p_end, float* out,
                        int out_stride) {
  const int G = w.group, n = w.n;
  for (int p = p_begin; p < p_end; ++p) {
    const int8_t* xq = x.panel_q(p);
    const float* xd = x.panel_d(p);
    const float* xs = x.panel_s(p);
    for (int r = 0; r < w.rows; ++r) {
      const uint8_t* c = w.row_codes(r);
      float* o = out + size_t(r) * out_stride + (p - p_begin) * kPanelTokens;
      for (int j = 0; j < kPanelTokens; ++j) {
        float acc = 0.f;
        for (int g = 0; g < n / G; ++g) {
          int32_t isum = 0;
          for (int k = g * G; k < (g + 1) * G; ++k) isum += int32_t(c[k]) * xq[(size_t(k / 4) * kPanelTokens + j) * 4 + k % 4];
          const float dx = xd[(g * G / 32) * kPanelTokens + j];
          float sx = xs[(g * G / 16) * kPanelTokens + j];
          if (G == 32) sx += xs[(g * 2 + 1) * kPanelTokens + j];
          acc += float(isum) * (w.row_scale(r)[g] * dx);
          acc += w.row_offset(r)[g] * sx;
        }
        o[j] = acc;
      }
    }
  }
}

GemmPanelsFn best_gemm_kernel(GgmlType t) {
  if (!gemm_supports(t)) return nullptr;
  switch (best_isa()) {
    case Isa::Avx512: return gemm_panels_avx512;
    case Isa::Avx2: return gemm_code_bits(t) == 8 ? nullptr : gemm_panels_avx2;  // maddubs pairs of 255 x 127 saturate
    default: return nullptr;
  }
}

}  // namespace leanlm
