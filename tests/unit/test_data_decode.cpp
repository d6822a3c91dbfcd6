// ImageDecoder: PNG (RGB, RGBA, gray, 16-bit, palette + tRNS), JPEG, WebP to uint8 RGB [3, H, W];
// transparency over white; decompression bombs refused before allocation; corrupt files named.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "data_test_util.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/data/ImageDecoder.h"

using namespace zerodiff::data;
using namespace zerodiff::data::testing_util;
using zerodiff::IoError;

namespace {

std::string error_of(const ImageDecoder& decoder, const std::string& path) {
  try {
    decoder.decode_file(path);
  } catch (const IoError& e) {
    return e.what();
  }
  return "<no error>";
}

std::vector<int64_t> pixel(const at::Tensor& image, int64_t y, int64_t x) {
  return {image[0][y][x].item<int64_t>(), image[1][y][x].item<int64_t>(), image[2][y][x].item<int64_t>()};
}

}  // namespace

TEST(DataImageDecoder, RgbPngIsExact) {
  const std::string dir = fresh_dir("decode");
  std::vector<uint8_t> px(5 * 3 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 7);
  write_png(dir + "/a.png", 5, 3, 3, px);
  const at::Tensor image = ImageDecoder().decode_file(dir + "/a.png");
  ASSERT_EQ(image.sizes(), (at::IntArrayRef{3, 3, 5}));
  EXPECT_EQ(image.scalar_type(), at::kByte);
  const at::Tensor expected = at::from_blob(px.data(), {3, 5, 3}, at::kByte).permute({2, 0, 1});
  EXPECT_TRUE(at::equal(image, expected));
}

TEST(DataImageDecoder, AlphaIsCompositedOverWhite) {
  const std::string dir = fresh_dir("decode");
  // Pixels: opaque red, fully transparent black, half-transparent red (a = 128), transparent-but-green.
  const std::vector<uint8_t> px{255, 0, 0, 255, 0, 0, 0, 0, 255, 0, 0, 128, 0, 255, 0, 0};
  write_png(dir + "/a.png", 4, 1, 4, px);
  const at::Tensor image = ImageDecoder().decode_file(dir + "/a.png");
  ASSERT_EQ(image.sizes(), (at::IntArrayRef{3, 1, 4}));
  EXPECT_EQ(pixel(image, 0, 0), (std::vector<int64_t>{255, 0, 0}));
  EXPECT_EQ(pixel(image, 0, 1), (std::vector<int64_t>{255, 255, 255}));
  // round((0 * 128 + 255 * 127) / 255) = 127
  EXPECT_EQ(pixel(image, 0, 2), (std::vector<int64_t>{255, 127, 127}));
  EXPECT_EQ(pixel(image, 0, 3), (std::vector<int64_t>{255, 255, 255}));
  // The same through WebP (lossless keeps the colour under alpha).
  write_webp_rgba(dir + "/a.webp", 4, 1, px);
  EXPECT_TRUE(at::equal(ImageDecoder().decode_file(dir + "/a.webp"), image));
}

TEST(DataImageDecoder, GrayscaleIsReplicated) {
  const std::string dir = fresh_dir("decode");
  write_png(dir + "/g.png", 3, 1, 1, {0, 100, 255});
  const at::Tensor image = ImageDecoder().decode_file(dir + "/g.png");
  EXPECT_EQ(pixel(image, 0, 1), (std::vector<int64_t>{100, 100, 100}));
  EXPECT_EQ(pixel(image, 0, 2), (std::vector<int64_t>{255, 255, 255}));
}

TEST(DataImageDecoder, SixteenBitPngIsReducedToEightBits) {
  const std::string dir = fresh_dir("decode");
  // 2 x 1 RGB, 16 bits per channel, big-endian samples.
  const std::string rows("\x12\x34\xAB\xCD\xFF\xFF" "\x00\x01\x80\x00\x7F\xFF", 12);
  write_text(dir + "/16.png", make_png(2, 1, 16, /*RGB*/ 2, rows, 12));
  const at::Tensor image = ImageDecoder().decode_file(dir + "/16.png");
  EXPECT_EQ(pixel(image, 0, 0), (std::vector<int64_t>{0x12, 0xAB, 0xFF}));
  EXPECT_EQ(pixel(image, 0, 1), (std::vector<int64_t>{0x00, 0x80, 0x7F}));
}

TEST(DataImageDecoder, PaletteWithTransparencyIsExpanded) {
  const std::string dir = fresh_dir("decode");
  const std::string plte("\x00\x00\xFF" "\x00\xFF\x00" "\x10\x20\x30", 9);  // blue, green, dark
  const std::string trns("\xFF\x00", 2);                                     // entry 1 transparent
  const std::string rows("\x00\x01\x02", 3);                                 // 8-bit indices
  write_text(dir + "/p.png", make_png(3, 1, 8, /*palette*/ 3, rows, 3, plte, trns));
  const at::Tensor image = ImageDecoder().decode_file(dir + "/p.png");
  EXPECT_EQ(pixel(image, 0, 0), (std::vector<int64_t>{0, 0, 255}));
  EXPECT_EQ(pixel(image, 0, 1), (std::vector<int64_t>{255, 255, 255}));
  EXPECT_EQ(pixel(image, 0, 2), (std::vector<int64_t>{0x10, 0x20, 0x30}));
}

TEST(DataImageDecoder, JpegAndWebpDecode) {
  const std::string dir = fresh_dir("decode");
  std::vector<uint8_t> rgb(16 * 16 * 3);
  for (size_t i = 0; i < rgb.size(); i += 3) rgb[i] = 200, rgb[i + 1] = 100, rgb[i + 2] = 50;
  write_jpeg(dir + "/a.jpg", 16, 16, rgb);
  const at::Tensor jpg = ImageDecoder().decode_file(dir + "/a.jpg");
  ASSERT_EQ(jpg.sizes(), (at::IntArrayRef{3, 16, 16}));
  const at::Tensor want = at::tensor({200, 100, 50}, at::kInt).view({3, 1, 1});
  EXPECT_LE((jpg.to(at::kInt) - want).abs().max().item<int>(), 3);  // lossy
  std::vector<uint8_t> rgba;
  for (size_t i = 0; i < rgb.size(); i += 3) rgba.insert(rgba.end(), {rgb[i], rgb[i + 1], rgb[i + 2], 255});
  write_webp_rgba(dir + "/a.webp", 16, 16, rgba);
  const at::Tensor webp = ImageDecoder().decode_file(dir + "/a.webp");
  EXPECT_TRUE(at::equal(webp.to(at::kInt), want.expand({3, 16, 16})));
}

TEST(DataImageDecoder, DecompressionBombIsRefusedBeforeDecoding) {
  const std::string dir = fresh_dir("decode");
  // Only a header declaring 100000 x 100000 pixels: decoding would need 40 GB.
  write_text(dir + "/bomb.png", make_png(100000, 100000, 8, 2, "", 0, {}, {}, /*header_only=*/true));
  EXPECT_EQ(error_of(ImageDecoder(), dir + "/bomb.png"),
            dir + "/bomb.png: image is 100000x100000 (10000000000 pixels), over the limit of 89478485 pixels "
                  "(max_image_pixels)");
  // The limit is configurable, and applies to WebP too.
  write_webp_rgba(dir + "/a.webp", 16, 16, std::vector<uint8_t>(16 * 16 * 4, 255));
  EXPECT_EQ(error_of(ImageDecoder(100), dir + "/a.webp"),
            dir + "/a.webp: image is 16x16 (256 pixels), over the limit of 100 pixels (max_image_pixels)");
  EXPECT_EQ(ImageDecoder(256).decode_file(dir + "/a.webp").size(1), 16);
}

TEST(DataImageDecoder, CorruptFilesAreNamed) {
  const std::string dir = fresh_dir("decode");
  write_text(dir + "/junk.png", "this is not an image at all");
  EXPECT_EQ(error_of(ImageDecoder(), dir + "/junk.png").rfind(dir + "/junk.png: cannot decode image (", 0), 0u)
      << error_of(ImageDecoder(), dir + "/junk.png");
  // A truncated PNG: valid header, IDAT cut short.
  std::vector<uint8_t> px(32 * 32 * 3, 77);
  write_png(dir + "/ok.png", 32, 32, 3, px);
  const std::string bytes = read_bytes(dir + "/ok.png");
  write_text(dir + "/cut.png", bytes.substr(0, 40));
  EXPECT_EQ(error_of(ImageDecoder(), dir + "/cut.png").rfind(dir + "/cut.png: cannot decode image (", 0), 0u);
  write_text(dir + "/empty.png", "");
  EXPECT_EQ(error_of(ImageDecoder(), dir + "/empty.png"), dir + "/empty.png: cannot decode image (empty file)");
  EXPECT_EQ(error_of(ImageDecoder(), dir + "/nope.png"), dir + "/nope.png: cannot open file");
  // A WebP with a valid RIFF header but garbage data.
  write_text(dir + "/bad.webp", std::string("RIFF\x20\x00\x00\x00WEBPVP8 ", 16) + std::string(24, '\x11'));
  EXPECT_EQ(error_of(ImageDecoder(), dir + "/bad.webp").rfind(dir + "/bad.webp: cannot decode image (", 0), 0u);
}
