#include "kv/think.h"

#include <algorithm>

#include "util/error.h"

namespace leanlm {

ThinkChooser::ThinkChooser(int n_kv_head, int dim, int keep, int unit)
    : KVH_(n_kv_head), D_(dim), keep_(keep), unit_(unit), mu_(n_kv_head) {
  if (keep <= 0 || keep >= dim || unit <= 0 || keep % unit || dim % unit) fail("internal error: bad ThinK options");
  q_sq_.assign(size_t(KVH_) * kQueries * D_, 0.f);
  q_pos_.assign(size_t(KVH_) * kQueries, -1);
}

void ThinkChooser::on_queries(int h, int q_pos, const float* q, int n_rows, int stride) {
  std::lock_guard<std::mutex> lock(mu_[h]);
  const size_t e = size_t(h) * kQueries + q_pos % kQueries;
  if (q_pos < q_pos_[e]) return;  // holds a later query already
  q_pos_[e] = q_pos;
  float* dst = q_sq_.data() + e * D_;
  for (int c = 0; c < D_; ++c) {
    float s = 0;
    for (int r = 0; r < n_rows; ++r) s += q[size_t(r) * stride + c] * q[size_t(r) * stride + c];
    dst[c] = s / float(n_rows);
  }
}

// Sums rank the channels of a head as the means do, so no division is needed.
std::vector<std::vector<int>> ThinkChooser::choose(const std::vector<double>& key_sq) const {
  const int U = unit_, n_units = D_ / U, keep_units = keep_ / U;
  std::vector<std::vector<int>> kept(KVH_);
  std::vector<double> qs(D_), unit(n_units);
  std::vector<int> order(n_units);
  for (int h = 0; h < KVH_; ++h) {
    std::fill(qs.begin(), qs.end(), 0.0);
    bool any_query = false;
    for (int e = 0; e < kQueries; ++e) {  // fixed slot order: the sum does not depend on report order
      if (q_pos_[size_t(h) * kQueries + e] < 0) continue;
      const float* src = q_sq_.data() + (size_t(h) * kQueries + e) * D_;
      for (int c = 0; c < D_; ++c) qs[c] += src[c];
      any_query = true;
    }
    if (!any_query) std::fill(qs.begin(), qs.end(), 1.0);  // no query seen: keys alone decide
    const double* ks = key_sq.data() + size_t(h) * D_;
    for (int u = 0; u < n_units; ++u) {
      double s = 0;
      for (int c = u * U; c < (u + 1) * U; ++c) s += qs[c] * ks[c];
      unit[u] = s;
    }
    for (int u = 0; u < n_units; ++u) order[u] = u;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return unit[a] > unit[b]; });
    std::sort(order.begin(), order.begin() + keep_units);
    for (int i = 0; i < keep_units; ++i)
      for (int c = order[i] * U; c < (order[i] + 1) * U; ++c) kept[h].push_back(c);
  }
  return kept;
}

void ThinkChooser::clear() { std::fill(q_pos_.begin(), q_pos_.end(), -1); }

}  // namespace leanlm
