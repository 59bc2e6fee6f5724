#include "server/metrics.h"

#include <algorithm>
#include <cstdio>

#include "util/error.h"

namespace leanlm {

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double x) {
  std::lock_guard<std::mutex> lk(mu_);
  size_t i = 0;
  while (i < bounds_.size() && x > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += x;
  ++n_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help,
                       const std::string& labels) const {
  std::lock_guard<std::mutex> lk(mu_);
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  const std::string sep = labels.empty() ? "" : labels + ",";
  const std::string own = labels.empty() ? "" : "{" + labels + "}";
  unsigned long long cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += strfmt("%s_bucket{%sle=\"%g\"} %llu\n", name.c_str(), sep.c_str(), bounds_[i], cum);
  }
  cum += counts_.back();
  out += strfmt("%s_bucket{%sle=\"+Inf\"} %llu\n%s_sum%s %.6f\n%s_count%s %llu\n", name.c_str(), sep.c_str(), cum,
                name.c_str(), own.c_str(), sum_, name.c_str(), own.c_str(), n_);
}

ServerMetrics::ServerMetrics(std::string model_name)
    : model_(std::move(model_name)),
      ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      itl_({0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 2.5}),
      e2e_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}) {}

void ServerMetrics::count_http(int status) {
  std::lock_guard<std::mutex> lk(mu_);
  if (status < 300) ++http_2xx_;
  else if (status == 429) ++http_429_;
  else if (status < 500) ++http_4xx_;
  else ++http_5xx_;
}

namespace {

void metric(std::string& out, const char* name, const char* type, const char* help, double v) {
  out += strfmt("# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

}  // namespace

std::string ServerMetrics::render(const SchedulerStats& st) const {
  std::string out;
  struct Row {
    const char *name, *type, *help;
    double value;
  };
  const Row rows[] = {
      {"leanlm:requests_running", "gauge", "Sequences in the running batch.", double(st.running)},
      {"leanlm:requests_waiting", "gauge", "Requests queued for memory or a batch slot.", double(st.waiting)},
      {"leanlm:prompt_tokens_total", "counter", "Prompt tokens computed (recomputation included).",
       double(st.prompt_tokens)},
      {"leanlm:generation_tokens_total", "counter", "Tokens generated.", double(st.generated_tokens)},
      {"leanlm:requests_finished_total", "counter", "Requests that ended with stop or length.",
       double(st.requests_done)},
      {"leanlm:requests_failed_total", "counter", "Requests that ended with an error.", double(st.requests_failed)},
      {"leanlm:requests_cancelled_total", "counter", "Requests cancelled (client gone or shutdown).",
       double(st.cancelled)},
      {"leanlm:preemptions_total", "counter", "Sequences preempted for KV memory (recomputed later).",
       double(st.preemptions)},
      {"leanlm:engine_steps_total", "counter", "Forward passes of the engine loop.", double(st.steps)},
      {"leanlm:kv_cache_bytes", "gauge", "KV cache bytes in use (every byte charged to the pool).",
       double(st.kv_bytes)},
      {"leanlm:kv_cache_budget_bytes", "gauge", "KV cache byte budget (0: no limit).", double(st.kv_budget)},
      {"leanlm:prefix_cache_bytes", "gauge",
       "KV bytes only the prefix cache holds (freed, least recently used first, when memory is needed).",
       double(st.prefix_cache_bytes)},
      {"leanlm:prefix_cache_entries", "gauge", "Prefixes in the prefix cache.", double(st.prefix_cache_entries)},
      {"leanlm:prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
       double(st.prefix_query_tokens)},
      {"leanlm:prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache (not recomputed).",
       double(st.prefix_hit_tokens)},
  };
  for (const Row& r : rows) metric(out, r.name, r.type, r.help, r.value);
  out += "# HELP leanlm:kv_cache_bytes_by_codec KV bytes of the running sequences, by codec.\n"
         "# TYPE leanlm:kv_cache_bytes_by_codec gauge\n";
  for (const auto& [codec, bytes] : st.kv_bytes_by_codec)
    out += strfmt("leanlm:kv_cache_bytes_by_codec{codec=\"%s\"} %zu\n", codec.c_str(), bytes);
  ttft_.render(out, "leanlm:time_to_first_token_seconds", "Time from arrival to the first generated token.");
  itl_.render(out, "leanlm:inter_token_latency_seconds", "Time between consecutive tokens of a request.");
  e2e_.render(out, "leanlm:e2e_request_latency_seconds", "Time from arrival to the end of a request.");
  std::lock_guard<std::mutex> lk(mu_);
  out += "# HELP leanlm:http_responses_total HTTP responses of the API endpoints by status class.\n"
         "# TYPE leanlm:http_responses_total counter\n";
  out += strfmt("leanlm:http_responses_total{status=\"2xx\"} %llu\n", http_2xx_);
  out += strfmt("leanlm:http_responses_total{status=\"4xx\"} %llu\n", http_4xx_);
  out += strfmt("leanlm:http_responses_total{status=\"429\"} %llu\n", http_429_);
  out += strfmt("leanlm:http_responses_total{status=\"5xx\"} %llu\n", http_5xx_);

  // The vLLM names (what vLLM-based routers and dashboards scrape).
  const std::string lab = "model_name=\"" + model_ + "\"";
  auto vllm = [&](const char* name, const char* type, const char* help, double v) {
    out += strfmt("# HELP %s %s\n# TYPE %s %s\n%s{%s} %.17g\n", name, help, name, type, name, lab.c_str(), v);
  };
  vllm("vllm:num_requests_running", "gauge", "Requests in the running batch.", st.running);
  vllm("vllm:num_requests_waiting", "gauge", "Requests waiting to run.", st.waiting);
  // As vLLM counts it: cached prefixes nobody reads are free memory.
  vllm("vllm:kv_cache_usage_perc", "gauge", "KV cache usage, 0 to 1 of the byte budget (evictable prefixes free).",
       st.kv_budget ? double(st.kv_bytes - std::min(st.kv_bytes, st.prefix_cache_bytes)) / double(st.kv_budget) : 0.0);
  vllm("vllm:prefix_cache_queries", "counter", "Prompt tokens looked up in the prefix cache.",
       double(st.prefix_query_tokens));
  vllm("vllm:prefix_cache_hits", "counter", "Prompt tokens found in the prefix cache.", double(st.prefix_hit_tokens));
  vllm("vllm:num_preemptions_total", "counter", "Preemptions for KV memory.", double(st.preemptions));
  vllm("vllm:prompt_tokens_total", "counter", "Prompt tokens computed.", double(st.prompt_tokens));
  vllm("vllm:generation_tokens_total", "counter", "Tokens generated.", double(st.generated_tokens));
  out += "# HELP vllm:request_success_total Requests finished, by finish reason.\n"
         "# TYPE vllm:request_success_total counter\n";
  out += strfmt("vllm:request_success_total{%s,finished_reason=\"stop\"} %llu\n", lab.c_str(),
                (unsigned long long)st.finished_stop);
  out += strfmt("vllm:request_success_total{%s,finished_reason=\"length\"} %llu\n", lab.c_str(),
                (unsigned long long)st.finished_length);
  ttft_.render(out, "vllm:time_to_first_token_seconds", "Time to first token.", lab);
  itl_.render(out, "vllm:inter_token_latency_seconds", "Time between tokens.", lab);
  e2e_.render(out, "vllm:e2e_request_latency_seconds", "Request latency.", lab);
  return out;
}

}  // namespace leanlm
