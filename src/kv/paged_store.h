// The compressed KV store of one (sequence, layer): blocks of B tokens encoded by a codec, held in
// pages from a BlockPool, plus a full-precision window of the most recent tokens.
//
//   slots:  [ low tier's slots | page 0: B slots | ... | page P-1 | recent window (fp16 ring) ]
//
// The low tier is either MiKV's store of evicted tokens or an fp16 store of the sink tokens (the
// first positions, which attention leans on most: kept exact, as KV quantization methods do).
//   page:   [n_kv_head][key block bytes] then [n_kv_head][value block bytes]
//
// New tokens enter the recent window (recent_window.h). Per-token codecs (q8_0, q4_0, kivi values,
// ...) move its oldest token into the last page as soon as the window holds more than R tokens;
// codecs that group across tokens (kivi keys) move B tokens at once when it holds R + B (KIVI's
// residual). Sliding-window layers release pages that no query can see any more.
//
// The implementation is cut along its seams: paging and reads (paged_store.cc), eviction, page
// merges and the MiKV low tier (paged_store_evict.cc), ThinK's channel choice (paged_store_think.cc
// with think.h).
//
// Eviction marks slots empty (position -1). Pages with holes merge with their neighbour when both
// fit one page, so the bytes held follow the tokens kept. Rows of per-token codecs move as bytes
// (exact); blocks that group across tokens (KIVI keys) must be re-encoded, which a page's tokens
// undergo at most kMaxReencodes times (error bounded, not compounding). With a MiKV-style low tier,
// evicted tokens move to a second, coarser store instead of vanishing.
//
// ThinK (key-channel pruning): pages store only the chosen key channels of each KV head, and scores
// gather the same channels of the query, so pruned channels cost neither bytes nor multiply-adds.
// The choice needs queries and keys, so the store holds every token whole in its window until the
// end of the pass in which it would first compress (R + B tokens: the prompt, for a prompt longer
// than that), or until its first eviction, then chooses and compresses. A low tier prunes the same
// channels.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kv/block_codec.h"
#include "kv/block_pool.h"
#include "kv/eviction.h"
#include "kv/kv_cache.h"
#include "kv/recent_window.h"
#include "kv/rotation.h"
#include "kv/think.h"

namespace leanlm {

struct PagedKvOptions {
  std::shared_ptr<const BlockCodec> key, value;  // same block size (tokens) for both
  int residual = 0;                               // R: most recent tokens kept in fp16
  std::unique_ptr<EvictionPolicy> policy;         // null: no eviction
  int budget = 0;                                 // most tokens held (0: no limit)
  std::unique_ptr<class PagedKvStore> low_tier;   // MiKV: where evicted tokens go (null: dropped)
  // Attention sinks: positions below `sinks` go straight to low_tier (then an fp16 store that keeps
  // them whole) instead of the codec. Not combined with eviction or ThinK.
  int sinks = 0;
  // ThinK: key channels kept per KV head (0: all), chosen in units of think_unit channels (CQ: its
  // group). make_key builds the key codec for the kept channels (dim, kept[h] ascending); a low tier
  // needs it too (it stores the channels its upper tier chose).
  int think_keep = 0;
  int think_unit = 1;
  // Rotation (kv/rotation.h): keys and values are stored rotated per KV head, queries are rotated
  // per call and the accumulated values rotated back. A low tier takes the rotated rows as they are.
  bool rotate = false;
  std::function<std::shared_ptr<const BlockCodec>(int dim, const std::vector<std::vector<int>>& kept)> make_key;
};

class PagedKvStore : public KvStore {
 public:
  PagedKvStore(const KvShape& shape, BlockPool& pool, PagedKvOptions opts);
  ~PagedKvStore() override;

  void append(int pos, const float* k, const float* v) override;
  int n_slots() const override { return low_slots() + int(pos_.size()); }
  const int32_t* slot_positions() const override { return opts_.low_tier ? slots_.data() : pos_.data(); }
  void scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out, int out_stride) const override;
  void accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out, int out_stride) const override;
  size_t bytes() const override;
  size_t bytes_to_append(int n) const override;
  void reserve(int n) override;
  void clear() override;
  int n_live() const override { return n_live_ + (opts_.low_tier ? opts_.low_tier->n_live() : 0); }
  AttentionObserver* observer() override;
  void after_pass() override;

  // ThinK: the key channels stored for KV head h (empty until chosen, or without ThinK).
  const std::vector<int>& kept_channels(int h) const;
  // Removes the tokens at these positions (moves them to the low tier, if any). For tests and policies.
  void evict(const std::vector<int32_t>& positions) { evict(positions, true); }
  int n_pages() const { return int(pages_.size()); }
  const PagedKvStore* low_tier() const { return opts_.low_tier.get(); }
  static constexpr int kMaxReencodes = 1;  // times a grouped (KIVI key) block may be re-encoded by merges

 private:
  // Routes attention's reports: queries to ThinK's chooser, weights to the eviction policy (one
  // lock per KV head: the policy's per-head statistics are never touched by two threads at once).
  class Observer : public AttentionObserver {
   public:
    explicit Observer(PagedKvStore& s);
    bool wants_queries() const override { return s_.choosing_channels(); }
    bool wants_weights() const override { return s_.opts_.policy && s_.opts_.policy->needs_weights(); }
    void on_queries(int h, int q_pos, const float* q, int n_rows, int stride) override;
    void on_weights(int h, int q_pos, const int32_t* key_pos, const float* w, int n) override;

   private:
    PagedKvStore& s_;
    std::vector<std::mutex> mu_;  // per KV head
  };

  int low_slots() const { return opts_.low_tier ? opts_.low_tier->n_slots() : 0; }
  int page_end() const { return int(pages_.size()) * B_; }  // first slot of the recent window (own numbering)
  uint8_t* key_block(int p, int h) const { return pages_[p] + size_t(h) * kbytes_; }
  uint8_t* value_block(int p, int h) const { return pages_[p] + size_t(KVH_) * kbytes_ + size_t(h) * vbytes_; }
  size_t page_meta() const { return size_t(B_) * sizeof(int32_t) + 2 * sizeof(int); }  // positions, fill, re-encodes
  template <typename Low, typename Page, typename Recent>
  void for_ranges(int s0, int s1, Low&& low, Page&& page, Recent&& recent) const;
  int waiting_capacity(int n) const;
  // accumulate() over the stored (possibly rotated) values, into out as stored.
  void accumulate_stored(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out, int out_stride) const;
  void add_page();
  void remove_page(int p);
  void flush();
  void sync_slots();  // with a low tier: rebuilds slots_ (its slots, then own) after any change
  void recycle_window(int newest);
  void gather_key(const float* k, float* out) const;  // ThinK: full key row -> stored channels
  // Eviction, merges and the low tier (paged_store_evict.cc).
  void evict(const std::vector<int32_t>& positions, bool demote_to_low);
  void merge_pages();
  bool merge_into(int dst, int src);
  void demote(int slot);
  // ThinK (paged_store_think.cc).
  bool choosing_channels() const { return think_ && kept_.empty(); }
  void choose_channels();
  void use_key_channels(const std::vector<std::vector<int>>& kept);

  KvShape s_;
  BlockPool& pool_;
  PagedKvOptions opts_;
  int B_, KVH_, D_, Dk_, row_;  // block tokens, KV heads, head size, stored key channels, recent row
  size_t kbytes_, vbytes_, page_bytes_;
  bool per_token_;
  std::vector<uint8_t*> pages_;
  std::vector<int> fill_;        // rows written in each page
  std::vector<int> reencoded_;   // times each page's key blocks were re-encoded by merges
  RecentWindow recent_;
  int base_cap_ = 0;             // window capacity outside of ThinK's wait
  std::vector<int32_t> pos_;     // own slots: pages, then the recent window in age order
  std::vector<int32_t> slots_;   // with a low tier, what slot_positions() returns: its slots, then pos_
  int n_live_ = 0, newest_ = -1;
  std::shared_ptr<const BlockCodec> full_key_;  // the key codec for all channels
  std::unique_ptr<HeadRotation> rotation_;  // null without rotation
  std::unique_ptr<ThinkChooser> think_;    // null without ThinK
  std::vector<std::vector<int>> kept_;      // ThinK: per KV head, the key channels stored (empty: all)
  std::unique_ptr<Observer> observer_;
};

}  // namespace leanlm
