#include "eval_plot.h"

#include <gd.h>
#include <gdfonts.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "leanlm/leanlm.h"

namespace leanlm::cli {

namespace {

// A "nice" tick step for a range: 1, 2 or 5 times a power of ten.
double tick_step(double range, int want) {
  const double raw = range / want, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

void text(gdImagePtr im, int x, int y, const std::string& s, int color) {
  gdImageString(im, gdFontGetSmall(), x, y, reinterpret_cast<unsigned char*>(const_cast<char*>(s.c_str())), color);
}

}  // namespace

void write_quality_plot(const std::string& path, const std::vector<PlotPoint>& points, const std::string& x_label,
                        const std::string& y_label) {
  const int W = 900, H = 600, L = 80, R = 40, T = 40, B = 60;
  gdImagePtr im = gdImageCreateTrueColor(W, H);
  const int white = gdTrueColorAlpha(255, 255, 255, 0), black = gdTrueColorAlpha(0, 0, 0, 0);
  const int grey = gdTrueColorAlpha(215, 215, 215, 0), blue = gdTrueColorAlpha(31, 90, 200, 0);
  gdImageFilledRectangle(im, 0, 0, W - 1, H - 1, white);

  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  for (const PlotPoint& p : points) x1 = std::max(x1, p.x), y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
  x1 *= 1.1;
  y1 += (y1 - y0) * 0.1;
  const double xs = tick_step(x1 - x0, 8), ys = tick_step(y1 - y0, 8);
  y0 = std::floor(y0 / ys) * ys;
  auto px = [&](double x) { return L + int((x - x0) / (x1 - x0) * (W - L - R)); };
  auto py = [&](double y) { return H - B - int((y - y0) / (y1 - y0) * (H - T - B)); };

  for (double x = x0; x <= x1 + 1e-9; x += xs) {
    gdImageLine(im, px(x), T, px(x), H - B, grey);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    text(im, px(x) - 10, H - B + 6, buf, black);
  }
  for (double y = y0; y <= y1 + 1e-9; y += ys) {
    gdImageLine(im, L, py(y), W - R, py(y), grey);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", y);
    text(im, L - 8 - 6 * int(std::string(buf).size()), py(y) - 6, buf, black);
  }
  gdImageRectangle(im, L, T, W - R, H - B, black);
  if (y0 < 0) gdImageLine(im, L, py(0), W - R, py(0), black);
  text(im, W / 2 - 3 * int(x_label.size()), H - B + 26, x_label, black);
  text(im, 10, 14, y_label, black);
  for (const PlotPoint& p : points) {
    gdImageFilledEllipse(im, px(p.x), py(p.y), 9, 9, blue);
    text(im, px(p.x) + 7, py(p.y) - 14, p.label, black);
  }

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) {
    gdImageDestroy(im);
    fail(path + ": cannot write");
  }
  gdImagePng(im, f);
  const bool ok = std::fclose(f) == 0;
  gdImageDestroy(im);
  std::error_code ec;
  if (ok) std::filesystem::rename(tmp, path, ec);
  if (!ok || ec) fail(path + ": cannot write");
}

}  // namespace leanlm::cli
