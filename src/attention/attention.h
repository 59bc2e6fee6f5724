// Causal multi-head attention of a batch of tokens over their sequences' KV stores.
//
// The work is cut into tasks of (sequence run, KV head, block of up to kQueryBlock tokens): the
// queries of a block share every key and value they read, which is what makes prompt processing
// cheap. Each task reads only the slots some query of the block can see (causal, and within the
// sliding window), in at most a few contiguous slot ranges. When there are fewer tasks than threads
// (a decode step), the visible slots are split between threads and the partial softmaxes merged,
// so one long sequence still uses every core.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/threadpool.h"
#include "kv/kv_cache.h"
#include "util/aligned.h"

namespace leanlm {

struct AttnShape {
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  int window = 0;  // > 0: a query at p sees keys at p - window + 1 .. p
};

// One token of the batch: the store of its sequence (for this layer), its position, and where the
// store wants attention's queries and weights reported (null: nowhere).
struct AttnToken {
  const KvStore* kv = nullptr;
  int pos = 0;
  AttentionObserver* observer = nullptr;
  int top_k = 0;  // > 0: a decode step attends to its top_k slots only (see run_sparse_task)
};

struct SlotRange {
  int s0, s1;
};

class Attention {
 public:
  explicit Attention(int n_threads);
  // q: [T][n_head][head_dim] (already scaled), out: [T][n_head][head_dim]. The batch's own keys and
  // values must already be in the stores.
  void run(ThreadPool& pool, const AttnShape& shape, const std::vector<AttnToken>& tokens, const float* q,
           float* out);

  static constexpr int kQueryBlock = 32;
  // Observers of the weights get them from the exponentials kept during the pass when a task's
  // [query rows][visible slots] fit in this many floats; beyond, scores are computed a second time.
  void set_kept_weights_limit(size_t floats) { kept_limit_ = floats; }

 private:
  struct Task {
    int first = 0, count = 0;  // tokens [first, first + count) of the batch, same store
    int kv_head = 0;
    int split = 0, n_splits = 1;  // this task's share of the visible slots
    bool decode = false;          // the sequence's only token in the batch (a decode step)
  };
  // Per thread scratch.
  struct Scratch {
    AlignedVec<float> q, scores, out;
    std::vector<float> row_max, row_sum;  // online softmax state per query row
    // For observers of the weights: each chunk's exponentials [nq][visible slots] and the maximum
    // each row was shifted by in that chunk [chunk][nq], so the final weights need no second pass.
    AlignedVec<float> kept;
    std::vector<float> kept_max;
    std::vector<int> cols;  // sparse attention: the kept columns, then their slots
  };
  void report_weights(const Task& task, const AttnShape& shape, const std::vector<AttnToken>& tokens,
                      const std::vector<SlotRange>& ranges, Scratch& sc, bool from_kept);
  void run_task(const Task& task, const AttnShape& shape, const std::vector<AttnToken>& tokens, const float* q,
                float* out, Scratch& sc, float* part_out, float* part_max, float* part_sum);
  // Sparse attention of one decode token (beyond the seed papers): every visible slot is scored the
  // store's cheap way (PQ lookups, 2-bit codes); about top_k slots are kept, in spans of 32
  // consecutive visible slots, the spans whose best score over the query rows sharing the KV head
  // is highest; the softmax and the values cover those slots only: values, usually most of the
  // bytes, are read for k slots in k / 32 runs instead of all. Such steps are never split between
  // threads (one selection per step, whatever the thread count). sc.q holds the task's queries.
  void run_sparse_task(const Task& task, const AttnShape& shape, const std::vector<SlotRange>& ranges, int top_k,
                       const KvStore& kv, float* out, Scratch& sc);
  // out for every query row of split tasks (n_splits consecutive per original task) from the partials.
  void merge_splits(const AttnShape& shape, const std::vector<Task>& tasks, int n_splits, float* out);

  size_t kept_limit_ = size_t(4) << 20;  // 16 MiB of floats per thread
  std::vector<Scratch> scratch_;
  std::vector<Task> tasks_, split_tasks_;   // reused between calls (one call per layer and step)
  std::vector<size_t> row_offset_;
  AlignedVec<float> part_out_, part_max_, part_sum_;  // split-task partials: [split][query][...]
};

}  // namespace leanlm
