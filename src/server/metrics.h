// /metrics in Prometheus' text format: the scheduler's counters and gauges, and latency histograms
// fed by the engine loop (time to first token, time between tokens, whole requests). The same
// figures also go out under the vLLM names that routers and dashboards read (vllm:*, labelled
// with model_name).
#pragma once
#include <mutex>
#include <string>
#include <vector>

#include "server/scheduler.h"

namespace leanlm {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double x);
  // "# HELP", "# TYPE" and the _bucket / _sum / _count lines of `name`, with `labels` (like
  // model_name="x") on every line.
  void render(std::string& out, const std::string& name, const std::string& help,
              const std::string& labels = "") const;

 private:
  std::vector<double> bounds_;
  std::vector<unsigned long long> counts_;  // per bucket (not cumulative)
  double sum_ = 0;
  unsigned long long n_ = 0;
  mutable std::mutex mu_;
};

class ServerMetrics : public SchedulerObserver {
 public:
  // model_name: the label of the vLLM-compatible series.
  explicit ServerMetrics(std::string model_name = "");
  void set_model_name(std::string m) { model_ = std::move(m); }
  void first_token(double s) override { ttft_.observe(s); }
  void inter_token(double s) override { itl_.observe(s); }
  void finished(double s, FinishReason) override { e2e_.observe(s); }
  void count_http(int status);  // responses by status class (rejections of the queue included)
  std::string render(const SchedulerStats& st) const;

 private:
  std::string model_;
  Histogram ttft_, itl_, e2e_;
  mutable std::mutex mu_;
  unsigned long long http_2xx_ = 0, http_4xx_ = 0, http_429_ = 0, http_5xx_ = 0;
};

}  // namespace leanlm
