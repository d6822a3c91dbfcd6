// zerodiff/data/SyntheticShapesDataset.h — coloured shapes on coloured backgrounds, generated on the fly:
// a tiny, exact text-to-image task for tests and smoke runs (no files needed).
//
// Sample i is a function of (seed, i) only: one of circle / square / triangle in one of 8 named colours on a
// background of a different named colour, with a random size (radius 25–35 % of the side) and a position within 5 % of the centre
// (the shape lies fully inside the image). Edges are anti-aliased with 4x4 supersampling. The caption is
// exact: "a red circle on a blue background".
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "zerodiff/core/Enum.h"
#include "zerodiff/data/Dataset.h"

namespace zerodiff::data {

struct SyntheticShapesOptions {
  int64_t size = 1000;       ///< number of samples
  int64_t image_size = 64;   ///< side of the square images, in pixels (>= 8)
  uint64_t seed = 0;         ///< dataset seed (independent of the loader seed)
};

/// The shapes drawn; their names are the caption's words.
enum class Shape { circle, square, triangle };
inline constexpr EnumName<Shape> kShapeNames[] = {
    {Shape::circle, "circle"}, {Shape::square, "square"}, {Shape::triangle, "triangle"}};
constexpr std::span<const EnumName<Shape>> enum_names(Shape) { return kShapeNames; }

/// The parameters of one synthetic sample (what get() draws).
struct ShapeSpec {
  Shape shape = Shape::circle;
  int color = 0;            ///< index into SyntheticShapesDataset::colors()
  int background = 0;       ///< index into colors(), != color
  double cx = 0, cy = 0;    ///< centre in pixels (x right, y down)
  double radius = 0;        ///< circle radius; half side of the square; circumradius of the triangle
};

/// A named colour.
struct NamedColor {
  const char* name;
  std::array<uint8_t, 3> rgb;
};

class SyntheticShapesDataset : public Dataset {
 public:
  /// Throws zerodiff::Error when size < 1 or image_size < 8.
  explicit SyntheticShapesDataset(SyntheticShapesOptions options);

  int64_t size() const override { return options_.size; }
  /// Renders sample `index`: uint8 RGB [3, image_size, image_size]; `rng` is not used (the sample depends
  /// on (seed, index) only).
  Sample get(int64_t index, Rng& rng) const override;
  std::string describe(int64_t index) const override;

  /// The shape drawn for sample `index`.
  ShapeSpec spec(int64_t index) const;
  /// "a <colour> <shape> on a <colour> background".
  static std::string caption(const ShapeSpec& spec);
  /// The palette: red, green, blue, yellow, purple, orange, white, black.
  static const std::array<NamedColor, 8>& colors();

 private:
  SyntheticShapesOptions options_;
};

}  // namespace zerodiff::data
