// zerodiff/data/ImageTransform.h — the image transforms of diffusers' train_text_to_image.py:
//   transforms.Resize(resolution, interpolation=...), CenterCrop(resolution) or RandomCrop(resolution),
//   RandomHorizontalFlip() when random_flip, ToTensor(), Normalize([0.5], [0.5])
// applied to a uint8 RGB [3, H, W] image, giving float32 [3, resolution, resolution] in [-1, 1].
//
// Resize: the shorter side becomes `resolution`, the longer int(resolution * long / short) (torchvision's
// rule, truncating). The filter is antialiased bicubic (ATen's _upsample_bicubic2d_aa, the kernel behind
// torchvision's Resize(BICUBIC, antialias=True)), which is Pillow's BICUBIC (a = -0.5): when downscaling the
// kernel support is stretched by the scale factor, so every source pixel contributes (area-like filtering,
// no aliasing); when upscaling it is plain bicubic interpolation. The result is clamped to [0, 255] and
// rounded to integers, as the uint8 PIL image of the reference pipeline is, so values match Pillow's
// resize within 1/255 (Pillow computes in fixed point). An image whose shorter side already equals
// `resolution` is not resampled.
// Crop: center crop offsets are round((H - res) / 2), round((W - res) / 2) with ties to even (Python's
// round, as torchvision's CenterCrop); random crop draws top in [0, H - res], then left in [0, W - res].
// Flip: when random_flip, one rng.bernoulli(0.5) draw after the crop decides a horizontal flip.
// Normalise: x / 127.5 - 1 (= (x / 255 - 0.5) / 0.5).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

#include "zerodiff/data/Rng.h"

namespace zerodiff::data {

struct ImageTransformOptions {
  int64_t resolution = 512;  ///< output side in pixels (> 0)
  bool center_crop = false;  ///< center crop; otherwise a random crop (diffusers' default)
  bool random_flip = false;  ///< horizontal flip with probability 0.5
};

class ImageTransform {
 public:
  /// Throws zerodiff::Error when resolution < 1.
  explicit ImageTransform(ImageTransformOptions options);

  /// uint8 RGB [3, H, W] -> float32 [3, resolution, resolution] in [-1, 1]. Draws from `rng` in this order:
  /// crop top and left (random crop only), flip (random_flip only). Throws zerodiff::Error when `image` is
  /// not a uint8 [3, H, W] tensor.
  at::Tensor operator()(const at::Tensor& image, Rng& rng) const;

  /// Resizes so the shorter side is `size` (see the file comment): uint8 [3, H, W] -> uint8 [3, H', W'].
  static at::Tensor resize_shorter_side(const at::Tensor& image, int64_t size);
  /// The center-crop offsets (top, left) of a `size` x `size` crop of an H x W image.
  static std::pair<int64_t, int64_t> center_crop_offsets(int64_t height, int64_t width, int64_t size);
  /// uint8 [3, H, W] in [0, 255] -> float32 [3, H, W] in [-1, 1].
  static at::Tensor normalize(const at::Tensor& image);

  const ImageTransformOptions& options() const { return options_; }

 private:
  ImageTransformOptions options_;
};

}  // namespace zerodiff::data
