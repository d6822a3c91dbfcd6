// ImageTransform: resize shorter side (antialiased bicubic), center/random crop, flip, normalise to [-1, 1].
#include "zerodiff/data/ImageTransform.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>

#include "zerodiff/core/Error.h"

namespace zerodiff::data {

ImageTransform::ImageTransform(ImageTransformOptions options) : options_(options) {
  ZD_CHECK(options_.resolution >= 1, "resolution must be >= 1, got ", options_.resolution);
}

at::Tensor ImageTransform::resize_shorter_side(const at::Tensor& image, int64_t size) {
  ZD_CHECK(image.dim() == 3 && image.size(0) == 3 && image.scalar_type() == at::kByte,
           "image: expected a uint8 [3, H, W] tensor, got ", image.scalar_type(), " ", image.sizes());
  const int64_t h = image.size(1), w = image.size(2);
  if (std::min(h, w) == size) return image;
  int64_t new_h = size, new_w = size;
  // torchvision's _compute_resized_output_size: the long side is int(size * long / short).
  if (h <= w) {
    new_w = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(w) / static_cast<double>(h));
  } else {
    new_h = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(h) / static_cast<double>(w));
  }
  const at::Tensor x = image.unsqueeze(0).to(at::kFloat);  // [1, 3, H, W]
  const std::array<int64_t, 2> out_size{new_h, new_w};
  const at::Tensor y = at::_upsample_bicubic2d_aa(x, at::IntArrayRef(out_size), /*align_corners=*/false);
  return y.clamp(0, 255).round().to(at::kByte).squeeze(0).contiguous();  // [3, new_h, new_w]
}

std::pair<int64_t, int64_t> ImageTransform::center_crop_offsets(int64_t height, int64_t width, int64_t size) {
  // torchvision's center_crop: int(round((H - size) / 2.0)); Python rounds half to even, as nearbyint does.
  const auto top = static_cast<int64_t>(std::nearbyint(static_cast<double>(height - size) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint(static_cast<double>(width - size) / 2.0));
  return {top, left};
}

at::Tensor ImageTransform::normalize(const at::Tensor& image) {
  // ToTensor (x / 255) then Normalize(mean 0.5, std 0.5), in that order for bitwise parity with torchvision.
  return image.to(at::kFloat).div(255.0).sub(0.5).div(0.5).contiguous();
}

at::Tensor ImageTransform::operator()(const at::Tensor& image, Rng& rng) const {
  const int64_t res = options_.resolution;
  const at::Tensor resized = resize_shorter_side(image, res);
  const int64_t h = resized.size(1), w = resized.size(2);
  int64_t top = 0, left = 0;
  if (options_.center_crop) {
    std::tie(top, left) = center_crop_offsets(h, w, res);
  } else {
    top = rng.uniform_int(0, h - res);
    left = rng.uniform_int(0, w - res);
  }
  at::Tensor crop = resized.slice(1, top, top + res).slice(2, left, left + res);
  if (options_.random_flip && rng.bernoulli(0.5)) crop = crop.flip({2});
  return normalize(crop);
}

}  // namespace zerodiff::data
