// /metrics text: counters, cumulative histogram buckets, and the vLLM names routers read.
#include "server/metrics.h"

#include <gtest/gtest.h>

namespace leanlm {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(Metrics, RendersCountersHistogramsAndVllmNames) {
  ServerMetrics m("smol");
  m.first_token(0.02);
  m.first_token(0.3);
  m.first_token(100);
  m.inter_token(0.007);
  SchedulerStats st;
  st.running = 3, st.waiting = 2, st.generated_tokens = 42, st.preemptions = 1;
  st.kv_bytes = 256, st.kv_budget = 1024;
  st.requests_done = 5, st.finished_stop = 4, st.finished_length = 1;
  st.kv_bytes_by_codec = {{"f16", 200}, {"q8_0", 56}};
  const std::string t = m.render(st);
  EXPECT_TRUE(has_line(t, "leanlm:requests_running 3")) << t;
  EXPECT_TRUE(has_line(t, "leanlm:generation_tokens_total 42"));
  EXPECT_TRUE(has_line(t, "leanlm:kv_cache_bytes_by_codec{codec=\"q8_0\"} 56"));
  // Buckets are cumulative; +Inf holds every observation.
  EXPECT_TRUE(has_line(t, "leanlm:time_to_first_token_seconds_bucket{le=\"0.025\"} 1"));
  EXPECT_TRUE(has_line(t, "leanlm:time_to_first_token_seconds_bucket{le=\"0.5\"} 2"));
  EXPECT_TRUE(has_line(t, "leanlm:time_to_first_token_seconds_bucket{le=\"60\"} 2"));
  EXPECT_TRUE(has_line(t, "leanlm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 3"));
  EXPECT_TRUE(has_line(t, "leanlm:time_to_first_token_seconds_count 3"));
  EXPECT_TRUE(has_line(t, "vllm:num_requests_running{model_name=\"smol\"} 3"));
  EXPECT_TRUE(has_line(t, "vllm:num_requests_waiting{model_name=\"smol\"} 2"));
  EXPECT_TRUE(has_line(t, "vllm:kv_cache_usage_perc{model_name=\"smol\"} 0.25"));
  EXPECT_TRUE(has_line(t, "vllm:num_preemptions_total{model_name=\"smol\"} 1"));
  EXPECT_TRUE(has_line(t, "vllm:request_success_total{model_name=\"smol\",finished_reason=\"stop\"} 4"));
  EXPECT_TRUE(has_line(t, "vllm:inter_token_latency_seconds_bucket{model_name=\"smol\",le=\"0.01\"} 1"));
  EXPECT_TRUE(has_line(t, "vllm:time_to_first_token_seconds_count{model_name=\"smol\"} 3"));
}

}  // namespace
}  // namespace leanlm
