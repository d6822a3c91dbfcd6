// zerodiff/data/CaptionFolderDataset.h — images with caption sidecar files, the layout kohya-ss' sd-scripts
// and many fine-tuning datasets use:
//   <root>/0001.png  <root>/0001.txt  <root>/sub/cat.jpg  <root>/sub/cat.txt ...
// Every image under the root (recursively; extensions .png .jpg .jpeg .webp .bmp, case-insensitive) needs a
// caption file with the same stem and `caption_extension` (".txt" by default; ".caption" is common). The
// caption file's whole content, with leading and trailing whitespace removed, is the caption. Samples are
// ordered by relative path (byte-wise), so the dataset is the same on every machine.
//
// Errors (IoError), on top of ImageListDataset's (symlinked images resolving outside the root):
//   "<root>: dataset folder does not exist"
//   "<root>: no images found (extensions .png, .jpg, .jpeg, .webp, .bmp)"
//   "<root>: 2 caption files are missing:\n  a.txt\n  sub/b.txt"
#pragma once

#include <cstdint>
#include <string>

#include "zerodiff/data/ImageListDataset.h"

namespace zerodiff::data {

struct CaptionFolderOptions {
  std::string root;                         ///< the dataset folder
  std::string caption_extension = ".txt";   ///< extension of the caption files, with the dot
  int64_t max_image_pixels = ImageDecoder::kDefaultMaxPixels;
};

class CaptionFolderDataset : public ImageListDataset {
 public:
  /// Scans the folder and reads every caption (see the file comment for what throws).
  explicit CaptionFolderDataset(const CaptionFolderOptions& options);

  /// The scan alone: entries sorted by relative path, captions read. Throws IoError as in the file comment.
  static std::vector<ImageEntry> scan(const CaptionFolderOptions& options);
};

}  // namespace zerodiff::data
