// The KV kernels written once over a vector type S (kv_kernels_avx2.cc: 8 lanes of AVX2,
// kv_kernels_avx512.cc: 16 lanes of AVX-512 with VNNI), each included in exactly one translation
// unit compiled with its ISA's flags. S provides:
//   N; F (float vector), I (int vector); zero, set1, loadu, load_h (N fp16), storeu, fmadd, add,
//   mul, max, hmax, hsum, sum4 (four horizontal sums); loadi (N lanes of 4 bytes), set1i, andi,
//   srli<n>, slli<n>, addi, subi, cvt, abs, store_i8 (round to int8, saturating); load_u8 (N bytes
//   zero-extended to int lanes), widen_u8 (the same from a register), gather (N floats by int
//   index); M (a lane mask), nonzero, mask_or, bits (bit l: lane l), keep (zero outside the mask);
//   dot_u8 / dot_s8 (acc += 4-way byte dot products: unsigned codes / int8 codes times int8 query
//   bytes) with kS8Zero, the offset dot_s8 adds to every code; pair_unit<B> (the 32 codes of a value
//   unit of two tokens -> 32 / N vectors of int16 pairs, one per channel, channels in order),
//   dot_i16 (acc += 2-way int16 dot products), store_i16; exp; kQtRows, kQtAccum (query rows per
//   register tile).
// Every function here has a plain reference in kv_kernels_scalar.cc with the same contract.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kv/kv_kernels.h"
#include "util/fp16.h"

namespace leanlm {
namespace kv_simd {

// Stores lanes [a, b) of v to p[a - a0 ...]: the part of a token vector inside the range asked for.
template <class S>
inline void store_lanes(float* p, typename S::F v, int a, int b) {
  if (a == 0 && b == S::N) {
    S::storeu(p, v);
    return;
  }
  alignas(64) float t[S::N];
  S::storeu(t, v);
  for (int l = a; l < b; ++l) p[l - a] = t[l];
}

// Calls f.template operator()<QT>(i) over [0, n) in tiles of QTMAX rows, then one smaller tile for
// the rest (decode's 3 or 6 query heads per KV head stay in one pass over the cache).
template <int QTMAX, typename Fn>
inline void for_tiles(int n, Fn&& f) {
  int i = 0;
  for (; i + QTMAX <= n; i += QTMAX) f.template operator()<QTMAX>(i);
  switch (n - i) {
    case 3: if constexpr (QTMAX > 3) f.template operator()<3>(i); break;
    case 2: if constexpr (QTMAX > 2) f.template operator()<2>(i); break;
    case 1: if constexpr (QTMAX > 1) f.template operator()<1>(i); break;
    default: break;
  }
}

// Lanes where any of the QT weight vectors is nonzero (masked and empty slots weigh exactly 0).
template <class S, int QT>
inline typename S::M nonzero_lanes(const typename S::F (&w)[QT]) {
  typename S::M m = S::nonzero(w[0]);
  for (int t = 1; t < QT; ++t) m = S::mask_or(m, S::nonzero(w[t]));
  return m;
}

// n <= N elements (float or fp16) from p as floats, zero-padded.
template <class S, typename T>
inline typename S::F load_part(const T* p, int n) {
  if (n == S::N) return S::load(p);
  alignas(64) T t[S::N] = {};
  for (int l = 0; l < n; ++l) t[l] = p[l];
  return S::load(t);
}

// ---- token-major rows --------------------------------------------------------------------------

// QT query rows against 4 tokens: each key vector is loaded (and converted) once for all QT rows.
template <class S, int QT, typename T>
inline void rows_scores_tile(const T* const r[4], int dim, const float* q, int qs, float* out, int os, int ns) {
  using F = typename S::F;
  F a[QT][4];
  for (int t = 0; t < QT; ++t)
    for (int k = 0; k < 4; ++k) a[t][k] = S::zero();
  for (int c = 0; c < dim; c += S::N) {
    const F k0 = S::load(r[0] + c), k1 = S::load(r[1] + c), k2 = S::load(r[2] + c), k3 = S::load(r[3] + c);
    for (int t = 0; t < QT; ++t) {
      const F x = S::loadu(q + size_t(t) * qs + c);
      a[t][0] = S::fmadd(x, k0, a[t][0]), a[t][1] = S::fmadd(x, k1, a[t][1]);
      a[t][2] = S::fmadd(x, k2, a[t][2]), a[t][3] = S::fmadd(x, k3, a[t][3]);
    }
  }
  for (int t = 0; t < QT; ++t) {
    alignas(16) float s[4];
    S::sum4(a[t][0], a[t][1], a[t][2], a[t][3], s);
    for (int k = 0; k < ns; ++k) out[size_t(t) * os + k] = s[k];
  }
}

template <class S, typename T>
void rows_scores(const T* rows, size_t stride, int n, int dim, const float* q, int nq, int qs, float* out, int os) {
  constexpr int QT = S::kQtRows;
  for (int jb = 0; jb < n; jb += 4) {
    const int ns = std::min(4, n - jb);
    const T* r[4];
    for (int k = 0; k < 4; ++k) r[k] = rows + size_t(jb + std::min(k, ns - 1)) * stride;
    int i = 0;
    for (; i + QT <= nq; i += QT) rows_scores_tile<S, QT>(r, dim, q + size_t(i) * qs, qs, out + size_t(i) * os + jb, os, ns);
    for (; i < nq; ++i) rows_scores_tile<S, 1>(r, dim, q + size_t(i) * qs, qs, out + size_t(i) * os + jb, os, ns);
  }
}

// QT query rows, NV vectors of channels from c0: the outputs stay in registers while the rows
// stream by; rows whose weights are all zero (masked slots) are skipped, N rows per mask test.
// load(j, x) puts row j's NV vectors of channels from c0 into x.
template <class S, int QT, int NV, typename Load>
inline void accum_tile(int n, int c0, const float* w, int ws, float* out, int os, Load&& load) {
  using F = typename S::F;
  F acc[QT][NV];
  for (int t = 0; t < QT; ++t)
    for (int v = 0; v < NV; ++v) acc[t][v] = S::loadu(out + size_t(t) * os + c0 + v * S::N);
  for (int jc = 0; jc < n; jc += S::N) {
    const int m = std::min(S::N, n - jc);
    F wv[QT];
    for (int t = 0; t < QT; ++t) wv[t] = load_part<S>(w + size_t(t) * ws + jc, m);
    for (unsigned live = S::bits(nonzero_lanes<S, QT>(wv)); live; live &= live - 1) {
      const int j = jc + __builtin_ctz(live);
      F x[NV];
      load(j, x);
      for (int t = 0; t < QT; ++t) {
        const F b = S::set1(w[size_t(t) * ws + j]);
        for (int v = 0; v < NV; ++v) acc[t][v] = S::fmadd(b, x[v], acc[t][v]);
      }
    }
  }
  for (int t = 0; t < QT; ++t)
    for (int v = 0; v < NV; ++v) S::storeu(out + size_t(t) * os + c0 + v * S::N, acc[t][v]);
}

template <class S, int QT, int NV, typename T>
inline void rows_accum_tile(const T* rows, size_t stride, int n, int c0, const float* w, int ws, float* out, int os) {
  accum_tile<S, QT, NV>(n, c0, w, ws, out, os, [&](int j, typename S::F* x) {
    const T* r = rows + size_t(j) * stride + c0;
    for (int v = 0; v < NV; ++v) x[v] = S::load(r + v * S::N);
  });
}

template <class S, typename T>
void rows_accum(const T* rows, size_t stride, int n, int dim, const float* w, int nq, int ws, float* out, int os) {
  for_tiles<S::kQtAccum>(nq, [&]<int QT>(int i) {
    const float* wi = w + size_t(i) * ws;
    float* oi = out + size_t(i) * os;
    int c = 0;
    for (; c + 4 * S::N <= dim; c += 4 * S::N) rows_accum_tile<S, QT, 4>(rows, stride, n, c, wi, ws, oi, os);
    for (; c < dim; c += S::N) rows_accum_tile<S, QT, 1>(rows, stride, n, c, wi, ws, oi, os);
  });
}

// ---- transposed fp16 keys ------------------------------------------------------------------------

// QT query rows, 2N tokens from jb: per channel, two vectors of keys and one broadcast per row.
template <class S, int QT>
inline void tkeys_tile(const uint16_t* kt, int ld, int jb, int j0, int j1, int dim, const float* q, int qs, float* out,
                       int os) {
  using F = typename S::F;
  F a[QT][2];
  for (int t = 0; t < QT; ++t) a[t][0] = a[t][1] = S::zero();
  const uint16_t* k = kt + jb;
  for (int c = 0; c < dim; ++c, k += ld) {
    const F k0 = S::load_h(k), k1 = S::load_h(k + S::N);
    for (int t = 0; t < QT; ++t) {
      const F x = S::set1(q[size_t(t) * qs + c]);
      a[t][0] = S::fmadd(x, k0, a[t][0]), a[t][1] = S::fmadd(x, k1, a[t][1]);
    }
  }
  for (int t = 0; t < QT; ++t)
    for (int h = 0; h < 2; ++h) {
      const int b = jb + h * S::N, lo = std::max(j0, b), hi = std::min(j1, b + S::N);
      if (lo < hi) store_lanes<S>(out + size_t(t) * os + (lo - j0), a[t][h], lo - b, hi - b);
    }
}

template <class S>
void tkeys_scores(const uint16_t* kt, int ld, int j0, int j1, int dim, const float* q, int nq, int qs, float* out,
                  int os) {
  for (int jb = j0 / (2 * S::N) * (2 * S::N); jb < j1; jb += 2 * S::N)
    for_tiles<4>(nq, [&]<int QT>(int i) {
      tkeys_tile<S, QT>(kt, ld, jb, j0, j1, dim, q + size_t(i) * qs, qs, out + size_t(i) * os, os);
    });
}

// ---- lane keys: integer scores ---------------------------------------------------------------------

// Field s of every lane: 4 consecutive channels as bytes.
template <class S, int B, int s>
inline typename S::I lane_field(typename S::I w) {
  if constexpr (B == 8) return w;
  else if constexpr (B == 4) return S::andi(s == 0 ? w : S::template srli<4>(w), S::set1i(0x0F0F0F0F));
  else return S::andi(s == 0 ? w : S::template srli<2 * s>(w), S::set1i(0x03030303));
}

// The query rows of one tile: int8 codes, scale, bias, and (for offset codes) sums per 32 channels.
template <int QT>
struct QueryTile {
  const int8_t* q[QT];
  float d[QT];
  float bias[QT];
  const int32_t* sum[QT];  // [dim / 32], or null when no code has an offset
};

template <class S, int B, int s, int QT>
inline void lane_dots(typename S::I w, const QueryTile<QT>& qt, int c, typename S::I (&acc)[QT]) {
  const typename S::I a = lane_field<S, B, s>(w);
  for (int t = 0; t < QT; ++t) {
    int32_t quad;
    std::memcpy(&quad, qt.q[t] + c + 4 * s, 4);
    if constexpr (B == 8) acc[t] = S::dot_s8(acc[t], a, S::set1i(quad));
    else acc[t] = S::dot_u8(acc[t], a, S::set1i(quad));
  }
}

// N tokens from jb (a multiple of N) against QT query rows; stores the lanes inside [j0, j1).
template <class S, int B, int QT>
inline void lane_tile(const LaneKeys& k, int jb, int j0, int j1, int dim, const QueryTile<QT>& qt, float* out, int os) {
  using F = typename S::F;
  using I = typename S::I;
  constexpr int W = 32 / B;  // channels per column
  const int group = k.scale ? 32 : dim, ng = dim / group;
  const int zero = k.zero + (B == 8 ? S::kS8Zero : 0);
  F score[QT];
  for (int t = 0; t < QT; ++t) score[t] = S::zero();
  for (int g = 0; g < ng; ++g) {
    I acc[QT];
    for (int t = 0; t < QT; ++t) acc[t] = S::set1i(0);
    for (int u = g * group / W; u < (g + 1) * group / W; ++u) {
      const I w = S::loadi(k.codes + (size_t(u) * k.T + jb) * 4);
      const int c = u * W;
      lane_dots<S, B, 0>(w, qt, c, acc);
      if constexpr (B <= 4) lane_dots<S, B, 1>(w, qt, c, acc);
      if constexpr (B == 2) lane_dots<S, B, 2>(w, qt, c, acc), lane_dots<S, B, 3>(w, qt, c, acc);
    }
    const F d = k.scale ? S::load_h(k.scale + size_t(g) * k.T + jb) : S::set1(1.f);
    for (int t = 0; t < QT; ++t) {
      I a = acc[t];
      if (zero) {
        int32_t qsum = 0;  // the row's code sum over this group
        for (int h = g * group / 32; h < (g + 1) * group / 32; ++h) qsum += qt.sum[t][h];
        a = S::subi(a, S::set1i(zero * qsum));
      }
      score[t] = S::fmadd(d, S::cvt(a), score[t]);
    }
  }
  const int lo = std::max(j0, jb), hi = std::min(j1, jb + S::N);
  for (int t = 0; t < QT; ++t) {
    const F r = S::fmadd(score[t], S::set1(qt.d[t]), S::set1(qt.bias[t]));
    store_lanes<S>(out + size_t(t) * os + (lo - j0), r, lo - jb, hi - jb);
  }
}

template <class S, int B>
void lane_scores_bits(const LaneKeys& k, int j0, int j1, int dim, const QuantQueries& q, float* out, int os) {
  for_tiles<4>(q.n, [&]<int QT>(int i) {
    QueryTile<QT> qt;
    for (int t = 0; t < QT; ++t) {
      qt.q[t] = q.codes.data() + size_t(i + t) * dim;
      qt.d[t] = q.d[i + t];
      qt.bias[t] = q.bias.empty() ? 0.f : q.bias[i + t];
      qt.sum[t] = q.sum.data() + size_t(i + t) * (dim / 32);
    }
    for (int jb = j0 / S::N * S::N; jb < j1; jb += S::N) lane_tile<S, B, QT>(k, jb, j0, j1, dim, qt, out + size_t(i) * os, os);
  });
}

template <class S>
void lane_scores(const LaneKeys& k, int j0, int j1, int dim, const QuantQueries& q, float* out, int os) {
  if (k.bits == 2) lane_scores_bits<S, 2>(k, j0, j1, dim, q, out, os);
  else if (k.bits == 4) lane_scores_bits<S, 4>(k, j0, j1, dim, q, out, os);
  else lane_scores_bits<S, 8>(k, j0, j1, dim, q, out, os);
}

// One query row times per-channel factors, quantized to int8 exactly as quantize_queries does it
// (the same float products, maximum and round-to-nearest-even); returns the scale.
template <class S>
inline float quantize_scaled_row(const float* x, const uint16_t* mul, int dim, int8_t* out) {
  using F = typename S::F;
  alignas(64) float v[512];
  F amax = S::zero();
  for (int c = 0; c < dim; c += S::N) {
    const F p = S::mul(S::loadu(x + c), S::load_h(mul + c));
    S::storeu(v + c, p);
    amax = S::max(amax, S::abs(p));
  }
  const float am = S::hmax(amax);
  const F inv = S::set1(am > 0.f ? 127.f / am : 0.f);
  for (int c = 0; c < dim; c += S::N) S::store_i8(out + c, S::mul(S::loadu(v + c), inv));
  return am / 127.f;
}

template <class S, int B>
void kivi_key_scores_bits(const LaneKeys& k, const uint16_t* scale, const uint16_t* min, int j0, int j1, int dim,
                          const float* q, int nq, int qs, float* out, int os) {
  for_tiles<4>(nq, [&]<int QT>(int i) {
    alignas(64) int8_t codes[QT][512];
    QueryTile<QT> qt;
    for (int t = 0; t < QT; ++t) {
      const float* x = q + size_t(i + t) * qs;
      qt.q[t] = codes[t];
      qt.d[t] = quantize_scaled_row<S>(x, scale, dim, codes[t]);
      typename S::F b = S::zero();
      for (int c = 0; c < dim; c += S::N) b = S::fmadd(S::loadu(x + c), S::load_h(min + c), b);
      qt.bias[t] = S::hsum(b);
      qt.sum[t] = nullptr;
    }
    for (int jb = j0 / S::N * S::N; jb < j1; jb += S::N) lane_tile<S, B, QT>(k, jb, j0, j1, dim, qt, out + size_t(i) * os, os);
  });
}

template <class S>
void kivi_key_scores(const LaneKeys& k, const uint16_t* scale, const uint16_t* min, int j0, int j1, int dim,
                     const float* q, int nq, int qs, float* out, int os) {
  if (k.bits == 2) kivi_key_scores_bits<S, 2>(k, scale, min, j0, j1, dim, q, nq, qs, out, os);
  else kivi_key_scores_bits<S, 4>(k, scale, min, j0, j1, dim, q, nq, qs, out, os);
}

// ---- code rows: values accumulated on their codes ------------------------------------------------
//
// Per query row and scale group, the coefficients cf_j = w_j * scale_jg of the call's tokens are
// rounded to int16 with one step per (row, group), dq = max_j |cf_j| / 32767. Tokens go in pairs
// (j0, j0 + 1), (j0 + 2, j0 + 3), ... (an odd count pairs the last with a row of zeros): the two
// int16 coefficients of a pair are one int32, and S::pair_unit interleaves the pair's codes per
// channel, so that 2-way int16 dot products (vpdpwssd, vpmaddwd) add both tokens to each channel at
// once, exactly. The sum of weight * (min - zero * scale) is kept in float per (row, group) and
// added at the end. The result differs from the float computation only by the coefficients'
// rounding: at most dq / 2 per token and code unit.

constexpr int kMaxCallTokens = 256;  // tokens per code_accum call (one block of at most 256)

// What a tile of QT rows needs for its tokens: pair coefficients, steps and bias per (row, group),
// and which pairs any row weighs at all.
template <int QT>
struct PairCoefs {
  alignas(64) int16_t cq[QT][8][kMaxCallTokens + 64];  // [row][group][token], int32 per pair
  float dq[QT][8];
  float bias[QT][8];
  uint64_t live[kMaxCallTokens / 128 + 1];  // bit p: pair p has a nonzero weight
};

template <class S, int QT>
inline void pair_coefs(const CodeRows& v, int n, int ng, const float* w, int ws, PairCoefs<QT>& pc) {
  using F = typename S::F;
  const int ne = (n + 1) / 2 * 2;
  for (auto& l : pc.live) l = 0;
  for (int g = 0; g < ng; ++g) {
    alignas(64) float cf[QT][kMaxCallTokens + 16];
    F amax[QT], bias[QT];
    for (int t = 0; t < QT; ++t) amax[t] = bias[t] = S::zero();
    for (int k = 0; k < ne; k += S::N) {
      const int m = std::max(0, std::min(S::N, n - k));
      F wv[QT];
      for (int t = 0; t < QT; ++t) wv[t] = load_part<S>(w + size_t(t) * ws + k, m);
      const typename S::M live = nonzero_lanes<S, QT>(wv);
      // Lanes of slots that no row weighs are cleared: an empty slot's scale may be any bits.
      const F sg = S::keep(load_part<S>(v.scale + g * v.scale_stride + k, m), live);
      F mg = v.min ? S::keep(load_part<S>(v.min + g * v.scale_stride + k, m), live) : S::zero();
      if (v.zero) mg = S::fmadd(sg, S::set1(-float(v.zero)), mg);
      for (int t = 0; t < QT; ++t) {
        const F c = S::mul(wv[t], sg);
        S::storeu(cf[t] + k, c);
        amax[t] = S::max(amax[t], S::abs(c));
        bias[t] = S::fmadd(wv[t], mg, bias[t]);
      }
      if (g == 0) {  // pair p is live when either of its tokens is
        const unsigned bits = S::bits(live);
        const uint64_t pairs = _pext_u32(bits | bits >> 1, 0x55555555u);
        pc.live[k / 128] |= pairs << (k / 2 % 64);
      }
    }
    for (int t = 0; t < QT; ++t) {
      const float am = S::hmax(amax[t]);
      pc.dq[t][g] = am / 32767.f;
      pc.bias[t][g] = S::hsum(bias[t]);
      const F inv = S::set1(am > 1e-30f ? 32767.f / am : 0.f);  // no infinite step for tiny weights
      for (int k = 0; k < ne; k += S::N) S::store_i16(pc.cq[t][g] + k, S::mul(S::loadu(cf[t] + k), inv));
    }
  }
}

// QT query rows, units [u0, u0 + NU) of 32 channels, over the call's token pairs.
template <class S, int B, int QT, int NU>
inline void code_tile(const CodeRows& v, int n, int u0, const PairCoefs<QT>& pc, float* out, int os) {
  using I = typename S::I;
  using F = typename S::F;
  constexpr int VPU = 32 / S::N;  // vectors of channel pairs per unit
  constexpr int kUnitBytes = 32 * B / 8;
  alignas(64) static const uint8_t zeros[256 * B / 8] = {};
  I acc[QT][NU * VPU];
  for (int t = 0; t < QT; ++t)
    for (int x = 0; x < NU * VPU; ++x) acc[t][x] = S::set1i(0);
  int g[NU];
  for (int uu = 0; uu < NU; ++uu) g[uu] = (u0 + uu) * 32 / v.group;
  const int pairs = (n + 1) / 2;
  for (int wi = 0; wi * 64 < pairs; ++wi)
    for (uint64_t live = pc.live[wi]; live; live &= live - 1) {
      const int p = wi * 64 + __builtin_ctzll(live);
      const uint8_t* ra = v.codes + size_t(2 * p) * v.stride + size_t(u0) * kUnitBytes;
      const uint8_t* rb = 2 * p + 1 < n ? ra + v.stride : zeros;
      for (int uu = 0; uu < NU; ++uu) {
        I x[VPU];
        S::template pair_unit<B>(ra + uu * kUnitBytes, rb + (rb == zeros ? 0 : uu * kUnitBytes), x);
        for (int t = 0; t < QT; ++t) {
          int32_t c32;
          std::memcpy(&c32, pc.cq[t][g[uu]] + 2 * p, 4);
          const I c = S::set1i(c32);
          for (int e = 0; e < VPU; ++e) acc[t][uu * VPU + e] = S::dot_i16(acc[t][uu * VPU + e], x[e], c);
        }
      }
    }
  for (int t = 0; t < QT; ++t)
    for (int uu = 0; uu < NU; ++uu) {
      const F d = S::set1(pc.dq[t][g[uu]]), b = S::set1(pc.bias[t][g[uu]]);
      for (int e = 0; e < VPU; ++e) {
        float* o = out + size_t(t) * os + size_t(u0 + uu) * 32 + e * S::N;
        S::storeu(o, S::add(S::loadu(o), S::fmadd(S::cvt(acc[t][uu * VPU + e]), d, b)));
      }
    }
}

template <class S, int B>
void code_accum_bits(const CodeRows& v, int n, int dim, const float* w, int nq, int ws, float* out, int os) {
  constexpr int NU = S::N == 16 ? 2 : 1;  // 4 vectors of channel pairs per query row
  const int ng = dim / v.group;
  for (int j = 0; j < n; j += kMaxCallTokens) {  // longer runs than a block go in pieces
    const int m = std::min(kMaxCallTokens, n - j);
    CodeRows vj = v;
    vj.codes += size_t(j) * v.stride, vj.scale += j;
    if (vj.min) vj.min += j;
    for_tiles<S::kQtAccum>(nq, [&]<int QT>(int i) {
      PairCoefs<QT> pc;
      pair_coefs<S, QT>(vj, m, ng, w + size_t(i) * ws + j, ws, pc);
      float* oi = out + size_t(i) * os;
      int u = 0;
      for (; u + NU <= dim / 32; u += NU) code_tile<S, B, QT, NU>(vj, m, u, pc, oi, os);
      for (; u < dim / 32; ++u) code_tile<S, B, QT, 1>(vj, m, u, pc, oi, os);
    });
  }
}

template <class S>
void code_accum(const CodeRows& v, int n, int dim, const float* w, int nq, int ws, float* out, int os) {
  if (v.bits == 2) code_accum_bits<S, 2>(v, n, dim, w, nq, ws, out, os);
  else if (v.bits == 4) code_accum_bits<S, 4>(v, n, dim, w, nq, ws, out, os);
  else code_accum_bits<S, 8>(v, n, dim, w, nq, ws, out, os);
}

// ---- codebook codes (CQ) --------------------------------------------------------------------------

// N tokens from jb against QT query rows' tables: one gather per group and row, added in order of g.
template <class S, int QT>
inline void lut_tile(const uint8_t* codes, int T, int jb, int j0, int j1, int ng, const float* lut, float* out,
                     int os) {
  using F = typename S::F;
  F a[QT];
  for (int t = 0; t < QT; ++t) a[t] = S::zero();
  for (int g = 0; g < ng; ++g) {
    const typename S::I idx = S::load_u8(codes + size_t(g) * T + jb);
    for (int t = 0; t < QT; ++t) a[t] = S::add(a[t], S::gather(lut + (size_t(t) * ng + g) * 256, idx));
  }
  const int lo = std::max(j0, jb), hi = std::min(j1, jb + S::N);
  for (int t = 0; t < QT; ++t) store_lanes<S>(out + size_t(t) * os + (lo - j0), a[t], lo - jb, hi - jb);
}

template <class S>
void lut_scores(const uint8_t* codes, int T, int j0, int j1, int ng, const float* lut, int nq, float* out, int os) {
  for (int jb = j0 / S::N * S::N; jb < j1; jb += S::N)
    for_tiles<4>(nq, [&]<int QT>(int i) {
      lut_tile<S, QT>(codes, T, jb, j0, j1, ng, lut + size_t(i) * ng * 256, out + size_t(i) * os, os);
    });
}

template <class S>
void lut_build(const float* cen_t, int ng, int C, const float* q, int nq, int qs, float* lut) {
  using F = typename S::F;
  constexpr int V = 256 / S::N;  // vectors per table
  for (int g = 0; g < ng; ++g)
    for (int i = 0; i < nq; ++i) {
      const float* qg = q + size_t(i) * qs + g * C;
      float* o = lut + (size_t(i) * ng + g) * 256;
      for (int v0 = 0; v0 < V; v0 += 4) {
        F a[4];
        for (int v = 0; v < 4; ++v) a[v] = S::zero();
        for (int e = 0; e < C; ++e) {
          const F x = S::set1(qg[e]);
          const float* ct = cen_t + (size_t(g) * C + e) * 256 + v0 * S::N;
          for (int v = 0; v < 4; ++v) a[v] = S::fmadd(x, S::loadu(ct + v * S::N), a[v]);
        }
        for (int v = 0; v < 4; ++v) S::storeu(o + (v0 + v) * S::N, a[v]);
      }
    }
}

// Gather indices of N channels of one token from its codes p (channel l: group l / C of p):
// (l / C) * 256 * C + code * C + l % C, relative to the first group's table.
template <class S, int C>
inline typename S::I centroid_index(const uint8_t* p) {
  constexpr int nb = S::N / C;  // code bytes per vector
  __m128i b;
  if constexpr (nb == 16) {
    b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  } else {
    uint64_t x = 0;
    std::memcpy(&x, p, nb);
    b = _mm_cvtsi64_si128(int64_t(x));
  }
  if constexpr (C > 1) {
    alignas(16) static const uint8_t kSpread[16] = {0 / C,  1 / C,  2 / C,  3 / C,  4 / C,  5 / C,  6 / C,  7 / C,
                                                    8 / C,  9 / C,  10 / C, 11 / C, 12 / C, 13 / C, 14 / C, 15 / C};
    b = _mm_shuffle_epi8(b, _mm_load_si128(reinterpret_cast<const __m128i*>(kSpread)));
  }
  // Lane l reads group l / C's table (256 * C floats further per group), element l % C.
  alignas(64) static const int32_t kLane[16] = {
      0 / C * 256 * C + 0 % C,   1 / C * 256 * C + 1 % C,   2 / C * 256 * C + 2 % C,   3 / C * 256 * C + 3 % C,
      4 / C * 256 * C + 4 % C,   5 / C * 256 * C + 5 % C,   6 / C * 256 * C + 6 % C,   7 / C * 256 * C + 7 % C,
      8 / C * 256 * C + 8 % C,   9 / C * 256 * C + 9 % C,   10 / C * 256 * C + 10 % C, 11 / C * 256 * C + 11 % C,
      12 / C * 256 * C + 12 % C, 13 / C * 256 * C + 13 % C, 14 / C * 256 * C + 14 % C, 15 / C * 256 * C + 15 % C};
  return S::addi(S::template slli<__builtin_ctz(C)>(S::widen_u8(b)), S::loadi(kLane));
}

template <class S, int C>
void centroid_accum_c(const uint8_t* codes, size_t stride, int n, int dim, const float* cen, const float* w, int nq,
                      int ws, float* out, int os) {
  auto tile = [&]<int QT, int NV>(int c0, const float* wi, float* oi) {
    accum_tile<S, QT, NV>(n, c0, wi, ws, oi, os, [&](int j, typename S::F* x) {
      const uint8_t* r = codes + size_t(j) * stride;
      for (int v = 0; v < NV; ++v) {
        const int c = c0 + v * S::N;  // a multiple of N, so of C: its group's table starts at cen + c * 256
        x[v] = S::gather(cen + size_t(c) * 256, centroid_index<S, C>(r + c / C));
      }
    });
  };
  for_tiles<S::kQtAccum>(nq, [&]<int QT>(int i) {
    const float* wi = w + size_t(i) * ws;
    float* oi = out + size_t(i) * os;
    int c = 0;
    for (; c + 4 * S::N <= dim; c += 4 * S::N) tile.template operator()<QT, 4>(c, wi, oi);
    for (; c < dim; c += S::N) tile.template operator()<QT, 1>(c, wi, oi);
  });
}

template <class S>
void centroid_accum(const uint8_t* codes, size_t stride, int n, int dim, int C, const float* cen, const float* w,
                    int nq, int ws, float* out, int os) {
  switch (C) {
    case 1: return centroid_accum_c<S, 1>(codes, stride, n, dim, cen, w, nq, ws, out, os);
    case 2: return centroid_accum_c<S, 2>(codes, stride, n, dim, cen, w, nq, ws, out, os);
    case 4: return centroid_accum_c<S, 4>(codes, stride, n, dim, cen, w, nq, ws, out, os);
    default: return centroid_accum_c<S, 8>(codes, stride, n, dim, cen, w, nq, ws, out, os);
  }
}

// ---- softmax pieces ------------------------------------------------------------------------------

template <class S>
float exp_shift_sum(float* x, int n, float m) {
  using F = typename S::F;
  const F vm = S::set1(m);
  F acc = S::zero();
  int i = 0;
  for (; i + S::N <= n; i += S::N) {
    const F e = S::exp(S::sub(S::loadu(x + i), vm));
    S::storeu(x + i, e);
    acc = S::add(acc, e);
  }
  float sum = S::hsum(acc);
  for (; i < n; ++i) sum += x[i] = std::exp(x[i] - m);
  return sum;
}

template <class S>
float max_of(const float* x, int n) {
  typename S::F v = S::set1(-INFINITY);
  int i = 0;
  for (; i + S::N <= n; i += S::N) v = S::max(v, S::loadu(x + i));
  float m = S::hmax(v);
  for (; i < n; ++i) m = std::fmax(m, x[i]);
  return m;
}

// PQ scores (kv_kernels.h) sub-block by sub-block: tile(qt, sub, lut, scale, bias, tmp) scores the
// 32 tokens of one sub-block for qt <= QMAX queries into tmp[qt][32]; only tokens [j0, j1) are
// written to out. The ISA files supply the tile (their lookups differ in register width).
template <int QMAX, typename Tile>
void pq_over_subblocks(const uint8_t* codes, int j0, int j1, int M, const uint8_t* lut, int nq, const float* scale,
                       const float* bias, float* out, int os, Tile&& tile) {
  alignas(64) float tmp[QMAX * 32];
  for (int s = j0 / 32; s * 32 < j1; ++s) {
    const uint8_t* sub = codes + size_t(s) * M * 16;
    const int a = std::max(j0, s * 32), b = std::min(j1, s * 32 + 32);
    for (int i0 = 0; i0 < nq; i0 += QMAX) {
      const int qt = std::min(QMAX, nq - i0);
      tile(qt, sub, lut + size_t(i0) * M * 16, scale + i0, bias + i0, tmp);
      for (int i = 0; i < qt; ++i)
        std::copy(tmp + i * 32 + (a - s * 32), tmp + i * 32 + (b - s * 32), out + size_t(i0 + i) * os + (a - j0));
    }
  }
}

template <class S>
void fill(KvKernels& t) {
  t.rows_scores_f16 = rows_scores<S, uint16_t>;
  t.rows_scores_f32 = rows_scores<S, float>;
  t.rows_accum_f16 = rows_accum<S, uint16_t>;
  t.rows_accum_f32 = rows_accum<S, float>;
  t.tkeys_scores_f16 = tkeys_scores<S>;
  t.lane_scores = lane_scores<S>;
  t.kivi_key_scores = kivi_key_scores<S>;
  t.code_accum = code_accum<S>;
  t.lut_scores = lut_scores<S>;
  t.lut_build = lut_build<S>;
  t.centroid_accum = centroid_accum<S>;
  t.exp_shift_sum = exp_shift_sum<S>;
  t.max_of = max_of<S>;
}

}  // namespace kv_simd
}  // namespace leanlm
