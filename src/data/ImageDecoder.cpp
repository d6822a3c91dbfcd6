// ImageDecoder: stb_image for PNG/JPEG/BMP/GIF/TGA, libwebp for WebP; everything to RGB over white.
#include "zerodiff/data/ImageDecoder.h"

#include <ATen/ATen.h>
#include <stb/stb_image.h>
#include <webp/decode.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include "zerodiff/core/Error.h"

namespace zerodiff::data {
namespace {

bool is_webp(const uint8_t* data, size_t size) {
  return size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0;
}

void check_pixels(int64_t width, int64_t height, int64_t max_pixels, const std::string& name) {
  const int64_t pixels = width * height;
  ZD_CHECK_T(IoError, pixels <= max_pixels, name, ": image is ", width, "x", height, " (", pixels,
             " pixels), over the limit of ", max_pixels, " pixels (max_image_pixels)");
}

// RGBA (interleaved, 8-bit) -> RGB [3, H, W] composited over white.
at::Tensor rgba_to_rgb_planar(const uint8_t* rgba, int64_t width, int64_t height) {
  at::Tensor out = at::empty({3, height, width}, at::kByte);
  uint8_t* r = out.data_ptr<uint8_t>();
  uint8_t* g = r + width * height;
  uint8_t* b = g + width * height;
  const int64_t n = width * height;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = rgba + 4 * i;
    const uint32_t a = p[3];
    if (a == 255) {
      r[i] = p[0], g[i] = p[1], b[i] = p[2];
    } else {
      const uint32_t white = 255u * (255u - a) + 127u;  // + 127: round to nearest
      r[i] = static_cast<uint8_t>((p[0] * a + white) / 255u);
      g[i] = static_cast<uint8_t>((p[1] * a + white) / 255u);
      b[i] = static_cast<uint8_t>((p[2] * a + white) / 255u);
    }
  }
  return out;
}

}  // namespace

ImageDecoder::ImageDecoder(int64_t max_pixels) : max_pixels_(max_pixels) {
  ZD_CHECK(max_pixels > 0, "max_image_pixels must be > 0, got ", max_pixels);
}

at::Tensor ImageDecoder::decode_file(const std::string& path) const {
  std::ifstream in(path, std::ios::binary);
  ZD_CHECK_T(IoError, in.good(), path, ": cannot open file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ZD_CHECK_T(IoError, !in.bad(), path, ": read error");
  return decode(bytes.data(), bytes.size(), path);
}

at::Tensor ImageDecoder::decode(const uint8_t* data, size_t size, const std::string& name) const {
  ZD_CHECK_T(IoError, size > 0, name, ": cannot decode image (empty file)");
  if (is_webp(data, size)) {
    WebPBitstreamFeatures features;
    ZD_CHECK_T(IoError, WebPGetFeatures(data, size, &features) == VP8_STATUS_OK, name,
               ": cannot decode image (invalid WebP header)");
    ZD_CHECK_T(IoError, !features.has_animation, name, ": cannot decode image (animated WebP is not supported)");
    check_pixels(features.width, features.height, max_pixels_, name);
    const int64_t w = features.width, h = features.height;
    std::vector<uint8_t> rgba(static_cast<size_t>(w * h * 4));
    ZD_CHECK_T(IoError,
               WebPDecodeRGBAInto(data, size, rgba.data(), rgba.size(), static_cast<int>(w * 4)) != nullptr,
               name, ": cannot decode image (corrupt WebP data)");
    return rgba_to_rgb_planar(rgba.data(), w, h);
  }
  ZD_CHECK_T(IoError, size <= static_cast<size_t>(INT32_MAX), name, ": cannot decode image (file over 2 GiB)");
  if (size >= 24 && std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    // Read the PNG size ourselves: stb_image's own guard (width * height * channels < 2^30) would reject the
    // largest bombs with a vaguer "unknown image type".
    auto be32 = [&](size_t at) {
      return (int64_t{data[at]} << 24) | (int64_t{data[at + 1]} << 16) | (int64_t{data[at + 2]} << 8) | data[at + 3];
    };
    check_pixels(be32(16), be32(20), max_pixels_, name);
  }
  const auto* bytes = reinterpret_cast<const stbi_uc*>(data);
  const int len = static_cast<int>(size);
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(bytes, len, &w, &h, &channels)) {
    const char* why = stbi_failure_reason();
    ZD_CHECK_T(IoError, false, name, ": cannot decode image (", why ? why : "unknown format",
               "; supported: PNG, JPEG, WebP, BMP, GIF, TGA)");
  }
  check_pixels(w, h, max_pixels_, name);
  // 4 channels requested: gray, gray+alpha, palette and RGB are expanded, 16-bit reduced to 8 bits.
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(stbi_load_from_memory(bytes, len, &w, &h, &channels, 4),
                                                   stbi_image_free);
  if (!pixels) {
    const char* why = stbi_failure_reason();
    ZD_CHECK_T(IoError, false, name, ": cannot decode image (", why ? why : "corrupt data", ")");
  }
  return rgba_to_rgb_planar(pixels.get(), w, h);
}

}  // namespace zerodiff::data
