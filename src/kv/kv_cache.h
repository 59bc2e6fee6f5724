// The KV cache: one KvStore per (sequence, layer) holding keys and values of all KV heads.
//
// Attention never reads keys or values directly; it asks the store for scores q.k over its slots
// and for the probability-weighted sum of values. That is the seam where compressed codecs (which
// compute on packed codes or through lookup tables) and eviction policies (which drop slots) plug in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace leanlm {

struct KvShape {
  int n_kv_head = 1;
  int head_dim = 0;
  int window = 0;    // > 0: sliding-window layer; only the last `window` positions are ever read
  int max_batch = 0; // most tokens appended between two attention passes (ring slack)
  int max_ctx = 0;   // most positions a sequence may hold
};

class KvStore {
 public:
  virtual ~KvStore() = default;
  // Stores k and v ([n_kv_head][head_dim] each) for position pos.
  virtual void append(int pos, const float* k, const float* v) = 0;
  // Number of slots that scores()/accumulate() cover, and the position held by each (-1 = empty).
  virtual int n_slots() const = 0;
  virtual const int32_t* slot_positions() const = 0;
  // scores[i][s - s0] = q_i . k_s  for the n_q query vectors q_i (q_stride apart) of KV head h and
  // the slots s in [s0, s1). Many queries at once: a prompt's tokens share the keys they read.
  virtual void scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* scores,
                      int scores_stride) const = 0;
  // out[i] += sum_{s in [s0, s1)} w[i][s - s0] * v_s  for KV head h (weights of 0 may be skipped).
  virtual void accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out,
                          int out_stride) const = 0;
  // Bytes the store actually holds for its tokens (allocated capacity, codes, scales, ...).
  virtual size_t bytes() const = 0;
  // Forgets everything (the sequence starts over).
  virtual void clear() = 0;

  // Tokens held (slots whose position is not -1).
  virtual int n_live() const;
  // Eviction support. A store with a policy asks attention for its weights (wants_weights), gets
  // them per query token and KV head (observe: weights averaged over the query heads of KV head h,
  // for the keys at key_pos[0..n), -1 = not visible), and applies its budget once attention of a
  // pass is done (after_pass). observe may be called from several threads at once.
  virtual bool wants_weights() const { return false; }
  virtual void observe(int h, int q_pos, const int32_t* key_pos, const float* w, int n) const {}
  virtual void after_pass() {}
  // Channel-pruning support (ThinK). A store that chooses which key channels to keep from the
  // queries it meets asks for them (wants_queries) and gets, per query token and KV head, the n_rows
  // query vectors of the heads sharing that KV head ([n_rows][stride]). May be called from several
  // threads at once.
  virtual bool wants_queries() const { return false; }
  virtual void observe_queries(int h, int q_pos, const float* q, int n_rows, int stride) const {}
};

// The uncompressed store (f16 or f32 rows), the baseline every codec is measured against.
enum class KvType { F16, F32 };
std::unique_ptr<KvStore> make_kv_store(KvType type, const KvShape& shape);

struct KvConfig;
struct Codebook;
class BlockPool;
// The store a configuration asks for: dense for plain f16/f32, paged (compressed blocks, eviction)
// otherwise. Codebooks: CQ's for this layer (keys, values), else null.
std::unique_ptr<KvStore> make_kv_store(const KvConfig& cfg, const KvShape& shape, BlockPool& pool,
                                       const Codebook* key_book, const Codebook* value_book);

}  // namespace leanlm
