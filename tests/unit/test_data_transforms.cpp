// Transforms: resize of the shorter side against Pillow's BICUBIC, crop offsets, flip, normalisation;
// caption dropout and tag shuffling; the portable RNG.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <set>

#include "zerodiff/core/Error.h"
#include "zerodiff/data/CaptionTransform.h"
#include "zerodiff/data/ImageTransform.h"
#include "zerodiff/data/Rng.h"

using namespace zerodiff::data;

namespace {

// The 4 x 6 RGB test image (values also used to compute Pillow's expected outputs below).
at::Tensor test_image() {
  at::Tensor t = at::empty({3, 4, 6}, at::kByte);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 6; ++x) {
      t[0][y][x] = (x * 40 + y * 10) % 256;
      t[1][y][x] = (200 - x * 30 + y * 5) % 256;
      t[2][y][x] = (y * 60 + (x % 2) * 50) % 256;
    }
  }
  return t;
}

at::Tensor ints(std::vector<int> values, std::vector<int64_t> shape) {
  return at::tensor(values, at::kInt).view(shape);
}

}  // namespace

TEST(DataImageTransform, ResizeMatchesPillowBicubic) {
  // Expected: PIL.Image.fromarray(img).resize((W', H'), Image.BICUBIC), Pillow 12.2 (tools: see this test's
  // test_image()); Pillow computes in 8-bit fixed point, we in float, hence the tolerance.
  const at::Tensor down = ImageTransform::resize_shorter_side(test_image(), 2);
  ASSERT_EQ(down.sizes(), (at::IntArrayRef{3, 2, 3}));
  const at::Tensor pil_down = ints({28, 106, 184, 46, 124, 202, 187, 128, 69, 196, 137, 78, 56, 60, 64, 166, 170, 174},
                                   {3, 2, 3});
  EXPECT_LE((down.to(at::kInt) - pil_down).abs().max().item<int>(), 1);
  const at::Tensor up = ImageTransform::resize_shorter_side(test_image(), 6);
  ASSERT_EQ(up.sizes(), (at::IntArrayRef{3, 6, 9}));
  const at::Tensor pil_up_red = ints({0,  15, 46, 72, 99,  126, 152, 183, 202, 3,  20, 51, 77, 104, 131, 157, 188, 207,
                                      8,  28, 59, 85, 112, 139, 165, 196, 215, 15, 34, 65, 91, 118, 145, 171, 202, 221,
                                      23, 42, 73, 99, 126, 153, 179, 210, 229, 28, 47, 78, 104, 131, 158, 184, 215, 234},
                                     {6, 9});
  EXPECT_LE((up[0].to(at::kInt) - pil_up_red).abs().max().item<int>(), 2);
  // Same shorter side: untouched.
  EXPECT_TRUE(at::equal(ImageTransform::resize_shorter_side(test_image(), 4), test_image()));
}

TEST(DataImageTransform, DownscalingIsAntialiased) {
  // A 1-pixel checkerboard halved: area filtering gives flat grey, point sampling would give 0 or 255.
  at::Tensor board = (at::arange(64).view({8, 8}).remainder(2) + at::arange(8).view({8, 1})).remainder(2);
  board = (board * 255).to(at::kByte).unsqueeze(0).expand({3, 8, 8}).contiguous();
  const at::Tensor half = ImageTransform::resize_shorter_side(board, 4);
  const at::Tensor inner = half.slice(1, 1, 3).slice(2, 1, 3).to(at::kInt);
  EXPECT_LE((inner - 128).abs().max().item<int>(), 8) << inner;
}

TEST(DataImageTransform, OutputSizeCropAndNormalisation) {
  // 300 x 200 (W x H) at resolution 100: resized to 150 x 100, then cropped to 100 x 100.
  at::Tensor img = at::full({3, 200, 300}, 51, at::kByte);
  Rng rng(1);
  const at::Tensor out = ImageTransform({.resolution = 100, .center_crop = true})(img, rng);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{3, 100, 100}));
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_TRUE(out.is_contiguous());
  EXPECT_FLOAT_EQ(out.min().item<float>(), 51.0f / 255.0f * 2 - 1);  // (51 / 255 - 0.5) / 0.5 = -0.6
  EXPECT_FLOAT_EQ(out.max().item<float>(), -0.6f);
  EXPECT_FLOAT_EQ(ImageTransform::normalize(at::tensor({0, 255}, at::kByte)).min().item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(ImageTransform::normalize(at::tensor({0, 255}, at::kByte)).max().item<float>(), 1.0f);
}

TEST(DataImageTransform, CenterCropFollowsTorchvision) {
  // round((H - size) / 2) with ties to even, as Python's round.
  EXPECT_EQ(ImageTransform::center_crop_offsets(5, 2, 2), (std::pair<int64_t, int64_t>{2, 0}));  // round(1.5) = 2
  EXPECT_EQ(ImageTransform::center_crop_offsets(7, 4, 2), (std::pair<int64_t, int64_t>{2, 1}));  // round(2.5) = 2
  // A 4 x 6 image at resolution 4: no resize, columns 1..4 kept, values normalised exactly.
  Rng rng(0);
  const at::Tensor out = ImageTransform({.resolution = 4, .center_crop = true})(test_image(), rng);
  const at::Tensor expected = test_image().slice(2, 1, 5).to(at::kFloat).div(255).sub(0.5).div(0.5);
  EXPECT_TRUE(at::equal(out, expected));
}

TEST(DataImageTransform, RandomCropAndFlipAreDrawnFromTheRng) {
  const ImageTransform crop({.resolution = 4, .center_crop = false});
  std::set<int64_t> lefts;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    Rng a(seed), b(seed);
    const at::Tensor x = crop(test_image(), a);
    EXPECT_TRUE(at::equal(x, crop(test_image(), b)));  // same RNG state, same crop
    for (int64_t left = 0; left <= 2; ++left) {
      if (at::equal(x, ImageTransform::normalize(test_image().slice(2, left, left + 4)))) lefts.insert(left);
    }
  }
  EXPECT_EQ(lefts, (std::set<int64_t>{0, 1, 2}));

  const ImageTransform flip({.resolution = 4, .center_crop = true, .random_flip = true});
  const at::Tensor plain = ImageTransform::normalize(test_image().slice(2, 1, 5));
  int flipped = 0, kept = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    Rng rng(seed);
    const at::Tensor x = flip(test_image(), rng);
    if (at::equal(x, plain)) {
      ++kept;
    } else {
      ASSERT_TRUE(at::equal(x, plain.flip({2})));
      EXPECT_FLOAT_EQ(x[0][2][0].item<float>(), plain[0][2][3].item<float>());
      ++flipped;
    }
  }
  EXPECT_GT(flipped, 70);
  EXPECT_GT(kept, 70);
}

TEST(DataImageTransform, RejectsBadInput) {
  Rng rng(0);
  try {
    ImageTransform({.resolution = 4})(at::zeros({4, 4, 3}, at::kByte), rng);
    FAIL();
  } catch (const zerodiff::Error& e) {
    EXPECT_STREQ(e.what(), "image: expected a uint8 [3, H, W] tensor, got Byte [4, 4, 3]");
  }
}

TEST(DataCaptionTransform, DropoutAndTagShuffle) {
  Rng rng(0);
  EXPECT_EQ(CaptionTransform({.dropout = 1.0})("a cat", rng), "");
  EXPECT_EQ(CaptionTransform({.dropout = 0.0})("a cat", rng), "a cat");
  int dropped = 0;
  const CaptionTransform p30({.dropout = 0.3});
  for (int i = 0; i < 10000; ++i) {
    Rng r = Rng::for_sample(5, 0, i);
    dropped += p30("x", r).empty();
  }
  EXPECT_NEAR(dropped / 10000.0, 0.3, 0.02);

  const CaptionTransform shuffle({.shuffle_tags = true, .keep_tokens = 2});
  const std::string caption = "sks dog,  photo , red, blue,green,, yellow ";
  std::set<std::string> outcomes;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    Rng a(seed), b(seed);
    const std::string out = shuffle(caption, a);
    EXPECT_EQ(out, shuffle(caption, b));
    EXPECT_EQ(out.rfind("sks dog, photo, ", 0), 0u) << out;  // first two kept, trimmed
    std::vector<std::string> rest;
    for (size_t pos = 16; pos <= out.size();) {
      size_t end = out.find(", ", pos);
      if (end == std::string::npos) end = out.size();
      rest.push_back(out.substr(pos, end - pos));
      pos = end + 2;
    }
    std::sort(rest.begin(), rest.end());
    EXPECT_EQ(rest, (std::vector<std::string>{"blue", "green", "red", "yellow"})) << out;
    outcomes.insert(out);
  }
  EXPECT_GT(outcomes.size(), 10u);
  EXPECT_EQ(CaptionTransform({.shuffle_tags = true, .keep_tokens = 9})("a, b", rng), "a, b");
  EXPECT_THROW(CaptionTransform({.dropout = 1.5}), zerodiff::Error);
}

TEST(DataRng, DeterministicAndInRange) {
  Rng a(42), b(42);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
  std::vector<int> counts(5, 0);
  Rng r(1);
  for (int i = 0; i < 5000; ++i) {
    const int64_t v = r.uniform_int(3, 7);
    ASSERT_GE(v, 3);
    ASSERT_LE(v, 7);
    ++counts[static_cast<size_t>(v - 3)];
  }
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
  // Streams of neighbouring samples/epochs differ.
  EXPECT_NE(Rng::for_sample(0, 0, 1).next_u64(), Rng::for_sample(0, 0, 2).next_u64());
  EXPECT_NE(Rng::for_sample(0, 0, 1).next_u64(), Rng::for_sample(0, 1, 1).next_u64());
  EXPECT_EQ(Rng::for_sample(9, 3, 1).next_u64(), Rng::for_sample(9, 3, 1).next_u64());
}
