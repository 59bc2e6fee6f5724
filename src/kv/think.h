// ThinK (Xu et al., 2024): query-driven key-channel pruning. Per KV head, channel c is scored by
// mean(q_c^2) over the last kQueries queries times mean(k_c^2) over the keys held; the channels of
// the best-scoring units (CQ: whole codebook groups) are kept and the rest are never stored.
//
// ThinkChooser gathers the query side as attention reports it (an AttentionObserver) and makes the
// choice once the store hands it the key side. Reports for one KV head are serialised; each query
// position owns its own slot of statistics, so the choice does not depend on report order.
#pragma once
#include <mutex>
#include <vector>

#include "kv/kv_cache.h"

namespace leanlm {

class ThinkChooser : public AttentionObserver {
 public:
  static constexpr int kQueries = 32;  // queries the channel scores average over
  // keep: channels kept per KV head (a multiple of unit, less than dim).
  ThinkChooser(int n_kv_head, int dim, int keep, int unit);

  bool wants_queries() const override { return true; }
  void on_queries(int h, int q_pos, const float* q, int n_rows, int stride) override;

  // key_sq: [n_kv_head][dim] sums of k_c^2 over the keys held. Returns per KV head the kept
  // channels, ascending. Ties go to the lower channel, so the choice is deterministic.
  std::vector<std::vector<int>> choose(const std::vector<double>& key_sq) const;
  void clear();
  int keep() const { return keep_; }

 private:
  int KVH_, D_, keep_, unit_;
  std::vector<float> q_sq_;      // [n_kv_head][kQueries][D]: mean over rows of q_c^2, slot = q_pos % kQueries
  std::vector<int32_t> q_pos_;   // [n_kv_head][kQueries]: the position each slot holds (-1: none)
  std::vector<std::mutex> mu_;   // per KV head
};

}  // namespace leanlm
