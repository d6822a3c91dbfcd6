// SyntheticShapesDataset: a coloured circle / square / triangle on a coloured background, from (seed, index).
#include "zerodiff/data/SyntheticShapesDataset.h"

#include <ATen/ATen.h>

#include <cmath>

#include "zerodiff/core/Error.h"

namespace zerodiff::data {
namespace {

// Point-in-shape at (x, y) (pixel units, y down).
bool inside(const ShapeSpec& s, double x, double y) {
  const double dx = x - s.cx, dy = y - s.cy;
  if (s.shape == Shape::circle) return dx * dx + dy * dy <= s.radius * s.radius;
  if (s.shape == Shape::square) return std::abs(dx) <= s.radius && std::abs(dy) <= s.radius;
  // Upward equilateral triangle with circumradius r: apex (0, -r), base at y = r / 2.
  const double r = s.radius;
  if (dy > r / 2) return false;
  // Edges from the apex: |dx| <= (dy + r) / sqrt(3).
  return std::abs(dx) * std::sqrt(3.0) <= dy + r;
}

}  // namespace

const std::array<NamedColor, 8>& SyntheticShapesDataset::colors() {
  static const std::array<NamedColor, 8> palette{{
      {"red", {220, 30, 30}},
      {"green", {30, 160, 60}},
      {"blue", {30, 70, 220}},
      {"yellow", {240, 210, 30}},
      {"purple", {130, 50, 170}},
      {"orange", {245, 135, 20}},
      {"white", {245, 245, 245}},
      {"black", {20, 20, 20}},
  }};
  return palette;
}

SyntheticShapesDataset::SyntheticShapesDataset(SyntheticShapesOptions options) : options_(options) {
  ZD_CHECK(options_.size >= 1, "synthetic dataset size must be >= 1, got ", options_.size);
  ZD_CHECK(options_.image_size >= 8, "synthetic image size must be >= 8, got ", options_.image_size);
}

ShapeSpec SyntheticShapesDataset::spec(int64_t index) const {
  ZD_CHECK(index >= 0 && index < size(), "sample index ", index, " out of range [0, ", size(), ")");
  Rng rng = Rng::for_sample(options_.seed, /*epoch=*/-1, index);
  const int n_colors = static_cast<int>(colors().size());
  ShapeSpec s;
  s.shape = static_cast<Shape>(rng.uniform_int(0, 2));  // circle, square, triangle
  s.color = static_cast<int>(rng.uniform_int(0, n_colors - 1));
  s.background = static_cast<int>(rng.uniform_int(0, n_colors - 2));
  if (s.background >= s.color) ++s.background;
  const double side = static_cast<double>(options_.image_size);
  // Shapes stay near the centre (offset up to 5 % of the side) and large enough to cover it, so that
  // "centre colour = shape colour, corner colour = background colour" holds for every sample: the e2e
  // quality test of generated images measures exactly that.
  s.radius = side * (0.25 + 0.10 * rng.uniform());
  s.cx = side / 2 + side * 0.1 * (rng.uniform() - 0.5);
  s.cy = side / 2 + side * 0.1 * (rng.uniform() - 0.5);
  return s;
}

std::string SyntheticShapesDataset::caption(const ShapeSpec& s) {
  return str("a ", colors()[static_cast<size_t>(s.color)].name, " ", s.shape, " on a ",
             colors()[static_cast<size_t>(s.background)].name, " background");
}

Sample SyntheticShapesDataset::get(int64_t index, Rng& /*rng*/) const {
  const ShapeSpec s = spec(index);
  const int64_t n = options_.image_size;
  const auto& fg = colors()[static_cast<size_t>(s.color)].rgb;
  const auto& bg = colors()[static_cast<size_t>(s.background)].rgb;
  at::Tensor image = at::empty({3, n, n}, at::kByte);
  uint8_t* out = image.data_ptr<uint8_t>();
  constexpr int kSub = 4;  // 4x4 supersampling
  for (int64_t y = 0; y < n; ++y) {
    for (int64_t x = 0; x < n; ++x) {
      int covered = 0;
      for (int sy = 0; sy < kSub; ++sy) {
        for (int sx = 0; sx < kSub; ++sx) {
          covered += inside(s, x + (sx + 0.5) / kSub, y + (sy + 0.5) / kSub) ? 1 : 0;
        }
      }
      for (int c = 0; c < 3; ++c) {
        const int value = (fg[c] * covered + bg[c] * (kSub * kSub - covered) + kSub * kSub / 2) / (kSub * kSub);
        out[(c * n + y) * n + x] = static_cast<uint8_t>(value);
      }
    }
  }
  return Sample{image, caption(s), index};
}

std::string SyntheticShapesDataset::describe(int64_t index) const { return str("synthetic #", index); }

}  // namespace zerodiff::data
