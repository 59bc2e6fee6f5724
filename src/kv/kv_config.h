// What the KV cache of a sequence looks like: codec, eviction policy, budget, key-channel pruning.
// Parsed from the command-line names (--kv-codec kivi2:g=32:r=128, --kv-evict scissorhands, ...).
#pragma once
#include <string>
#include <vector>

namespace leanlm {

struct CodecSpec {
  enum class Kind { F16, F32, Q8_0, Q4_0, Kivi, CQ, PQ };
  Kind kind = Kind::F16;
  int bits = 16;        // Kivi: 2 or 4; CQ, PQ: bits per code (2^bits centroids)
  int cq_channels = 0;  // CQ: channels coupled in one code; PQ: channels per sub-space (d_sub)
  int group = 32;       // tokens per block (KIVI's group size G; also its value group in channels)
  int residual = 0;     // most recent tokens kept in fp16 (KIVI's R; CQ's window)
  bool rotate = false;  // rot=1: Hadamard rotation of keys, values and queries per KV head (kv/rotation.h)
  int sinks = -1;       // the first `sinks` positions stay in fp16 (attention sinks); -1: the codec's default
  std::string values;   // PQ (a key codec): the codec of the values, by name (v=kivi2); "" = f16
  std::string name() const;  // canonical name, parameters that differ from the defaults included
  bool compressed() const { return kind != Kind::F16 && kind != Kind::F32; }
  // Codebooks learned by `leanlm calibrate`: CQ's for keys and values, PQ's for keys.
  bool needs_codebooks() const { return kind == Kind::CQ || kind == Kind::PQ; }
  // The codec values are stored in (PQ codes keys only; every other codec serves both sides).
  CodecSpec value_spec() const;
  // Sinks kept in fp16 for a store that evicts or prunes (none: those keep sinks their own way)
  // or not; an explicit sinks= with eviction or ThinK is an error.
  int sinks_for(bool evicting_or_pruning) const;
};

struct EvictSpec {
  enum class Kind { None, Streaming, H2O, Scissorhands, SnapKV };
  Kind kind = Kind::None;
  int sinks = 4;       // streaming: first tokens always kept
  int recent = -1;     // protected most recent tokens (-1: the policy's default share of the budget)
  int history = 64;    // scissorhands: decode steps its importance counts look back (<= 64)
  int window = 64;     // snapkv: observation window (last queries)
  int pool = 5;        // snapkv: average-pool kernel
  bool heads_any = true;  // scissorhands: important to any KV head = important (heads=mean: counts summed)
  std::string keep;    // MiKV-style: codec that evicted tokens are kept in instead of dropped ("" = drop)
  std::string name() const;
};

struct KvConfig {
  CodecSpec codec;
  EvictSpec evict;
  int budget_tokens = 0;      // > 0: most tokens per layer (eviction keeps the cache at this size)
  double budget_frac = 0.0;   // > 0: budget as a fraction of the context size
  double think = 0.0;         // ThinK: fraction of key channels pruned (0 = none)
  std::string codebooks;      // CQ codebook sidecar written by `leanlm calibrate`
  int top_k = 0;              // > 0: sparse decode attention over the top_k highest-scoring slots (attention.h)
  int budget_for(int ctx) const;  // tokens, 0 = unlimited
  // Throws a one-line Error for choices that combine on no model (f32 with eviction, PQ or a
  // rotation with --kv-think, --kv-topk with eviction, eviction without a budget, ...). What depends
  // on the model (head size, codebooks) is checked when its stores are built (make_kv_store).
  void check() const;
  std::string name() const;       // e.g. "kivi2+scissorhands@20%"
  // Stores that never drop or change a token once written: frozen prefixes of them can be shared
  // between sequences (kv/segmented_store.h).
  bool shareable() const { return evict.kind == EvictSpec::Kind::None && think <= 0; }
  // Plain f16/f32 rows: nothing compressed, evicted or pruned.
  bool exact() const { return !codec.compressed() && evict.kind == EvictSpec::Kind::None && think <= 0; }
};

// Throw leanlm::Error with the list of valid names on bad input.
CodecSpec parse_codec(const std::string& text);
EvictSpec parse_evict(const std::string& text);
// "1024" (tokens) or "20%" (of the context).
void parse_budget(const std::string& text, KvConfig& cfg);
// The configuration the --kv-* flags describe (the Python package's kv_* arguments are the same),
// checked with KvConfig::check; budget "" means none, and a budget needs an eviction policy.
KvConfig parse_kv_config(const std::string& codec, const std::string& evict, const std::string& budget, double think,
                         int top_k, const std::string& codebooks);
// Comma-separated list.
std::vector<std::string> split_list(const std::string& text);

}  // namespace leanlm
