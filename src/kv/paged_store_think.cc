// ThinK in the paged store: the key side of the channel choice (k_c^2 over the tokens held in the
// window), and switching the key codec to the kept channels (also in a low tier).
#include "kv/paged_store.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

const std::vector<int>& PagedKvStore::kept_channels(int h) const {
  static const std::vector<int> none;
  return kept_.empty() ? none : kept_[h];
}

void PagedKvStore::choose_channels() {
  std::vector<double> key_sq(size_t(KVH_) * D_, 0.0);  // [KVH][D]
  const int pe = page_end();
  for (int r = 0; r < recent_.size(); ++r) {
    if (pos_[pe + r] < 0) continue;
    const uint16_t* k = recent_.key(r);
    for (int i = 0; i < row_; ++i) {
      const double x = fp16_to_f32(k[i]);
      key_sq[i] += x * x;
    }
  }
  use_key_channels(think_->choose(key_sq));
  if (opts_.low_tier) opts_.low_tier->use_key_channels(kept_);
}

void PagedKvStore::use_key_channels(const std::vector<std::vector<int>>& kept) {
  if (!pages_.empty() || !opts_.make_key) fail("internal error: key channels change after tokens were encoded");
  const int keep = int(kept[0].size());
  opts_.key = opts_.make_key(keep, kept);
  kept_ = kept;
  Dk_ = keep;
  kbytes_ = opts_.key->block_bytes();
  page_bytes_ = size_t(KVH_) * (kbytes_ + vbytes_);
}

}  // namespace leanlm
