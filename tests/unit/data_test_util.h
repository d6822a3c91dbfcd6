// Helpers for the data-layer tests: fixture images written into a temporary folder at test time
// (stb_image_write for PNG/JPEG, a tiny hand-rolled PNG writer for 16-bit and palette PNGs, libwebp's
// encoder for WebP), so no binary fixtures are checked in.
#pragma once

#include <gtest/gtest.h>
#include <stb/stb_image_write.h>
#include <webp/encode.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

// Compiled into Debian's libstb but only declared in stb_image_write.h's implementation section.
extern "C" unsigned char* stbi_zlib_compress(unsigned char* data, int data_len, int* out_len, int quality);

namespace zerodiff::data::testing_util {

/// A fresh, empty folder under GoogleTest's TempDir.
inline std::string fresh_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::path(::testing::TempDir()) /
                   ("zd_data_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Interleaved 8-bit pixels (channels 1..4) as PNG via stb_image_write.
inline void write_png(const std::string& path, int w, int h, int channels, const std::vector<uint8_t>& pixels) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, channels, pixels.data(), w * channels)) << path;
}

/// A w x h RGB image filled with one colour.
inline void write_solid_png(const std::string& path, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  std::vector<uint8_t> px(static_cast<size_t>(w * h * 3));
  for (size_t i = 0; i < px.size(); i += 3) px[i] = r, px[i + 1] = g, px[i + 2] = b;
  write_png(path, w, h, 3, px);
}

inline void write_jpeg(const std::string& path, int w, int h, const std::vector<uint8_t>& rgb, int quality = 95) {
  ASSERT_TRUE(stbi_write_jpg(path.c_str(), w, h, 3, rgb.data(), quality)) << path;
}

/// Lossless WebP from interleaved RGBA.
inline void write_webp_rgba(const std::string& path, int w, int h, const std::vector<uint8_t>& rgba) {
  uint8_t* out = nullptr;
  const size_t size = WebPEncodeLosslessRGBA(rgba.data(), w, h, w * 4, &out);
  ASSERT_GT(size, 0u);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(out), static_cast<std::streamsize>(size));
  WebPFree(out);
}

inline uint32_t crc32(const std::string& bytes) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : bytes) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

inline std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

inline std::string png_chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}

/// A PNG from raw scanlines (filter byte 0 is added): any bit depth / colour type, optional PLTE and tRNS.
/// `header_only` writes the signature and IHDR only (enough for a size query: a "decompression bomb").
inline std::string make_png(uint32_t w, uint32_t h, int bit_depth, int color_type, const std::string& scanlines,
                            size_t row_bytes, const std::string& plte = {}, const std::string& trns = {},
                            bool header_only = false) {
  std::string ihdr = be32(w) + be32(h);
  ihdr += static_cast<char>(bit_depth);
  ihdr += static_cast<char>(color_type);
  ihdr += std::string(3, '\0');
  std::string png = "\x89PNG\r\n\x1a\n";
  png += png_chunk("IHDR", ihdr);
  if (header_only) return png;
  if (!plte.empty()) png += png_chunk("PLTE", plte);
  if (!trns.empty()) png += png_chunk("tRNS", trns);
  std::string filtered;
  for (uint32_t y = 0; y < h; ++y) filtered += '\0' + scanlines.substr(y * row_bytes, row_bytes);
  int zlen = 0;
  unsigned char* z = stbi_zlib_compress(reinterpret_cast<unsigned char*>(filtered.data()),
                                        static_cast<int>(filtered.size()), &zlen, 8);
  png += png_chunk("IDAT", std::string(reinterpret_cast<char*>(z), static_cast<size_t>(zlen)));
  std::free(z);
  png += png_chunk("IEND", "");
  return png;
}

}  // namespace zerodiff::data::testing_util
