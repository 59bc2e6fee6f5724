// The engine: a loaded model, a thread pool, the forward pass and the KV memory pool, with helpers
// to make sequences and feed them tokens. Batches of several sequences go through Forward::run.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "kernels/threadpool.h"
#include "model/forward.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace leanlm {

struct EngineOptions {
  std::string model_path;
  int threads = 0;       // 0: one per core
  int ctx = 4096;        // most positions per sequence
  int batch = 512;       // most tokens per forward pass
  KvConfig kv;
  size_t kv_mem = 0;    // byte budget of the compressed KV pages (0: no limit)
  bool progress = false;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& o);
  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return model_->tokenizer(); }
  Forward& forward() { return *forward_; }
  ThreadPool& pool() { return *pool_; }
  BlockPool& kv_pool() { return *kv_pool_; }  // the one KV budget every sequence draws from
  const EngineOptions& options() const { return opts_; }
  int n_vocab() const { return model_->config().n_vocab; }
  // Per layer: its sliding window (0: full attention), as KvPrefix::can_continue_at takes them.
  std::vector<int> layer_windows() const;

  std::unique_ptr<SequenceState> new_sequence() const;
  // A sequence with another KV configuration and context (eval compares several in one run).
  // With a prefix: the sequence starts from its first n_use positions (shared, see prefix_cache.h).
  std::unique_ptr<SequenceState> new_sequence(const KvConfig& kv, int max_ctx, const KvPrefix* prefix = nullptr,
                                              int n_use = 0);
  // Throws the Error new_sequence would throw for this KV configuration and context (codec and
  // head size, codebooks, rotation, eviction, sparse attention), without taking KV memory: the
  // server checks a request's choices with it when it parses the request. Thread-safe.
  void check_kv(const KvConfig& kv, int max_ctx);
  // Appends tokens to the sequence (split into batches) and returns the logits after the last one.
  // With all_logits, `out` receives [tokens.size()][n_vocab] logits (for perplexity/eval).
  const float* feed(SequenceState& seq, const std::vector<int>& tokens, std::vector<float>* all_logits = nullptr,
                    const std::function<void(int done)>& progress = nullptr);
  // Checks that n more positions fit the sequence's context; throws a clear Error if not.
  void check_fits(const SequenceState& seq, size_t n) const;

 private:
  EngineOptions opts_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Forward> forward_;
  std::unique_ptr<BlockPool> kv_pool_;
  // CQ codebooks, loaded once per (file, codec); null for other codecs.
  const ModelCodebooks* codebooks_for(const KvConfig& kv);
  std::mutex books_mu_;                                                // codebooks_ (check_kv runs on any thread)
  std::map<std::string, std::unique_ptr<ModelCodebooks>> codebooks_;  // by file and codec
  const ModelCodebooks* default_books_ = nullptr;                      // for options().kv
};

}  // namespace leanlm
