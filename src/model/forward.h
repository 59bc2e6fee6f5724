// The forward pass shared by all architectures: a batch of tokens from one or more sequences in,
// next-token logits out. Each token carries its own sequence (KV cache) and position, which is what
// continuous batching needs.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "attention/attention.h"
#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "kv/block_codec.h"
#include "kv/block_pool.h"
#include "kv/kv_cache.h"
#include "kv/kv_config.h"
#include "kv/segmented_store.h"
#include "model/model.h"

namespace leanlm {

// The KV cache of one sequence: one store per layer, all charging one pool.
struct SequenceState {
  std::vector<std::unique_ptr<KvStore>> layers;
  std::vector<int> layer_window;  // per layer: its sliding window (0: full attention)
  std::function<std::unique_ptr<KvStore>(int layer)> make_store;  // an empty store for a layer
  BlockPool* pool = nullptr;
  int max_ctx = 0;  // most positions this sequence may hold (its ring sizes and budgets derive from it)
  int n_past = 0;   // positions 0..n_past-1 are in the cache
  int attn_top_k = 0;  // KvConfig::top_k: decode steps attend to this many slots per layer (0: all)
  size_t kv_bytes() const;  // bytes allocated by its stores (all charged to pool)
  // Bytes the stores may charge beyond kv_bytes() while n more tokens are appended in one pass.
  size_t kv_bytes_to_append(int n) const;
  void clear();
  // Freezes the cache so far (positions 0..n_past-1) into a prefix other sequences can start from
  // (Forward::new_sequence). go_on: this sequence continues in fresh stores after it (allocated
  // first: if that fails, nothing has changed); otherwise it is left empty (a finished sequence
  // handing its cache over). Needs a shareable KV configuration (KvConfig::shareable).
  std::shared_ptr<const KvPrefix> freeze(bool go_on = true);
};


struct BatchEntry {
  SequenceState* seq = nullptr;
  int token = 0;
  int pos = 0;
  bool logits = false;
};

class Forward {
 public:
  // max_batch: the most tokens one run() may take (larger batches must be split by the caller).
  Forward(const Model& model, ThreadPool& pool, int max_batch = 512);

  // A sequence's KV cache: stores per layer as `kv` asks, pages from `pool` (compressed codecs),
  // CQ codebooks from `books`.
  // With a prefix: the sequence starts with its first n_use positions (shared, not recomputed;
  // prefix->can_continue_at(n_use) must hold) and n_past = n_use.
  std::unique_ptr<SequenceState> new_sequence(int max_ctx, const KvConfig& kv, BlockPool& pool,
                                              const ModelCodebooks* books = nullptr,
                                              const KvPrefix* prefix = nullptr, int n_use = 0) const;

  // Appends the batch's keys/values to their sequences and returns the logits of the entries marked
  // `logits`, in batch order: [n_marked][n_vocab], valid until the next call. A batch that does not
  // fit (a position past its sequence's max_ctx, or more KV memory than the budget has left) is
  // refused with a clear Error before anything changes.
  const float* run(const std::vector<BatchEntry>& batch);
  int max_batch() const { return max_batch_; }
  // Sees every query ([n_head][head_dim], after RoPE and the attention scale), key and value as
  // the key and value enter the cache (after RoPE; [n_kv_head][head_dim] each). `leanlm calibrate`
  // collects activations with it.
  using KvTap = std::function<void(int layer, int pos, const float* q, const float* k, const float* v)>;
  void set_kv_tap(KvTap tap) { kv_tap_ = std::move(tap); }
  // Sees the input of every weight matrix of a layer, [T][n] rows at stride `stride`, before the
  // product: AttnIn (Q, K, V), AttnOut (the output projection), FfnIn (gate, up), FfnDown.
  // `leanlm quantize` collects the second moments LeanQuant needs with it.
  enum class MatInput { AttnIn, AttnOut, FfnIn, FfnDown };
  using MatTap = std::function<void(int layer, MatInput which, const float* x, int T, int n, int64_t stride)>;
  void set_mat_tap(MatTap tap) { mat_tap_ = std::move(tap); }

 private:
  void attention(int layer, const std::vector<BatchEntry>& batch);
  void check_room(const std::vector<BatchEntry>& batch) const;

  const Model& m_;
  const ModelConfig& c_;
  ThreadPool& pool_;
  int max_batch_;
  MatmulScratch mm_;
  // Activations, [max_batch][dim]
  AlignedVec<float> x_, h_, q_, k_, v_, att_, o_, gate_, up_, act_, logits_, hsel_;
  AlignedVec<float> rope_global_, rope_local_;  // [T][n_rot] cos/sin per token
  Attention attn_;
  std::vector<AttnToken> attn_tokens_;
  KvTap kv_tap_;
  MatTap mat_tap_;
};

}  // namespace leanlm
