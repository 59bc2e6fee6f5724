#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace leanlm {

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(total > 0 ? total : 1), enabled_(total > 0 && isatty(2) != 0) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t done) {
  if (!enabled_ || finished_) return;
  int permille = int(done * 1000 / total_);
  if (permille == last_permille_) return;
  last_permille_ = permille;
  const int width = 40;
  int filled = permille * width / 1000;
  std::fprintf(stderr, "\r%s [", label_.c_str());
  for (int i = 0; i < width; ++i) std::fputc(i < filled ? '#' : '.', stderr);
  std::fprintf(stderr, "] %5.1f%%", permille / 10.0);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  if (last_permille_ >= 0) std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

}  // namespace leanlm
