// The plot `leanlm eval --png` writes: one labelled point per KV configuration, quality loss
// against KV bytes per token (drawn with libgd).
#pragma once
#include <string>
#include <vector>

namespace leanlm::cli {

struct PlotPoint {
  std::string label;
  double x, y;  // bytes per token, quality loss
};

void write_quality_plot(const std::string& path, const std::vector<PlotPoint>& points, const std::string& x_label,
                        const std::string& y_label);

}  // namespace leanlm::cli
