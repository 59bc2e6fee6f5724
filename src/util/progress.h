// A progress bar on stderr, drawn only when stderr is a terminal (and total > 0).
#pragma once
#include <cstdint>
#include <string>

namespace leanlm {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  ~ProgressBar();
  void update(int64_t done);
  void finish();

 private:
  std::string label_;
  int64_t total_;
  int last_permille_ = -1;
  bool enabled_;
  bool finished_ = false;
};

}  // namespace leanlm
