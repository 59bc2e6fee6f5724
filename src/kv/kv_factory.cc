// make_kv_store: from a KvConfig to the store of one (sequence, layer).
#include <algorithm>

#include "kv/block_codec.h"
#include "kv/eviction.h"
#include "kv/kv_cache.h"
#include "kv/kv_config.h"
#include "kv/paged_store.h"
#include "util/error.h"

namespace leanlm {

std::unique_ptr<KvStore> make_kv_store(const KvConfig& cfg, const KvShape& shape, BlockPool& pool,
                                       const Codebook* key_book, const Codebook* value_book) {
  using K = CodecSpec::Kind;
  const bool evicting = cfg.evict.kind != EvictSpec::Kind::None;
  cfg.check();
  if (cfg.exact())
    return make_kv_store(cfg.codec.kind == K::F32 ? KvType::F32 : KvType::F16, shape, pool);

  CodecSpec spec = cfg.codec;
  PagedKvOptions o;
  o.key = make_block_codec(spec, KvSide::Key, shape.n_kv_head, shape.head_dim, key_book);
  o.residual = spec.residual;
  o.rotate = spec.rotate;
  constexpr int kThinkMinWindow = 32;
  if (cfg.think > 0) {
    // Codecs take channel counts in multiples of 32 (their blocks and groups divide 32).
    const int D = shape.head_dim;
    const int keep = (D - int(cfg.think * D) + 31) / 32 * 32;
    if (keep >= D)
      fail(strfmt("--kv-think %g prunes no channel of a head of %d (channels go in multiples of 32; try %g)",
                  cfg.think, D, 32.0 / D));
    o.think_keep = keep;
    // The newest keys are the ones the next queries lean on most; ThinK prunes keys only once they
    // leave a window of at least 32 whole tokens (its observation window).
    o.residual = std::max(o.residual, kThinkMinWindow);
    o.think_unit = spec.kind == K::CQ ? spec.cq_channels : 1;
    const int n_kv_head = shape.n_kv_head;
    o.make_key = [spec, n_kv_head, key_book](int dim, const std::vector<std::vector<int>>& kept) {
      return std::shared_ptr<const BlockCodec>(make_block_codec(spec, KvSide::Key, n_kv_head, dim, key_book, &kept));
    };
  }
  o.value = make_block_codec(spec, KvSide::Value, shape.n_kv_head, shape.head_dim, value_book);
  const int sinks = spec.sinks_for(evicting || cfg.think > 0);
  if (sinks > 0 && shape.window == 0) {  // sliding-window layers soon see no sink at all
    PagedKvOptions so;
    CodecSpec f16 = parse_codec("f16");
    f16.group = spec.group;
    so.key = make_block_codec(f16, KvSide::Key, shape.n_kv_head, shape.head_dim, nullptr);
    so.value = make_block_codec(f16, KvSide::Value, shape.n_kv_head, shape.head_dim, nullptr);
    so.residual = sinks;  // its window holds every sink: nothing is ever paged
    o.sinks = sinks;
    o.low_tier = std::make_unique<PagedKvStore>(shape, pool, std::move(so));
  }
  if (evicting) {
    o.policy = make_eviction_policy(cfg.evict, shape.n_kv_head);
    o.budget = cfg.budget_for(shape.max_ctx);
    if (o.budget <= 0) fail("--kv-evict " + cfg.evict.name() + " needs --kv-budget (tokens, or a percentage like 20%)");
    if (!cfg.evict.keep.empty()) {
      const CodecSpec low = parse_codec(cfg.evict.keep);
      PagedKvOptions lo;
      lo.key = make_block_codec(low, KvSide::Key, shape.n_kv_head, shape.head_dim, nullptr);
      lo.value = make_block_codec(low, KvSide::Value, shape.n_kv_head, shape.head_dim, nullptr);
      lo.residual = 0;
      if (cfg.think > 0) {  // the low tier stores the channels its upper tier chooses
        const int n_kv_head = shape.n_kv_head;
        lo.make_key = [low, n_kv_head](int dim, const std::vector<std::vector<int>>& kept) {
          return std::shared_ptr<const BlockCodec>(make_block_codec(low, KvSide::Key, n_kv_head, dim, nullptr, &kept));
        };
      }
      o.low_tier = std::make_unique<PagedKvStore>(shape, pool, std::move(lo));
    }
  }
  return std::make_unique<PagedKvStore>(shape, pool, std::move(o));
}

}  // namespace leanlm
