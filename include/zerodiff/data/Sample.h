// zerodiff/data/Sample.h — one image-caption pair as it moves through the pipeline.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace zerodiff::data {

/// One sample. Out of a Dataset (`Dataset::get`) the image is uint8 RGB [3, H, W] in [0, 255] at the
/// stored size; after ImageTransform it is float32 [3, resolution, resolution] in [-1, 1].
struct Sample {
  at::Tensor image;     ///< [3, H, W]; uint8 from a dataset, float32 after the transform
  std::string caption;  ///< the caption (one picked when the sample has several; "" after dropout)
  int64_t index = -1;   ///< index of the sample in its dataset
};

}  // namespace zerodiff::data
