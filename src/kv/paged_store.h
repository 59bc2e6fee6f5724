// The compressed KV store of one (sequence, layer): blocks of B tokens encoded by a codec, held in
// pages from a BlockPool, plus a full-precision window of the most recent tokens.
//
//   slots:  [ page 0: B slots | page 1 | ... | page P-1 | recent window (fp16 ring) ]
//   page:   [n_kv_head][key block bytes] then [n_kv_head][value block bytes]
//
// New tokens enter the recent window. Per-token codecs (q8_0, q4_0, kivi values, ...) move its
// oldest token into the last page as soon as the window holds more than R tokens; codecs that group
// across tokens (kivi keys) move B tokens at once when it holds R + B (KIVI's residual).
// Sliding-window layers release pages that no query can see any more.
//
// Eviction marks slots empty (position -1). Pages with holes are merged with their neighbour when
// both fit one page (re-encoded from their decoded rows), so the bytes held follow the tokens kept.
// With a MiKV-style low tier, evicted tokens move to a second, coarser store instead of vanishing.
//
// ThinK (key-channel pruning): pages store only the chosen key channels of each KV head, and scores
// gather the same channels of the query, so pruned channels cost neither bytes nor multiply-adds.
// The choice needs queries and keys, so the store holds every token whole in its window until the
// end of the pass in which it would first compress (R + B tokens: the prompt, for a prompt longer
// than that), then keeps per KV head the channels with the largest mean(q_c^2) * mean(k_c^2) over
// the last 32 queries and all keys held, builds the key codec for them and compresses.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kv/block_codec.h"
#include "kv/block_pool.h"
#include "kv/eviction.h"
#include "kv/kv_cache.h"
#include "util/aligned.h"

namespace leanlm {

struct PagedKvOptions {
  std::shared_ptr<const BlockCodec> key, value;  // same block size (tokens) for both
  int residual = 0;                               // R: most recent tokens kept in fp16
  std::unique_ptr<EvictionPolicy> policy;         // null: no eviction
  int budget = 0;                                 // most tokens held (0: no limit)
  std::unique_ptr<class PagedKvStore> low_tier;   // MiKV: where evicted tokens go (null: dropped)
  // ThinK: key channels kept per KV head (0: all), chosen in units of think_unit channels (CQ: its
  // group), and the key codec for the kept channels (dim, kept[h] ascending).
  int think_keep = 0;
  int think_unit = 1;
  std::function<std::shared_ptr<const BlockCodec>(int dim, const std::vector<std::vector<int>>& kept)> make_key;
};

class PagedKvStore : public KvStore {
 public:
  PagedKvStore(const KvShape& shape, BlockPool& pool, PagedKvOptions opts);
  ~PagedKvStore() override;

  void append(int pos, const float* k, const float* v) override;
  int n_slots() const override { return low_slots() + int(pos_.size()); }
  const int32_t* slot_positions() const override;
  void scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out, int out_stride) const override;
  void accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out, int out_stride) const override;
  size_t bytes() const override;
  void clear() override;
  int n_live() const override { return n_live_ + (opts_.low_tier ? opts_.low_tier->n_live() : 0); }

  bool wants_weights() const override { return opts_.policy != nullptr; }
  void observe(int h, int q_pos, const int32_t* key_pos, const float* w, int n) const override;
  void after_pass() override;
  bool wants_queries() const override { return choosing_channels(); }
  void observe_queries(int h, int q_pos, const float* q, int n_rows, int stride) const override;
  // ThinK: the key channels stored for KV head h (empty until chosen, or without ThinK).
  const std::vector<int>& kept_channels(int h) const;

  // Removes the tokens at these positions (moves them to the low tier, if any). For tests and policies.
  void evict(const std::vector<int32_t>& positions);
  int n_pages() const { return int(pages_.size()); }
  // Sliding-window layers: releases pages no query at or after newest - max_batch + 1 can see.
  void recycle_window(int newest);

 private:
  int low_slots() const { return opts_.low_tier ? opts_.low_tier->n_slots() : 0; }
  int page_end() const { return int(pages_.size()) * B_; }  // first slot of the recent window (own numbering)
  uint8_t* key_block(int p, int h) const { return pages_[p] + size_t(h) * kbytes_; }
  uint8_t* value_block(int p, int h) const { return pages_[p] + size_t(KVH_) * kbytes_ + size_t(h) * vbytes_; }
  const uint16_t* recent_row(const AlignedVec<uint16_t>& buf, int r) const {
    return buf.data() + size_t((head_ + r) % cap_) * row_;
  }
  template <typename Low, typename Page, typename Recent>
  void for_ranges(int s0, int s1, Low&& low, Page&& page, Recent&& recent) const;
  void new_page();
  void flush();
  void merge_pages();
  bool choosing_channels() const { return opts_.think_keep > 0 && kept_.empty(); }
  void choose_channels();
  void resize_ring(int cap);  // keeps the window's rows, oldest first
  // Rows of page p that hold tokens, decoded: keys [n][KVH * Dk], values [n][KVH * D].
  int decode_live(int p, std::vector<float>& k, std::vector<float>& v, std::vector<int32_t>& pos) const;
  void encode_rows(int p, const float* k, const float* v, int n);
  void gather_key(const float* k, float* out) const;  // ThinK: full key row -> stored channels
  void demote(const std::vector<int32_t>& slots);   // evicted slots -> low tier

  KvShape s_;
  BlockPool& pool_;
  PagedKvOptions opts_;
  int B_, KVH_, D_, Dk_, row_;  // block tokens, KV heads, head size, stored key channels, recent row
  size_t kbytes_, vbytes_, page_bytes_;
  bool per_token_;
  std::vector<uint8_t*> pages_;
  std::vector<int> fill_;        // rows written in each page
  AlignedVec<uint16_t> rk_, rv_;  // recent window ring: [cap][KVH][D] fp16
  int cap_ = 0, head_ = 0, n_recent_ = 0;
  std::vector<int32_t> pos_;     // own slots: pages, then the recent window in age order
  mutable std::vector<int32_t> all_pos_;  // low tier's slots followed by own (when there is a low tier)
  int n_live_ = 0, newest_ = -1;
  mutable std::mutex observe_mu_;
  int base_cap_ = 0;                       // ring capacity outside of ThinK's wait
  std::vector<std::vector<int>> kept_;      // ThinK: per KV head, the key channels stored (empty: all)
  static constexpr int kThinkQueries = 32;  // ThinK: queries its channel scores average over
  mutable std::vector<float> q_sq_;         // [n_kv_head][kThinkQueries][D]: q_c^2 by position mod 32
  mutable std::vector<int32_t> q_sq_pos_;   // [n_kv_head][kThinkQueries]: the position each holds
};

}  // namespace leanlm
