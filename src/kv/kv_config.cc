#include "kv/kv_config.h"

#include <cmath>
#include <cstdlib>
#include <map>

#include "util/error.h"

namespace leanlm {

namespace {

using CK = CodecSpec::Kind;
using EK = EvictSpec::Kind;

// One row per codec name --kv-codec accepts: the family and the parameters the name fixes. Adding a
// codec to a family is one row; a new family also needs its file in codecs/ and a row in
// block_codec.cc's factory table.
struct CodecRow {
  const char* name;
  CK kind;
  int bits, cq_channels, residual;
};
constexpr CodecRow kCodecs[] = {
    {"f16", CK::F16, 16, 0, 0},        {"f32", CK::F32, 32, 0, 0},         {"q8_0", CK::Q8_0, 8, 0, 0},
    {"q4_0", CK::Q4_0, 4, 0, 0},       {"kivi2", CK::Kivi, 2, 0, 128},     {"kivi4", CK::Kivi, 4, 0, 128},
    {"cq-2c8b", CK::CQ, 8, 2, 32},     {"cq-4c8b", CK::CQ, 8, 4, 32},      {"cq-8c8b", CK::CQ, 8, 8, 32},
    {"cq-8c10b", CK::CQ, 10, 8, 32},   {"pq", CK::PQ, 4, 2, 128},
};

struct EvictRow {
  const char* name;
  EK kind;
};
constexpr EvictRow kPolicies[] = {{"none", EK::None},         {"streaming", EK::Streaming}, {"h2o", EK::H2O},
                                  {"scissorhands", EK::Scissorhands}, {"snapkv", EK::SnapKV}};

template <typename Row, size_t N>
std::string names_of(const Row (&rows)[N]) {
  std::string out;
  for (const Row& r : rows) out += std::string(out.empty() ? "" : ", ") + r.name;
  return out;
}

const CodecRow& codec_row(const CodecSpec& c) {
  for (const CodecRow& r : kCodecs)
    if (r.kind == c.kind && r.bits == c.bits && (r.cq_channels == c.cq_channels || c.kind == CK::PQ)) return r;
  fail("internal error: a KV codec without a name");
}

// PQ keys lose most on the first token (the attention sink: small, unlike other keys, read by
// every query), so PQ keeps the first 4 in fp16 unless told otherwise; other codecs keep none.
int default_sinks(CK kind) { return kind == CK::PQ ? 4 : 0; }

// "name:key=value:key=value" -> name and parameters.
std::string split_params(const std::string& text, std::map<std::string, std::string>& params) {
  size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  while (colon != std::string::npos) {
    const size_t next = text.find(':', colon + 1);
    const std::string kv = text.substr(colon + 1, next == std::string::npos ? std::string::npos : next - colon - 1);
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size())
      fail("'" + text + "': parameters are written name:key=value[:key=value]");
    params[kv.substr(0, eq)] = kv.substr(eq + 1);
    colon = next;
  }
  return name;
}

int to_int(const std::string& text, const std::string& what, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < lo || v > hi)
    fail(strfmt("%s must be an integer in [%d, %d], got '%s'", what.c_str(), lo, hi, text.c_str()));
  return int(v);
}

// Takes the integer parameter `key` out of params if present.
void take(std::map<std::string, std::string>& params, const char* key, int& dst, const std::string& owner, int lo,
          int hi) {
  auto it = params.find(key);
  if (it == params.end()) return;
  dst = to_int(it->second, owner + " parameter " + key, lo, hi);
  params.erase(it);
}

void no_leftovers(const std::map<std::string, std::string>& params, const std::string& owner, const char* valid) {
  if (!params.empty()) fail("unknown parameter '" + params.begin()->first + "' for " + owner + " (valid: " + valid + ")");
}

}  // namespace

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= text.size()) {
    const size_t e = text.find(',', b);
    const std::string item = text.substr(b, e == std::string::npos ? std::string::npos : e - b);
    if (item.empty()) fail("empty item in the list '" + text + "'");
    out.push_back(item);
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

CodecSpec parse_codec(const std::string& text) {
  std::map<std::string, std::string> params;
  const std::string name = split_params(text, params);
  CodecSpec c;
  const CodecRow* row = nullptr;
  for (const CodecRow& r : kCodecs)
    if (name == r.name) row = &r;
  if (!row) fail("unknown KV codec '" + name + "' (supported: " + names_of(kCodecs) + ")");
  c.kind = row->kind, c.bits = row->bits, c.cq_channels = row->cq_channels, c.residual = row->residual;
  if (c.kind == CK::F32) {
    no_leftovers(params, name, "none");
    return c;
  }
  take(params, "g", c.group, name, 32, 256);
  take(params, "r", c.residual, name, 0, 1 << 16);
  int rot = 0;
  take(params, "rot", rot, name, 0, 1);
  c.rotate = rot == 1;
  take(params, "sinks", c.sinks, name, 0, 1024);
  if (c.kind == CK::PQ) {
    take(params, "dsub", c.cq_channels, name, 1, 4);
    if (c.cq_channels == 3) fail("pq: dsub (channels per sub-space) is 1, 2 or 4");
    if (auto it = params.find("v"); it != params.end()) {
      const CodecSpec v = parse_codec(it->second);
      if (v.kind == CK::PQ || v.kind == CK::CQ || v.kind == CK::F32 || v.rotate)
        fail("pq:v=" + it->second + ": values can be stored in f16, q8_0, q4_0, kivi2 or kivi4");
      if (v.kind != CK::F16) c.values = v.name();
      params.erase(it);
    }
    no_leftovers(params, name, "dsub (channels per sub-space: 1, 2, 4), v (value codec), g, r, sinks");
  }
  no_leftovers(params, name, "g (tokens per block), r (recent tokens kept in fp16), rot (0 or 1), sinks (first tokens kept in fp16)");
  if (c.sinks >= 0 && c.kind == CK::F16) fail(name + ":sinks: the f16 cache keeps every token in fp16 already");
  if (c.kind == CK::PQ && c.rotate) fail("pq: rot=1 is not supported (its codebooks are learned on unrotated keys)");
  if (c.rotate && (c.kind == CK::F16 || c.kind == CK::CQ))
    fail(name + ":rot=1: rotation is for codecs with a quantization grid (q8_0, q4_0, kivi2, kivi4)");
  if (c.group % 32 != 0) fail(name + ": the group size g must be a multiple of 32");
  return c;
}

std::string CodecSpec::name() const {
  const CodecRow& row = codec_row(*this);
  std::string n = row.name;
  if (kind == CK::F32) return n;
  if (group != 32) n += strfmt(":g=%d", group);
  if (residual != row.residual) n += strfmt(":r=%d", residual);
  if (rotate) n += ":rot=1";
  if (sinks >= 0 && sinks != default_sinks(kind)) n += strfmt(":sinks=%d", sinks);
  if (kind == CK::PQ) {
    if (cq_channels != row.cq_channels) n += strfmt(":dsub=%d", cq_channels);
    if (!values.empty()) n += ":v=" + values;
  }
  return n;
}

int CodecSpec::sinks_for(bool evicting_or_pruning) const {
  if (sinks > 0 && evicting_or_pruning)
    fail(name() + ": sinks= does not combine with eviction (whose policies keep sinks of their own) or --kv-think");
  if (evicting_or_pruning) return 0;
  return sinks >= 0 ? sinks : default_sinks(kind);
}

CodecSpec CodecSpec::value_spec() const {
  if (kind != CK::PQ) return *this;
  CodecSpec v = parse_codec(values.empty() ? "f16" : values);
  v.group = group, v.residual = residual, v.sinks = sinks;  // one store: the same blocks and fp16 window on both sides
  return v;
}

EvictSpec parse_evict(const std::string& text) {
  std::map<std::string, std::string> params;
  const std::string name = split_params(text, params);
  EvictSpec e;
  using K = EvictSpec::Kind;
  const EvictRow* row = nullptr;
  for (const EvictRow& r : kPolicies)
    if (name == r.name) row = &r;
  if (!row) fail("unknown eviction policy '" + name + "' (supported: " + names_of(kPolicies) + ")");
  e.kind = row->kind;
  take(params, "sinks", e.sinks, name, 0, 1 << 20);
  take(params, "recent", e.recent, name, 0, 1 << 20);
  take(params, "history", e.history, name, 1, 64);
  take(params, "window", e.window, name, 1, 1 << 16);
  take(params, "pool", e.pool, name, 1, 63);
  if (auto it = params.find("heads"); it != params.end()) {
    if (e.kind != K::Scissorhands || (it->second != "any" && it->second != "mean"))
      fail("heads=" + it->second + ": scissorhands combines its KV heads' verdicts with heads=any or heads=mean");
    e.heads_any = it->second == "any";
    params.erase(it);
  }
  if (auto it = params.find("keep"); it != params.end()) {
    const CodecSpec low = parse_codec(it->second);
    if (!low.compressed() || low.kind == CodecSpec::Kind::CQ)
      fail("keep=" + it->second + ": evicted tokens can be kept in q8_0, q4_0, kivi2 or kivi4");
    e.keep = low.name();
    params.erase(it);
  }
  no_leftovers(params, name, "sinks, recent, history, window, pool, heads, keep");
  if (e.kind == K::None && !e.keep.empty()) fail("keep= needs an eviction policy");
  return e;
}

std::string EvictSpec::name() const {
  using K = Kind;
  if (kind == K::None) return "none";
  std::string n;
  for (const EvictRow& r : kPolicies)
    if (r.kind == kind) n = r.name;
  if (recent >= 0) n += strfmt(":recent=%d", recent);
  if (kind == K::Scissorhands && !heads_any) n += ":heads=mean";
  if (!keep.empty()) n += ":keep=" + keep;
  return n;
}

void parse_budget(const std::string& text, KvConfig& cfg) {
  cfg.budget_tokens = 0;
  cfg.budget_frac = 0;
  if (text.empty() || text == "0" || text == "none") return;
  if (text.back() == '%') {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size() - 1 || !(v > 0 && v <= 100))
      fail("--kv-budget: a percentage must be in (0, 100], got '" + text + "'");
    cfg.budget_frac = v / 100.0;
  } else {
    cfg.budget_tokens = to_int(text, "--kv-budget (tokens, or a percentage like 20%)", 1, 1 << 24);
  }
}

KvConfig parse_kv_config(const std::string& codec, const std::string& evict, const std::string& budget, double think,
                         int top_k, const std::string& codebooks) {
  KvConfig k;
  k.codec = parse_codec(codec);
  k.evict = parse_evict(evict);
  if (!budget.empty()) parse_budget(budget, k);
  k.think = think;
  k.top_k = top_k;
  k.codebooks = codebooks;
  if (k.evict.kind != EvictSpec::Kind::None && k.budget_tokens <= 0 && k.budget_frac <= 0)
    fail("--kv-evict " + k.evict.name() + " needs --kv-budget (tokens, or a percentage like 20%)");
  if (k.evict.kind == EvictSpec::Kind::None && !budget.empty()) fail("--kv-budget needs an eviction policy (--kv-evict)");
  k.check();
  return k;
}

void KvConfig::check() const {
  using K = CodecSpec::Kind;
  const bool evicting = evict.kind != EvictSpec::Kind::None;
  if (codec.kind == K::F32 && !exact()) fail("the f32 KV cache takes no eviction or channel pruning (use f16)");
  if (think > 0 && codec.kind == K::PQ) fail("--kv-think is not supported with PQ keys (" + codec.name() + ")");
  if (think > 0 && codec.rotate)
    fail("--kv-think chooses key channels, which a rotation (" + codec.name() + ") mixes: use one or the other");
  if (evicting && budget_tokens <= 0 && budget_frac <= 0)
    fail("--kv-evict " + evict.name() + " needs --kv-budget (tokens, or a percentage like 20%)");
  if (top_k < 0) fail("--kv-topk must be positive");
  if (top_k > 0 && (evicting || think > 0)) fail("--kv-topk (sparse attention) does not combine with eviction or --kv-think");
  codec.sinks_for(evicting || think > 0);  // throws for sinks= with eviction or ThinK
}

int KvConfig::budget_for(int ctx) const {
  if (budget_tokens > 0) return budget_tokens;
  if (budget_frac > 0) return std::max(1, int(std::lround(budget_frac * ctx)));
  return 0;
}

std::string KvConfig::name() const {
  std::string n = codec.name();
  if (think > 0) n += strfmt("+think%.0f%%", think * 100);
  if (top_k > 0) n += strfmt("+top%d", top_k);
  if (evict.kind != EvictSpec::Kind::None) {
    n += "+" + evict.name();
    if (budget_frac > 0) n += strfmt("@%g%%", budget_frac * 100);
    else if (budget_tokens > 0) n += strfmt("@%d", budget_tokens);
  }
  return n;
}

}  // namespace leanlm
