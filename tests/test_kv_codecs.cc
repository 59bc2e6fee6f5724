// KV codecs: blocks decode to what their bytes hold (read here by each format's definition), the
// round-trip error within each codec's bound, fused kernels within their measured rounding of
// double references, rows copied between blocks exactly; the eviction policies' invariants; k-means; the
// configuration parser. The paged store is tested in test_kv_store.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "kv/block_codec.h"
#include "kv/codebooks.h"
#include "kv/eviction.h"
#include "kv/kv_config.h"
#include "kv/paged_store.h"
#include "util/error.h"
#include "util/fp16.h"
#include "kv_test_util.h"

namespace leanlm {
namespace {

using namespace testing_kv;

constexpr int kDim = 128, kTokens = 32;

struct CodecCase {
  std::string name;
  KvSide side;
};

std::vector<CodecCase> all_codecs() {
  std::vector<CodecCase> out;
  for (const char* n : {"f16", "q8_0", "q4_0", "kivi2", "kivi4", "kivi2:g=64", "cq-2c8b", "cq-4c8b", "cq-8c10b", "pq",
                        "pq:dsub=1", "pq:dsub=4", "pq:g=64", "pq:v=kivi2"})
    for (KvSide s : {KvSide::Key, KvSide::Value}) out.push_back({n, s});
  return out;
}

// gtest prints test parameters it cannot print as raw bytes.
void PrintTo(const CodecCase& c, std::ostream* os) { *os << c.name << (c.side == KvSide::Key ? " keys" : " values"); }

class CodecTest : public ::testing::TestWithParam<CodecCase> {
 protected:
  void SetUp() override {
    spec_ = parse_codec(GetParam().name);
    // PQ codes keys only: its value side is the value codec, tested as that codec.
    if (spec_.kind == CodecSpec::Kind::PQ && GetParam().side == KvSide::Value) spec_ = spec_.value_spec();
    if (spec_.needs_codebooks()) book_ = random_codebook(2, kDim, spec_.cq_channels, spec_.bits, 5);
    codec_ = make_block_codec(spec_, GetParam().side, 2, kDim, &book_);
  }
  CodecSpec spec_;
  Codebook book_;
  std::unique_ptr<BlockCodec> codec_;
};

// What a block holds, read here from its bytes by each format's definition (the layouts in the
// codecs' headers and kv_kernels.h), independently of the codecs' decode: per row and channel the
// value, and for the integer codecs the code as stored (unsigned for q4_0 and KIVI, int8 for q8_0)
// and its scale; per row and sub-space of PQ the code.
struct BlockContents {
  std::vector<double> x, scale;  // [T][D]
  std::vector<int> code;         // [T][D] (PQ, CQ: [T][groups])
};

double load_half(const uint8_t* p, size_t i) {
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return half_to_double(h);
}

// Channel c of token j of integer keys in lanes (kv_kernels.h): column u of 32 / bits channels, 4
// bytes per token at (u * T + j) * 4.
int lane_code(const uint8_t* lanes, int bits, int T, int j, int c) {
  const int per_col = 32 / bits, u = c / per_col, r = c % per_col, k = r % 4, slot = r / 4;
  const uint8_t byte = lanes[(size_t(u) * T + j) * 4 + k];
  if (bits == 8) return int8_t(byte);
  return (byte >> (slot * bits)) & ((1 << bits) - 1);
}
// Element c of a token's value codes in units of 32 channels (kv_kernels.h, code rows).
int row_code(const uint8_t* row, int bits, int c) {
  const uint8_t* unit = row + size_t(c / 32) * (32 * bits / 8);
  const int e = c % 32;
  if (bits == 8) return int8_t(unit[e]);
  if (bits == 4) return e < 16 ? unit[e] & 15 : unit[e - 16] >> 4;
  return (unit[e % 8] >> (2 * (e / 8))) & 3;
}

BlockContents read_block(const CodecSpec& spec, KvSide side, const Codebook& book, int h, const uint8_t* blk, int T,
                         int D) {
  using K = CodecSpec::Kind;
  BlockContents b;
  b.x.assign(size_t(T) * D, 0.0), b.scale.assign(size_t(T) * D, 0.0), b.code.assign(size_t(T) * D, 0);
  const bool key = side == KvSide::Key;
  for (int j = 0; j < T; ++j)
    for (int c = 0; c < D; ++c) {
      const size_t i = size_t(j) * D + c;
      switch (spec.kind) {
        case K::F16: b.x[i] = load_half(blk, i); break;
        case K::Q8_0:
        case K::Q4_0: {  // scales [D/32][T] fp16, then lanes (keys) or token-major rows (values)
          const int bits = spec.kind == K::Q8_0 ? 8 : 4, zero = bits == 4 ? 8 : 0;
          const uint8_t* codes = blk + size_t(T) * (D / 32) * 2;
          b.code[i] = key ? lane_code(codes, bits, T, j, c) : row_code(codes + size_t(j) * D * bits / 8, bits, c);
          b.scale[i] = load_half(blk, size_t(c / 32) * T + j);
          b.x[i] = b.scale[i] * (b.code[i] - zero);
          break;
        }
        case K::Kivi: {
          double mn;
          if (key) {  // per channel: scale [D], min [D], lanes
            b.code[i] = lane_code(blk + size_t(D) * 4, spec.bits, T, j, c);
            b.scale[i] = load_half(blk, c), mn = load_half(blk + 2 * D, c);
          } else {  // per token and group of min(T, D) channels: scale [ng][T], min [ng][T], rows
            const int G = std::min(T, D), ng = D / G;
            b.code[i] = row_code(blk + size_t(T) * ng * 4 + size_t(j) * D * spec.bits / 8, spec.bits, c);
            b.scale[i] = load_half(blk, size_t(c / G) * T + j), mn = load_half(blk + size_t(T) * ng * 2, size_t(c / G) * T + j);
          }
          b.x[i] = mn + b.scale[i] * b.code[i];
          break;
        }
        case K::CQ:
        case K::PQ: {
          const int cc = book.channels, k = 1 << book.bits, ng = D / cc, g = c / cc;
          int code;
          if (spec.kind == K::PQ) {  // sub-blocks of 32 tokens, M * 16 bytes; low nibble: tokens 0-15
            const uint8_t byte = blk[(size_t(j / 32) * ng + g) * 16 + j % 16];
            code = j % 32 < 16 ? byte & 15 : byte >> 4;
          } else if (book.bits == 8) {  // keys group-major, values token-major
            code = blk[key ? size_t(g) * T + j : size_t(j) * ng + g];
          } else {  // little-endian bit rows of ceil(ng * bits / 8) bytes per token
            const size_t row = (size_t(ng) * book.bits + 7) / 8;
            code = 0;
            for (int bit = 0; bit < book.bits; ++bit) {
              const size_t at = size_t(g) * book.bits + bit;
              code |= (blk[size_t(j) * row + at / 8] >> (at % 8) & 1) << bit;
            }
          }
          b.code[size_t(j) * D + g] = code;
          b.x[i] = book.centroids[((size_t(h) * ng + g) * k + code) * cc + c % cc];
          break;
        }
      }
    }
  return b;
}

// Per-element bound on |x - decode(encode(x))| for the row block x: [T][D]: what rounding to the
// nearest code allows (half a step; q4_0's clamped end a full one), the quantizers' definition.
std::vector<float> error_bound(const CodecSpec& spec, KvSide side, const std::vector<float>& x, int T, int D) {
  std::vector<float> b(x.size(), 0.f);
  using K = CodecSpec::Kind;
  for (int j = 0; j < T; ++j)
    for (int c = 0; c < D; ++c) {
      const float v = x[size_t(j) * D + c];
      float bound = 0;
      auto group_range = [&](bool per_channel, int g) {
        float lo = INFINITY, hi = -INFINITY, amax = 0;
        if (per_channel) {
          for (int t = 0; t < T; ++t) lo = std::min(lo, x[size_t(t) * D + c]), hi = std::max(hi, x[size_t(t) * D + c]);
        } else {
          const int c0 = c / g * g;
          for (int e = c0; e < c0 + g; ++e) lo = std::min(lo, x[size_t(j) * D + e]), hi = std::max(hi, x[size_t(j) * D + e]);
        }
        amax = std::max(std::fabs(lo), std::fabs(hi));
        return std::array<float, 3>{lo, hi, amax};
      };
      switch (spec.kind) {
        case K::F16: bound = std::fabs(v) * 0x1p-11f; break;  // round to nearest: half an fp16 ulp
        case K::Q8_0: bound = group_range(false, 32)[2] / 127.f * 0.5f * 1.01f; break;
        case K::Q4_0: bound = group_range(false, 32)[2] / 8.f * 1.01f; break;  // the clamped end loses a full step
        case K::Kivi: {
          const auto r = group_range(side == KvSide::Key, std::min(spec.group, D));
          bound = (r[1] - r[0]) / float((1 << spec.bits) - 1) * 0.5f * 1.01f + r[2] * 2e-3f;  // fp16 scale, min
          break;
        }
        default: bound = INFINITY;
      }
      b[size_t(j) * D + c] = bound + 1e-7f;
    }
  return b;
}

TEST_P(CodecTest, RoundTripWithinBound) {
  const auto x = random_rows(kTokens * spec_.group / 32, kDim, 1, 16);
  const int T = spec_.group;
  std::vector<uint8_t> blk(codec_->block_bytes());
  for (int h = 0; h < 2; ++h) {
    codec_->encode(h, x.data(), kDim, 0, T, blk.data());
    std::vector<float> y(x.size()), yr(x.size());
    codec_->decode(h, blk.data(), 0, T, y.data());
    codec_->decode_ref(h, blk.data(), 0, T, yr.data());
    // Both decodes give what the bytes hold, exactly (each value is one product or one fma of
    // fp16 numbers and small integers, or a stored float).
    const BlockContents want = read_block(spec_, GetParam().side, book_, h, blk.data(), T, kDim);
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_EQ(y[i], float(want.x[i])) << "decode, element " << i;
      ASSERT_EQ(yr[i], float(want.x[i])) << "decode_ref, element " << i;
    }
    for (int j0 : {0, 5, T - 1}) {  // a part of the block decodes to the same rows
      std::vector<float> part(size_t(T - j0) * kDim);
      codec_->decode(h, blk.data(), j0, T, part.data());
      for (size_t i = 0; i < part.size(); ++i) ASSERT_EQ(part[i], y[size_t(j0) * kDim + i]) << "from row " << j0;
    }
    if (spec_.needs_codebooks()) {
      // Each group (PQ: sub-space) decodes to its nearest centroid.
      const int c = spec_.cq_channels, k = 1 << spec_.bits;
      for (int j = 0; j < T; j += 7)
        for (int g = 0; g < kDim / c; g += 5) {
          float best = INFINITY;
          for (int m = 0; m < k; ++m) {
            const float* cen = &book_.centroids[((size_t(h) * (kDim / c) + g) * k + m) * c];
            float d = 0;
            for (int e = 0; e < c; ++e) d += (x[size_t(j) * kDim + g * c + e] - cen[e]) * (x[size_t(j) * kDim + g * c + e] - cen[e]);
            best = std::min(best, d);
          }
          float got = 0;
          for (int e = 0; e < c; ++e)
            got += (x[size_t(j) * kDim + g * c + e] - y[size_t(j) * kDim + g * c + e]) *
                   (x[size_t(j) * kDim + g * c + e] - y[size_t(j) * kDim + g * c + e]);
          ASSERT_NEAR(got, best, 1e-4f * (1 + best));
        }
      continue;
    }
    const auto bound = error_bound(spec_, GetParam().side, x, T, kDim);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_LE(std::fabs(y[i] - x[i]), bound[i]) << GetParam().name << " element " << i;
  }
}

// The fused kernels against scores and sums computed here in double from what the block holds
// (read_block). Their error units (kv_test_util.h, ErrorStats), measured with LEANLM_ERROR_STATS=1
// over every codec and range below, under LEANLM_ISA=avx512, avx2 and scalar (AVX-512 Xeon):
// median / 99th percentile / max of |error| / unit in each comment, the tolerance about twice the
// largest ratio seen.
//   float sums (f16, CQ, PQ and KIVI decoded to tiles), unit u * sum |terms|: 0.2 / 1.9 / 4.9
constexpr double kFloatSum = 10.0;
//   int8 queries (q8_0, q4_0, KIVI keys), unit d sqrt(sum_c k_c^2 / 12), d = max |q_c s_c| / 127,
//   k_c the key (q8_0, q4_0) or its code (KIVI, with s_c its channel scale): 0.6 / 2.3 / 3.2
constexpr double kQueryRounding = 7.0;
//   uint8 PQ tables, unit step sqrt(M / 12) (each of the M entries off by a uniform half step):
//   0.7 / 2.4 / 3.0 (the bound M step / 2 the test had is 0.5 sqrt(12 M) = 14-20 of these units)
constexpr double kTableRounding = 6.0;
//   int16 value coefficients, unit dq sqrt(sum_j code_j^2 / 12), dq = max_j |w_j s_j| / 32767 per
//   query row and scale group: 0.4 / 2.1 / 3.4
constexpr double kCoefRounding = 7.0;

TEST_P(CodecTest, FusedKernelsMatchReference) {
  using K = CodecSpec::Kind;
  const std::string isa = std::getenv("LEANLM_ISA") ? std::getenv("LEANLM_ISA") : "native";
  ErrorStats st_dot("dot " + spec_.name() + " " + isa), st_axpy("axpy " + spec_.name() + " " + isa);
  const bool key = GetParam().side == KvSide::Key;
  const bool int8_queries = key && (spec_.kind == K::Q8_0 || spec_.kind == K::Q4_0 || spec_.kind == K::Kivi);
  const bool int16_coefs = !key && (spec_.kind == K::Q8_0 || spec_.kind == K::Q4_0 || spec_.kind == K::Kivi);
  const int T = spec_.group;
  const auto x = random_rows(T, kDim, 2, 16);
  std::vector<uint8_t> blk(codec_->block_bytes());
  codec_->encode(1, x.data(), kDim, 0, T, blk.data());
  const BlockContents bc = read_block(spec_, GetParam().side, book_, 1, blk.data(), T, kDim);
  std::mt19937 rng(3);
  for (int n_q : {1, 2, 3, 4, 9}) {
    const int qs = kDim + 8;
    const auto q = random_rows(n_q, qs, 10 + n_q);  // stride > dim
    for (auto [j0, j1] : {std::pair{0, T}, {5, 29}, {31, 32}, {3, 4}}) {
      const int n = j1 - j0;
      const int os = T + 8;  // output and weight strides
      std::vector<float> got(size_t(n_q) * os, -7.f);
      QueryPrep prep;
      codec_->prepare(1, q.data(), n_q, qs, prep);
      codec_->dot(1, blk.data(), j0, j1, prep, got.data(), os);
      if (spec_.kind == K::PQ) EXPECT_EQ(prep.lut_scale.empty(), n_q > 8);
      for (int i = 0; i < n_q; ++i) {
        const float* qi = &q[size_t(i) * qs];
        double dq = 0;  // the int8 query's step
        for (int c = 0; c < kDim; ++c) dq = std::max(dq, std::fabs(qi[c] * (spec_.kind == K::Kivi ? bc.scale[c] : 1.0)) / 127);
        for (int j = j0; j < j1; ++j) {
          double want = 0, mag = 0, k2 = 0;
          for (int c = 0; c < kDim; ++c) {
            const size_t e = size_t(j) * kDim + c;
            want += qi[c] * bc.x[e], mag += std::fabs(qi[c] * bc.x[e]);
            k2 += spec_.kind == K::Kivi ? double(bc.code[e]) * bc.code[e] : bc.x[e] * bc.x[e];
          }
          double unit = kUnitRoundoff * mag, k = kFloatSum;
          if (int8_queries) unit += dq * std::sqrt(k2 / 12), k = kQueryRounding;
          if (!prep.lut_scale.empty()) unit += prep.lut_scale[i] * std::sqrt(kDim / spec_.cq_channels / 12.0), k = kTableRounding;
          ASSERT_TRUE(st_dot.check(got[size_t(i) * os + (j - j0)], want, unit, k))
              << n_q << " queries, row " << i << " token " << j << ": " << got[size_t(i) * os + (j - j0)] << " vs " << want;
        }
        for (int j = n; j < os; ++j) ASSERT_EQ(got[size_t(i) * os + j], -7.f) << "wrote past the range";
      }

      std::vector<float> w(size_t(n_q) * os);
      std::uniform_real_distribution<float> ud(0.f, 1.f);
      for (auto& v : w) v = ud(rng) < 0.2f ? 0.f : ud(rng);
      const int oo = kDim + 4;
      std::vector<float> o0(size_t(n_q) * oo);
      for (auto& v : o0) v = ud(rng);
      std::vector<float> o = o0;
      codec_->axpy(1, blk.data(), j0, j1, w.data(), n_q, os, o.data(), oo);
      for (int i = 0; i < n_q; ++i)
        for (int c = 0; c < oo; ++c) {
          const size_t at = size_t(i) * oo + c;
          if (c >= kDim) {
            ASSERT_EQ(o[at], o0[at]) << "wrote past the channels";
            continue;
          }
          // The step of this channel's scale group: KIVI values group min(T, D) channels, q8_0 and q4_0 32.
          const int G = spec_.kind == K::Kivi ? std::min(T, kDim) : 32;
          double cmax = 0;
          for (int j = j0; j < j1; ++j)
            if (w[size_t(i) * os + (j - j0)] != 0)
              cmax = std::max(cmax, std::fabs(w[size_t(i) * os + (j - j0)] * bc.scale[size_t(j) * kDim + c / G * G]));
          double want = o0[at], mag = std::fabs(o0[at]), c2 = 0;
          for (int j = j0; j < j1; ++j) {
            const double wj = w[size_t(i) * os + (j - j0)];
            if (wj == 0) continue;
            const size_t e = size_t(j) * kDim + c;
            want += wj * bc.x[e];
            mag += std::fabs(wj) * (std::fabs(bc.x[e]) + std::fabs(bc.scale[e] * bc.code[e]));
            c2 += double(bc.code[e]) * bc.code[e];
          }
          double unit = kUnitRoundoff * mag, k = kFloatSum;
          if (int16_coefs) unit += cmax / 32767 * std::sqrt(c2 / 12), k = kCoefRounding;
          ASSERT_TRUE(st_axpy.check(o[at], want, unit, k))
              << n_q << " queries, row " << i << " channel " << c << ": " << o[at] << " vs " << want;
        }
    }
  }
}

TEST_P(CodecTest, PerTokenCodecsAppendRowByRow) {
  if (!codec_->per_token()) GTEST_SKIP() << "groups across tokens";
  const int T = spec_.group;
  const auto x = random_rows(T, kDim, 4);
  std::vector<uint8_t> a(codec_->block_bytes()), b(codec_->block_bytes());
  codec_->encode(0, x.data(), kDim, 0, T, a.data());
  for (int j = 0; j < T; ++j) codec_->encode(0, x.data() + size_t(j) * kDim, kDim, j, j + 1, b.data());
  std::vector<float> ya(x.size()), yb(x.size());
  codec_->decode(0, a.data(), 0, T, ya.data());
  codec_->decode(0, b.data(), 0, T, yb.data());
  EXPECT_EQ(ya, yb);
}

INSTANTIATE_TEST_SUITE_P(All, CodecTest, ::testing::ValuesIn(all_codecs()), [](const auto& info) {
  std::string n = info.param.name + (info.param.side == KvSide::Key ? "_keys" : "_values");
  for (char& c : n)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
});

// ---------------------------------------------------------------------------------------------
// Eviction policies: budget kept, protected tokens kept, the right tokens chosen.

std::vector<int32_t> run_policy(const std::string& name, int n_tokens, int budget, std::vector<float> importance,
                                int* max_live = nullptr) {
  auto policy = make_eviction_policy(parse_evict(name), 1);
  std::vector<int32_t> live;
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> ud(0.5f, 1.5f);
  for (int q = 0; q < n_tokens; ++q) {
    live.push_back(q);
    // Attention of query q over the live tokens: proportional to their importance, with noise.
    std::vector<float> w(live.size());
    float sum = 0;
    for (size_t j = 0; j < live.size(); ++j) sum += w[j] = importance[live[j]] * ud(rng);
    for (float& v : w) v /= sum;
    policy->observe(0, q, q, live.data(), w.data(), int(live.size()));
    std::vector<int32_t> drop;
    policy->choose(live, budget, drop);
    std::set<int32_t> d(drop.begin(), drop.end());
    EXPECT_EQ(d.size(), drop.size()) << "duplicates";
    std::vector<int32_t> next;
    for (int32_t p : live)
      if (!d.count(p)) next.push_back(p);
    EXPECT_EQ(next.size(), live.size() - drop.size()) << "dropped a token that was not live";
    live = next;
    EXPECT_LE(int(live.size()), budget);
    if (max_live) *max_live = std::max(*max_live, int(live.size()));
  }
  return live;
}

TEST(Eviction, EveryPolicyKeepsTheBudgetAndTheNewestToken) {
  std::vector<float> imp(400, 1.f);
  for (const char* name : {"streaming", "h2o", "scissorhands", "snapkv"}) {
    SCOPED_TRACE(name);
    int max_live = 0;
    const auto live = run_policy(name, 400, 50, imp, &max_live);
    EXPECT_EQ(max_live, 50);
    EXPECT_EQ(live.back(), 399);
  }
}

TEST(Eviction, StreamingKeepsSinksAndRecent) {
  const auto live = run_policy("streaming:sinks=4", 300, 40, std::vector<float>(300, 1.f));
  std::vector<int32_t> want = {0, 1, 2, 3};
  for (int p = 300 - 36; p < 300; ++p) want.push_back(p);
  EXPECT_EQ(live, want);
}

TEST(Eviction, ScoringPoliciesKeepImportantTokensAndProtectRecent) {
  // Tokens at multiples of 10 get 50x the attention of the others.
  std::vector<float> imp(500, 1.f);
  for (int p = 0; p < 500; p += 10) imp[p] = 50.f;
  for (const char* name : {"h2o:recent=20", "scissorhands:recent=20", "snapkv:recent=20:pool=1"}) {
    SCOPED_TRACE(name);
    const auto live = run_policy(name, 500, 80, imp);
    std::set<int32_t> s(live.begin(), live.end());
    for (int p = 480; p < 500; ++p) EXPECT_EQ(s.count(p), 1u) << "recent " << p;
    int heavy = 0;
    for (int p = 0; p < 480; p += 10) heavy += int(s.count(p));
    EXPECT_GE(heavy, 40) << "of 48 heavy hitters";
  }
}

// Rows of per-token codecs move between blocks as bytes: the copy decodes to the same values.
TEST_P(CodecTest, CopiedRowsDecodeExactly) {
  if (!codec_->rows_copyable()) {
    EXPECT_FALSE(codec_->per_token()) << "a per-token codec must describe its row planes";
    GTEST_SKIP() << "groups across tokens";
  }
  const int T = codec_->tokens();
  size_t per_row = 0;
  for (const RowPlane& p : codec_->row_planes()) per_row += p.unit * p.units;
  if (!codec_->row_planes().empty()) ASSERT_EQ(per_row * size_t(T), codec_->block_bytes()) << "planes must tile the block";
  const auto x = random_rows(T, kDim, 41, 16);
  std::vector<uint8_t> a(codec_->block_bytes()), b(codec_->block_bytes(), 0);
  codec_->encode(1, x.data(), kDim, 0, T, a.data());
  for (int j = 0; j < T; ++j) codec_->copy_row(a.data(), j, b.data(), T - 1 - j);
  std::vector<float> ra(size_t(T) * kDim), rb(ra.size());
  codec_->decode_ref(1, a.data(), 0, T, ra.data());
  codec_->decode_ref(1, b.data(), 0, T, rb.data());
  for (int j = 0; j < T; ++j)
    for (int c = 0; c < kDim; ++c)
      ASSERT_EQ(rb[size_t(T - 1 - j) * kDim + c], ra[size_t(j) * kDim + c]) << "row " << j << " channel " << c;
}

// Several KV heads share a layer's slots: each policy combines its heads' statistics, and the
// result must not depend on the order in which heads and queries report (threads race to report).
// Tokens 0..39: important to head 0 only; 40..79: to head 1 only; 80..129: to none of the 3 heads;
// 130..199 recent (protected). Queries 104..199 report: more than 64 in one pass (Scissorhands' bit q % 64
// would be shared by q and q + 64), and every candidate was judged by the last 64.
TEST(Eviction, HeadsCombineWhateverTheReportOrder) {
  const int n = 200, H = 3;
  // For Scissorhands the oldest 32 queries favour 80..129 on every head instead: they share bits
  // q % 64 with the newest 32, so whichever reports last would decide those bits if old queries
  // wrote them (they fall outside the 64-step history and must not).
  bool twist = false;
  auto weight = [&](int h, int q, int p) {
    if (twist && q < n - 64) return p >= 80 && p < 130 ? 20.f : 1.f;
    if (h == 2) return p >= 130 ? 3.f : 1.f;  // head 2 looks at the recent tokens only
    const bool imp = (h == 0 && p < 40) || (h == 1 && p >= 40 && p < 80);
    return imp ? 20.f : 1.f;
  };
  for (const char* name : {"h2o:recent=70", "scissorhands:recent=70", "scissorhands:recent=70:heads=mean",
                           "snapkv:recent=70:pool=1:window=200"}) {
    SCOPED_TRACE(name);
    twist = std::string(name).rfind("scissorhands", 0) == 0;
    std::vector<std::vector<int32_t>> drops;
    for (int order = 0; order < 3; ++order) {
      auto policy = make_eviction_policy(parse_evict(name), H);
      std::vector<int32_t> live(n);
      for (int p = 0; p < n; ++p) live[p] = p;
      // Queries n-96 .. n-1 report for every head, in an order that depends on `order`.
      std::vector<std::pair<int, int>> reports;
      for (int q = n - 96; q < n; ++q)
        for (int h = 0; h < H; ++h) reports.push_back({q, h});
      if (order == 1) std::reverse(reports.begin(), reports.end());
      if (order == 2) std::shuffle(reports.begin(), reports.end(), std::mt19937(7));
      for (auto [q, h] : reports) {
        std::vector<float> w(q + 1);
        float sum = 0;
        for (int p = 0; p <= q; ++p) sum += w[p] = weight(h, q, p);
        for (float& x : w) x /= sum;
        policy->observe(h, q, n - 1, live.data(), w.data(), q + 1);
      }
      std::vector<int32_t> drop;
      policy->choose(live, 150, drop);
      std::sort(drop.begin(), drop.end());
      drops.push_back(drop);
    }
    EXPECT_EQ(drops[0], drops[1]);
    EXPECT_EQ(drops[0], drops[2]);
    // What either head needs stays; what no head needs goes first.
    ASSERT_EQ(drops[0].size(), 50u);
    for (int32_t p : drops[0]) EXPECT_TRUE(p >= 80 && p < 130) << p << ": dropped a token one head attends to";
  }
}

// ---------------------------------------------------------------------------------------------

TEST(KMeans, DeterministicForASeedAndBetterThanItsSeeding) {
  const auto x = random_rows(3000, 4, 11);
  const auto a = kmeans(x.data(), 3000, 4, 64, 42, 15, 2);
  const auto b = kmeans(x.data(), 3000, 4, 64, 42, 15, 1);
  EXPECT_EQ(a, b);
  const auto seeded = kmeans(x.data(), 3000, 4, 64, 42, 0, 1);
  auto sse = [&](const std::vector<float>& c) {
    double s = 0;
    for (int i = 0; i < 3000; ++i) {
      double best = 1e30;
      for (int k = 0; k < 64; ++k) {
        double d = 0;
        for (int e = 0; e < 4; ++e) d += std::pow(x[size_t(i) * 4 + e] - c[size_t(k) * 4 + e], 2);
        best = std::min(best, d);
      }
      s += best;
    }
    return s;
  };
  EXPECT_LT(sse(a), sse(seeded) * 0.9);
  EXPECT_NE(a, kmeans(x.data(), 3000, 4, 64, 43, 15, 1));
}

// Query-aware k-means: the factor reproduces the moment matrix, and centroids learned in its metric
// give a smaller score error E_q[(q . (x - c))^2] than plain k-means when queries lean on some
// channels and directions more than others (here: 2-d points, queries mostly along (1, 1)/sqrt 2).
TEST(KMeans, QueryAwareMetricCutsTheScoreError) {
  const int d = 2, n = 4000, k = 16;
  const double S[4] = {5.0, 4.5, 4.5, 5.0};  // E[q q^T] for q ~ (1, 1) a + (1, -1) b / 3
  const auto U = metric_factor(S, d, false);
  EXPECT_EQ(U[2], 0.f) << "upper triangular";
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      double v = 0;
      for (int r = 0; r < d; ++r) v += double(U[r * d + i]) * U[r * d + j];
      EXPECT_NEAR(v, S[i * d + j] + (i == j ? 5e-3 : 0.0), 1e-4) << i << j;
    }
  const auto Ud = metric_factor(S, d, true);
  EXPECT_EQ(Ud[1], 0.f);
  EXPECT_NEAR(Ud[0] * Ud[0], 5.005, 1e-4);

  const auto x = random_rows(n, d, 77);
  auto score_err = [&](const std::vector<float>& c) {  // assignment and error both in the metric
    double s = 0;
    for (int i = 0; i < n; ++i) {
      double best = 1e30;
      for (int m = 0; m < k; ++m) {
        const double e0 = x[size_t(i) * d] - c[size_t(m) * d], e1 = x[size_t(i) * d + 1] - c[size_t(m) * d + 1];
        best = std::min(best, S[0] * e0 * e0 + 2 * S[1] * e0 * e1 + S[3] * e1 * e1);
      }
      s += best;
    }
    return s;
  };
  const auto plain = kmeans(x.data(), n, d, k, 5, 20, 1);
  const auto aware = kmeans_in_metric(x.data(), n, d, k, U.data(), 5, 20, 1);
  EXPECT_LT(score_err(aware), 0.8 * score_err(plain));
}

// Query-aware books carry their metric U: CQ and PQ keys are coded to the centroid nearest in
// |U (x - c)|, which with a strongly anisotropic U differs from the Euclidean choice.
TEST(QueryAwareBooks, KeysAreCodedInTheBooksMetric) {
  for (const char* name : {"cq-2c8b", "pq"}) {
    SCOPED_TRACE(name);
    const CodecSpec spec = parse_codec(name);
    const int c = spec.cq_channels, k = 1 << spec.bits, G = kDim / c;
    Codebook book = random_codebook(1, kDim, c, spec.bits, 9);
    book.metric.assign(size_t(G) * c * c, 0.f);
    for (int g = 0; g < G; ++g) {  // U = [[10, 3], [0, 0.5]]: the first channel of a pair counts most
      book.metric[size_t(g) * 4 + 0] = 10.f, book.metric[size_t(g) * 4 + 1] = 3.f;
      book.metric[size_t(g) * 4 + 3] = 0.5f;
    }
    const auto codec = make_block_codec(spec, KvSide::Key, 1, kDim, &book);
    const int T = codec->tokens();
    const auto x = random_rows(T, kDim, 12);
    std::vector<uint8_t> blk(codec->block_bytes());
    codec->encode(0, x.data(), kDim, 0, T, blk.data());
    std::vector<float> y(size_t(T) * kDim);
    codec->decode_ref(0, blk.data(), 0, T, y.data());
    int differs = 0;
    for (int j = 0; j < T; ++j)
      for (int g = 0; g < G; ++g) {
        const float* xv = &x[size_t(j) * kDim + g * c];
        auto metric_d = [&](const float* cen) {
          const float e0 = xv[0] - cen[0], e1 = xv[1] - cen[1];
          const float u0 = 10.f * e0 + 3.f * e1, u1 = 0.5f * e1;
          return u0 * u0 + u1 * u1;
        };
        int best = 0, best_euclid = 0;
        for (int m = 0; m < k; ++m) {
          const float* cen = &book.centroids[(size_t(g) * k + m) * c];
          const float* b = &book.centroids[(size_t(g) * k + best) * c];
          const float* be = &book.centroids[(size_t(g) * k + best_euclid) * c];
          if (metric_d(cen) < metric_d(b)) best = m;
          auto ed = [&](const float* p) { return (xv[0] - p[0]) * (xv[0] - p[0]) + (xv[1] - p[1]) * (xv[1] - p[1]); };
          if (ed(cen) < ed(be)) best_euclid = m;
        }
        const float* want = &book.centroids[(size_t(g) * k + best) * c];
        ASSERT_NEAR(metric_d(&y[size_t(j) * kDim + g * c]), metric_d(want), 1e-3f * (1 + metric_d(want)))
            << "token " << j << " group " << g;
        differs += best != best_euclid;
      }
    EXPECT_GT(differs, T * G / 20) << "the metric should change some choices";
  }
}

TEST(KvConfig, ParsesNamesAndRejectsBadOnes) {
  EXPECT_EQ(parse_codec("kivi2").residual, 128);
  EXPECT_EQ(parse_codec("kivi4:g=64:r=32").name(), "kivi4:g=64:r=32");
  EXPECT_EQ(parse_codec("cq-8c10b").bits, 10);
  EXPECT_EQ(parse_codec("kivi2:rot=1").name(), "kivi2:rot=1");
  EXPECT_TRUE(parse_codec("q4_0:rot=1").rotate);
  EXPECT_THROW(parse_codec("f16:rot=1"), Error);
  EXPECT_THROW(parse_codec("cq-4c8b:rot=1"), Error);
  EXPECT_THROW(parse_codec("q4_0:rot=2"), Error);
  EXPECT_THROW(parse_codec("kivi3"), Error);
  EXPECT_EQ(parse_codec("pq").cq_channels, 2);
  EXPECT_EQ(parse_codec("pq:dsub=4:v=kivi2").name(), "pq:dsub=4:v=kivi2");
  EXPECT_EQ(parse_codec("pq:v=kivi2").value_spec().name(), "kivi2");
  EXPECT_EQ(parse_codec("pq").sinks_for(false), 4);
  EXPECT_EQ(parse_codec("pq").sinks_for(true), 0);  // eviction keeps sinks its own way
  EXPECT_THROW(parse_codec("pq:sinks=2").sinks_for(true), Error);
  EXPECT_EQ(parse_codec("kivi2").sinks_for(false), 0);
  EXPECT_EQ(parse_codec("pq:sinks=0").name(), "pq:sinks=0");
  EXPECT_EQ(parse_codec("kivi2:rot=1:sinks=1").name(), "kivi2:rot=1:sinks=1");
  EXPECT_THROW(parse_codec("f16:sinks=4"), Error);
  EXPECT_EQ(parse_codec("pq:v=f16").name(), "pq");
  EXPECT_THROW(parse_codec("pq:dsub=3"), Error);
  EXPECT_THROW(parse_codec("pq:v=cq-2c8b"), Error);
  EXPECT_THROW(parse_codec("pq:v=pq"), Error);
  EXPECT_THROW(parse_codec("pq:rot=1"), Error);
  EXPECT_THROW(parse_codec("kivi2:dsub=2"), Error);
  EXPECT_THROW(parse_codec("kivi2:g=48"), Error);
  EXPECT_THROW(parse_codec("kivi2:x=1"), Error);
  EXPECT_THROW(parse_codec("q8_0:r"), Error);
  EXPECT_EQ(parse_evict("scissorhands:recent=10:keep=kivi2").keep, "kivi2");
  EXPECT_THROW(parse_evict("lru"), Error);
  EXPECT_THROW(parse_evict("h2o:keep=f16"), Error);
  KvConfig c;
  parse_budget("20%", c);
  EXPECT_EQ(c.budget_for(1000), 200);
  parse_budget("300", c);
  EXPECT_EQ(c.budget_for(1000), 300);
  EXPECT_THROW(parse_budget("120%", c), Error);
  EXPECT_THROW(parse_budget("abc", c), Error);
}

}  // namespace
}  // namespace leanlm