// zerodiff/data/ImageDecoder.h — image files to uint8 RGB tensors.
//
// Formats: PNG, JPEG (baseline and progressive), BMP, GIF (first frame), TGA through stb_image (Debian
// libstb); WebP (still images) through libwebp. The format is recognised from the file's first bytes, not
// its extension. Every image comes out as RGB:
//  * grayscale is replicated to the three channels, palette images are expanded, 16-bit channels are
//    reduced to 8 bits (stb_image: value >> 8);
//  * transparency (alpha channel, palette or grayscale+alpha, tRNS) is composited over WHITE:
//    rgb = round((c * a + 255 * (255 - a)) / 255). (diffusers' scripts call PIL's convert("RGB"), which
//    drops alpha and exposes whatever colour transparent pixels happen to store; white is what a viewer
//    shows and what the bundled emoji dataset uses.)
// Decompression bombs: the declared width and height are read first (the PNG IHDR, stbi_info_from_memory,
// WebPGetFeatures) and an image over `max_pixels` is refused before any pixel buffer is allocated. The
// default limit is
// Pillow's Image.MAX_IMAGE_PIXELS (89,478,485 = 1024 * 1024 * 1024 / 4 / 3). (stb_image additionally
// refuses any image over 2^30 bytes decoded; for formats other than PNG and WebP that surfaces as
// "cannot decode image (...)".)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace zerodiff::data {

class ImageDecoder {
 public:
  /// Pillow's default decompression-bomb limit, in pixels.
  static constexpr int64_t kDefaultMaxPixels = 89'478'485;

  /// `max_pixels`: largest width * height accepted (> 0).
  explicit ImageDecoder(int64_t max_pixels = kDefaultMaxPixels);

  /// Reads and decodes the file at `path`: uint8 RGB [3, H, W], values in [0, 255].
  /// Throws IoError naming `path`: "<path>: cannot open file", "<path>: cannot decode image (<reason>)",
  /// "<path>: image is 20000x20000 (400000000 pixels), over the limit of 89478485 pixels (max_image_pixels)".
  at::Tensor decode_file(const std::string& path) const;

  /// Decodes `size` bytes at `data`; `name` labels errors. Same result and errors as decode_file.
  at::Tensor decode(const uint8_t* data, size_t size, const std::string& name) const;

  int64_t max_pixels() const { return max_pixels_; }

 private:
  int64_t max_pixels_;
};

}  // namespace zerodiff::data
