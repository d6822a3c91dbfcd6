// Datasets: imagefolder (metadata.jsonl / metadata.csv), caption sidecar files, synthetic shapes, the CSV
// parser; every bad-input case with its exact message.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <set>

#include "data_test_util.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/data/CaptionFolderDataset.h"
#include "zerodiff/data/Csv.h"
#include "zerodiff/data/ImageFolderDataset.h"
#include "zerodiff/data/SubsetDataset.h"
#include "zerodiff/data/SyntheticShapesDataset.h"

using namespace zerodiff::data;
using namespace zerodiff::data::testing_util;
using zerodiff::IoError;
namespace fs = std::filesystem;

namespace {

template <class F>
std::string io_error_of(F&& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e.what();
  }
  return "<no error>";
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const zerodiff::Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::string folder_error(const std::string& root, const std::string& column = "text") {
  return io_error_of([&] { ImageFolderDataset({root, column}); });
}

}  // namespace

TEST(DataImageFolderDataset, ReadsJsonlWithCaptionColumnAndLists) {
  const std::string root = fresh_dir("folder");
  write_solid_png(root + "/a.png", 4, 4, 255, 0, 0);
  write_solid_png(root + "/sub/b.png", 6, 4, 0, 255, 0);
  write_text(root + "/metadata.jsonl",
             "{\"file_name\": \"a.png\", \"caption\": \"a red square\", \"extra\": 1}\n"
             "\n"
             "{\"file_name\": \"sub/b.png\", \"caption\": [\"green\", \"a green block\", \"lime\"]}\r\n");
  ImageFolderDataset ds({root, "caption"});
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.metadata_path(), root + "/metadata.jsonl");
  EXPECT_EQ(ds.entries()[1].source, root + "/metadata.jsonl:3");
  Rng rng(0);
  const Sample a = ds.get(0, rng);
  EXPECT_EQ(a.caption, "a red square");
  EXPECT_EQ(a.image.sizes(), (at::IntArrayRef{3, 4, 4}));
  EXPECT_EQ(a.image[0][0][0].item<int>(), 255);
  EXPECT_EQ(ds.describe(1), root + "/sub/b.png");
  // A list of captions: one picked per (seed, epoch, index) stream; all of them show up across epochs.
  std::set<std::string> seen;
  for (int epoch = 0; epoch < 40; ++epoch) {
    Rng r1 = Rng::for_sample(7, epoch, 1), r2 = Rng::for_sample(7, epoch, 1);
    const std::string c = ds.get(1, r1).caption;
    EXPECT_EQ(c, ds.get(1, r2).caption);  // deterministic
    seen.insert(c);
  }
  EXPECT_EQ(seen, (std::set<std::string>{"green", "a green block", "lime"}));
}

TEST(DataImageFolderDataset, ReadsCsvWithQuotedFields) {
  const std::string root = fresh_dir("folder");
  write_solid_png(root + "/a b.png", 2, 2, 1, 2, 3);
  write_solid_png(root + "/c.png", 2, 2, 1, 2, 3);
  write_text(root + "/metadata.csv",
             "\xEF\xBB\xBF" "file_name,text\r\n"
             "\"a b.png\",\"a cat, sitting \"\"politely\"\"\non two lines\"\r\n"
             "c.png,plain\n");
  ImageFolderDataset ds({root});
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.entries()[0].captions, (std::vector<std::string>{"a cat, sitting \"politely\"\non two lines"}));
  EXPECT_EQ(ds.entries()[1].captions, (std::vector<std::string>{"plain"}));
  EXPECT_EQ(ds.entries()[1].source, root + "/metadata.csv:4");
  // Header without the caption column.
  write_text(root + "/metadata.csv", "file_name,caption\nc.png,x\n");
  EXPECT_EQ(folder_error(root), root + "/metadata.csv:1: no column 'text' in the header (columns: file_name, caption)");
  write_text(root + "/metadata.csv", "file_name,text\nc.png,x,y\n");
  EXPECT_EQ(folder_error(root), root + "/metadata.csv:2: expected 2 fields, got 3");
}

TEST(DataCsv, ParsesRfc4180) {
  const auto records = parse_csv("a,b,c\n\"x,1\",\"\",\n\n\"multi\r\nline\",q,\"he said \"\"hi\"\"\"", "t.csv");
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[1].fields, (std::vector<std::string>{"x,1", "", ""}));
  EXPECT_EQ(records[2].line, 4);
  EXPECT_EQ(records[2].fields, (std::vector<std::string>{"multi\r\nline", "q", "he said \"hi\""}));
  EXPECT_EQ(io_error_of([] { parse_csv("a,b\n1,\"open\n\n", "t.csv"); }), "t.csv:2: unterminated quoted field");
  EXPECT_EQ(io_error_of([] { parse_csv("a,b\n\"x\"y,2\n", "t.csv"); }),
            "t.csv:2: unexpected character 'y' after a closing quote");
}

TEST(DataImageFolderDataset, MissingFilesAreReportedTogether) {
  const std::string root = fresh_dir("folder");
  write_solid_png(root + "/ok.png", 2, 2, 0, 0, 0);
  write_text(root + "/metadata.jsonl",
             "{\"file_name\": \"gone1.png\", \"text\": \"x\"}\n"
             "{\"file_name\": \"ok.png\", \"text\": \"y\"}\n"
             "{\"file_name\": \"sub/gone2.png\", \"text\": \"z\"}\n");
  EXPECT_EQ(folder_error(root), root + ": 2 image files are missing:\n  " + root + "/metadata.jsonl:1: gone1.png\n  " +
                                    root + "/metadata.jsonl:3: sub/gone2.png");
}

TEST(DataImageFolderDataset, PathsEscapingTheRootAreRejected) {
  const std::string base = fresh_dir("folder");
  const std::string root = base + "/root";
  write_solid_png(base + "/outside.png", 2, 2, 0, 0, 0);
  write_solid_png(root + "/in.png", 2, 2, 0, 0, 0);
  fs::create_symlink(base + "/outside.png", root + "/link.png");
  fs::create_symlink(root + "/in.png", root + "/good_link.png");
  const std::string meta = root + "/metadata.jsonl";
  write_text(meta, "{\"file_name\": \"/etc/passwd\", \"text\": \"x\"}\n");
  EXPECT_EQ(folder_error(root), meta + ":1: file_name '/etc/passwd' is an absolute path; file names are relative "
                                       "to the dataset root '" + root + "'");
  write_text(meta, "{\"file_name\": \"sub/../../outside.png\", \"text\": \"x\"}\n");
  EXPECT_EQ(folder_error(root), meta + ":1: file_name 'sub/../../outside.png' escapes the dataset root '" + root + "'");
  write_text(meta, "{\"file_name\": \"link.png\", \"text\": \"x\"}\n{\"file_name\": \"good_link.png\", \"text\": \"y\"}\n");
  EXPECT_EQ(folder_error(root), meta + ":1: file_name 'link.png' resolves to '" +
                                    fs::canonical(base + "/outside.png").string() +
                                    "', outside the dataset root '" + root + "'");
  // A symlink inside the root and a harmless ".." are fine.
  write_text(meta, "{\"file_name\": \"good_link.png\", \"text\": \"y\"}\n{\"file_name\": \"x/../in.png\", \"text\": \"z\"}\n");
  EXPECT_EQ(ImageFolderDataset({root}).size(), 2);
}

TEST(DataImageFolderDataset, MetadataErrorsNameFileAndLine) {
  const std::string root = fresh_dir("folder");
  write_solid_png(root + "/a.png", 2, 2, 0, 0, 0);
  const std::string meta = root + "/metadata.jsonl";
  write_text(meta, "{\"file_name\": \"a.png\", \"text\": \"ok\"}\n{\"file_name\": \"a.png\", \"text\": \"oops}\n");
  EXPECT_EQ(folder_error(root).rfind(meta + ":2: invalid JSON: parse error", 0), 0u) << folder_error(root);
  write_text(meta, "[1, 2]\n");
  EXPECT_EQ(folder_error(root), meta + ":1: expected a JSON object, got array");
  write_text(meta, "{\"file_name\": \"a.png\", \"text\": \"x\", \"score\": 1E999999}\n");  // out_of_range, not parse_error
  EXPECT_EQ(folder_error(root), meta + ":1: invalid JSON: number overflow parsing '1E999999'");
  write_text(meta, "{\"text\": \"x\"}\n");
  EXPECT_EQ(folder_error(root), meta + ":1: missing 'file_name' (a string)");
  write_text(meta, "{\"file_name\": \"a.png\", \"caption\": \"x\"}\n");
  EXPECT_EQ(folder_error(root), meta + ":1: missing caption column 'text' (keys: caption, file_name)");
  write_text(meta, "{\"file_name\": \"a.png\", \"text\": [\"x\", 3]}\n");
  EXPECT_EQ(folder_error(root), meta + ":1: caption column 'text' must be a string or a non-empty list of strings");
  write_text(meta, "\n\n");
  EXPECT_EQ(folder_error(root), meta + ": no samples");
  fs::remove(meta);
  EXPECT_EQ(folder_error(root), root + ": no metadata.jsonl or metadata.csv (an image folder needs one; for image + "
                                       ".txt caption files use the 'captions' dataset)");
  EXPECT_EQ(folder_error(root + "/nope"), root + "/nope: dataset folder does not exist");
}

TEST(DataCaptionFolderDataset, ReadsSidecarCaptions) {
  const std::string root = fresh_dir("captions");
  write_solid_png(root + "/b.png", 2, 2, 0, 0, 0);
  write_solid_png(root + "/a/z.PNG", 2, 2, 0, 0, 0);
  write_text(root + "/b.txt", "  a black square\n");
  write_text(root + "/a/z.txt", "tag1, tag2");
  write_text(root + "/notes.md", "ignored");
  CaptionFolderDataset ds({root});
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.entries()[0].file_name, "a/z.PNG");
  EXPECT_EQ(ds.entries()[0].captions, (std::vector<std::string>{"tag1, tag2"}));
  EXPECT_EQ(ds.entries()[1].captions, (std::vector<std::string>{"a black square"}));
  // Configurable extension; every missing caption file is listed.
  EXPECT_EQ(io_error_of([&] { CaptionFolderDataset({root, ".caption"}); }),
            root + ": 2 caption files are missing:\n  a/z.caption\n  b.caption");
  write_text(root + "/b.caption", "from caption file");
  write_text(root + "/a/z.caption", "z");
  EXPECT_EQ(CaptionFolderDataset({root, ".caption"}).entries()[1].captions[0], "from caption file");
  const std::string empty = fresh_dir("captions_empty");
  EXPECT_EQ(io_error_of([&] { CaptionFolderDataset({empty}); }),
            empty + ": no images found (extensions .png, .jpg, .jpeg, .webp, .bmp)");
}

TEST(DataCaptionFolderDataset, SymlinkOutsideRootIsRejected) {
  const std::string base = fresh_dir("captions");
  write_solid_png(base + "/secret.png", 2, 2, 0, 0, 0);
  write_text(base + "/root/x.txt", "x");
  fs::create_symlink(base + "/secret.png", base + "/root/x.png");
  EXPECT_EQ(io_error_of([&] { CaptionFolderDataset({base + "/root"}); }),
            base + "/root/x.txt: file_name 'x.png' resolves to '" + fs::canonical(base + "/secret.png").string() +
                "', outside the dataset root '" + base + "/root'");
}

TEST(DataSyntheticShapesDataset, DeterministicWithExactCaptions) {
  SyntheticShapesDataset ds({.size = 50, .image_size = 32, .seed = 3});
  SyntheticShapesDataset same({.size = 50, .image_size = 32, .seed = 3});
  SyntheticShapesDataset other({.size = 50, .image_size = 32, .seed = 4});
  std::set<std::string> shapes;
  int differs = 0;
  for (int64_t i = 0; i < ds.size(); ++i) {
    Rng rng(0);
    const Sample s = ds.get(i, rng);
    ASSERT_EQ(s.image.sizes(), (at::IntArrayRef{3, 32, 32}));
    EXPECT_EQ(s.image.scalar_type(), at::kByte);
    EXPECT_TRUE(at::equal(s.image, same.get(i, rng).image));
    differs += other.get(i, rng).caption != s.caption;
    const ShapeSpec spec = ds.spec(i);
    shapes.insert(std::string(zerodiff::name_of(spec.shape)));
    EXPECT_NE(spec.color, spec.background);
    const auto& fg = SyntheticShapesDataset::colors()[static_cast<size_t>(spec.color)];
    const auto& bg = SyntheticShapesDataset::colors()[static_cast<size_t>(spec.background)];
    EXPECT_EQ(s.caption, std::string("a ") + fg.name + " " + std::string(zerodiff::name_of(spec.shape)) + " on a " + bg.name + " background");
    // A point a quarter radius below the centre lies inside all three shapes; the far corner is background.
    const auto cy = static_cast<int64_t>(spec.cy + spec.radius * 0.25), cx = static_cast<int64_t>(spec.cx);
    for (int c = 0; c < 3; ++c) EXPECT_EQ(s.image[c][cy][cx].item<int>(), fg.rgb[static_cast<size_t>(c)]) << i;
    const int64_t corner_x = spec.cx < 16 ? 31 : 0, corner_y = spec.cy < 16 ? 31 : 0;
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(s.image[c][corner_y][corner_x].item<int>(), bg.rgb[static_cast<size_t>(c)]) << i;
    }
  }
  EXPECT_EQ(shapes, (std::set<std::string>{"circle", "square", "triangle"}));
  EXPECT_GT(differs, 25);
  EXPECT_EQ(SyntheticShapesDataset::caption(ShapeSpec{zerodiff::data::Shape::circle, 0, 2, 0, 0, 1}), "a red circle on a blue background");
}

TEST(DataSubsetDataset, ValidationSplitIsDeterministicDisjointAndComplete) {
  auto base = std::make_shared<zerodiff::data::SyntheticShapesDataset>(
      zerodiff::data::SyntheticShapesOptions{.size = 100, .image_size = 8, .seed = 1});
  const auto a = zerodiff::data::split_dataset(base, 0.1, 7);
  const auto b = zerodiff::data::split_dataset(base, 0.1, 7);
  const auto c = zerodiff::data::split_dataset(base, 0.1, 8);
  ASSERT_EQ(a.train->size(), 90);
  ASSERT_EQ(a.validation->size(), 10);
  auto indices = [](const zerodiff::data::Dataset& d) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < d.size(); ++i) out.push_back(static_cast<const zerodiff::data::SubsetDataset&>(d).base_index(i));
    return out;
  };
  EXPECT_EQ(indices(*a.validation), indices(*b.validation));  // same seed, same split
  EXPECT_NE(indices(*a.validation), indices(*c.validation));  // another seed, another split
  std::set<int64_t> all;
  for (int64_t i : indices(*a.train)) all.insert(i);
  for (int64_t i : indices(*a.validation)) EXPECT_TRUE(all.insert(i).second) << i << " is in both sides";
  EXPECT_EQ(all.size(), 100u);
  // A subset sample is the base's sample, re-indexed.
  zerodiff::data::Rng rng(0);
  const auto s = a.validation->get(3, rng);
  const auto t = base->get(indices(*a.validation)[3], rng);
  EXPECT_EQ(s.index, 3);
  EXPECT_EQ(s.caption, t.caption);
  EXPECT_TRUE(at::equal(s.image, t.image));
  EXPECT_EQ(a.validation->describe(3), base->describe(indices(*a.validation)[3]));
  // No split, and splits that leave a side empty or hold out too much.
  EXPECT_EQ(zerodiff::data::split_dataset(base, 0.0, 7).train, base);
  EXPECT_EQ(zerodiff::data::split_dataset(base, 0.0, 7).validation, nullptr);
  EXPECT_EQ(zerodiff::data::split_dataset(base, 0.001, 7).validation->size(), 1);
  auto one = std::make_shared<zerodiff::data::SyntheticShapesDataset>(
      zerodiff::data::SyntheticShapesOptions{.size = 1, .image_size = 8, .seed = 1});
  EXPECT_EQ(error_of([&] { zerodiff::data::split_dataset(one, 0.5, 7); }),
            "validation split 0.5 of 1 samples leaves no training samples");
  EXPECT_EQ(error_of([&] { zerodiff::data::split_dataset(base, 0.6, 7); }), "validation split must be in [0, 0.5], got 0.6");
  EXPECT_EQ(error_of([&] { zerodiff::data::SubsetDataset(base, {0, 100}); }),
            "SubsetDataset: index 100 out of range [0, 100)");
}
