// The KV cache: one KvStore per (sequence, layer) holding keys and values of all KV heads.
//
// Attention never reads keys or values directly; it asks the store for scores q.k over its slots
// and for the probability-weighted sum of values. That is the seam where compressed codecs (which
// compute on packed codes or through lookup tables) and eviction policies (which drop slots) plug in.
//
// Every byte a store holds is charged to the BlockPool it was made with, so one budget (--kv-mem)
// bounds the whole cache; bytes() reports exactly what is charged.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace leanlm {

class BlockPool;

struct KvShape {
  int n_kv_head = 1;
  int head_dim = 0;
  int window = 0;    // > 0: sliding-window layer; only the last `window` positions are ever read
  int max_batch = 0; // most tokens appended between two attention passes (ring slack)
  int max_ctx = 0;   // most positions a sequence may hold
};

// What attention reports to a store that learns from it: the queries (ThinK's channel choice) and
// the final softmax weights (eviction statistics). Calls come per query token and KV head, from
// several threads at once; an observer serialises what it must. Reports of one pass may arrive in
// any order, so what an observer keeps must not depend on that order.
class AttentionObserver {
 public:
  virtual ~AttentionObserver() = default;
  virtual bool wants_queries() const { return false; }
  virtual bool wants_weights() const { return false; }
  // The n_rows query vectors ([n_rows][stride]) of the heads sharing KV head h, at position q_pos.
  virtual void on_queries(int h, int q_pos, const float* q, int n_rows, int stride) {}
  // Weights w[0..n) (softmax-normalised, averaged over the query heads of KV head h) that the query
  // at q_pos gave the keys at key_pos[0..n) (-1: not visible, weight 0): one call per query token
  // and KV head, covering every key that query sees.
  virtual void on_weights(int h, int q_pos, const int32_t* key_pos, const float* w, int n) {}
};

class KvStore {
 public:
  virtual ~KvStore() = default;
  // Stores k and v ([n_kv_head][head_dim] each) for position pos.
  virtual void append(int pos, const float* k, const float* v) = 0;
  // Number of slots that scores()/accumulate() cover, and the position held by each (-1 = empty).
  // The table only changes when the store does (append, after_pass, clear, ...), never on reads.
  virtual int n_slots() const = 0;
  virtual const int32_t* slot_positions() const = 0;
  // scores[i][s - s0] = q_i . k_s  for the n_q query vectors q_i (q_stride apart) of KV head h and
  // the slots s in [s0, s1). Many queries at once: a prompt's tokens share the keys they read.
  virtual void scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* scores,
                      int scores_stride) const = 0;
  // out[i] += sum_{s in [s0, s1)} w[i][s - s0] * v_s  for KV head h (weights of 0 may be skipped).
  virtual void accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out,
                          int out_stride) const = 0;
  // Bytes the store has allocated for its tokens (capacity: codes, scales, windows, position
  // tables), all charged to its pool.
  virtual size_t bytes() const = 0;
  // An upper bound of the bytes the store charges to its pool beyond bytes() while n more tokens are
  // appended and the pass's after_pass() runs (peaks of reallocations included). The engine checks
  // it against the budget before a pass, so a pass that starts never runs out of memory.
  virtual size_t bytes_to_append(int n) const = 0;
  // Makes room for n more tokens in one step (optional; bytes_to_append(n) accounts for it).
  virtual void reserve(int n) {}
  // Forgets everything (the sequence starts over).
  virtual void clear() = 0;
  // Gives back capacity beyond the tokens held (a store about to be frozen and shared takes no more).
  virtual void shrink_to_fit() {}

  // Tokens held (slots whose position is not -1).
  virtual int n_live() const;
  // Null, or the observer attention reports to for this store.
  virtual AttentionObserver* observer() { return nullptr; }
  // Called once attention of a pass is done: eviction applies its budget, ThinK chooses channels.
  virtual void after_pass() {}
};

// The uncompressed store (f16 or f32 rows), the baseline every codec is measured against.
enum class KvType { F16, F32 };
std::unique_ptr<KvStore> make_kv_store(KvType type, const KvShape& shape, BlockPool& pool);

struct KvConfig;
struct Codebook;
// The store a configuration asks for: dense for plain f16/f32, paged (compressed blocks, eviction)
// otherwise. Codebooks: CQ's for this layer (keys, values), else null.
std::unique_ptr<KvStore> make_kv_store(const KvConfig& cfg, const KvShape& shape, BlockPool& pool,
                                       const Codebook* key_book, const Codebook* value_book);

}  // namespace leanlm
