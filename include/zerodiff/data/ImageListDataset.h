// zerodiff/data/ImageListDataset.h — a dataset over image files listed relative to a root folder, each
// with one or more captions. The base of ImageFolderDataset (metadata.jsonl / metadata.csv) and
// CaptionFolderDataset (image + caption sidecar files).
//
// Validation at construction, in this order, each reporting every offending entry in one IoError:
//  1. file names that are absolute, or that escape the root lexically ("../x.png", "a/../../x.png"):
//       "<source>: file_name '/etc/x.png' is an absolute path; file names are relative to the dataset root '<root>'"
//       "<source>: file_name '../x.png' escapes the dataset root '<root>'"
//  2. files that resolve outside the root through symbolic links:
//       "<source>: file_name 'link.png' resolves to '/elsewhere/x.png', outside the dataset root '<root>'"
//  3. missing files, all at once:
//       "<root>: 2 image files are missing:\n  <source>: a.png\n  <source>: b.png"
// <source> says where the entry came from, e.g. "/data/pets/metadata.jsonl:3".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "zerodiff/data/Dataset.h"
#include "zerodiff/data/ImageDecoder.h"

namespace zerodiff::data {

/// One listed image.
struct ImageEntry {
  std::string file_name;              ///< path relative to the dataset root, as written in the metadata
  std::vector<std::string> captions;  ///< one or more captions (one is picked per epoch)
  std::string source;                 ///< where the entry was read, for messages ("<file>:<line>")
};

class ImageListDataset : public Dataset {
 public:
  /// Validates `entries` against `root` (see the file comment; throws IoError) and keeps them.
  /// Throws IoError when `root` is not a folder or `entries` is empty.
  ImageListDataset(std::string root, std::vector<ImageEntry> entries,
                   int64_t max_image_pixels = ImageDecoder::kDefaultMaxPixels);

  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  /// Decodes the image (ImageDecoder) and picks a caption: one rng.uniform_int draw when the entry has
  /// several captions, none otherwise.
  Sample get(int64_t index, Rng& rng) const override;
  /// The image's full path.
  std::string describe(int64_t index) const override;

  const std::string& root() const { return root_; }
  const std::vector<ImageEntry>& entries() const { return entries_; }
  /// Full (lexically normalised) path of entry `index`.
  const std::string& path(int64_t index) const { return paths_.at(static_cast<size_t>(index)); }

 private:
  std::string root_;
  std::vector<ImageEntry> entries_;
  std::vector<std::string> paths_;
  ImageDecoder decoder_;
};

}  // namespace zerodiff::data
