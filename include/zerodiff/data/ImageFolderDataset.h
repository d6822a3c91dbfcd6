// zerodiff/data/ImageFolderDataset.h — the Hugging Face `imagefolder` layout
// (https://huggingface.co/docs/datasets/image_dataset#imagefolder), as diffusers' train_text_to_image.py
// reads it:
//   <root>/metadata.jsonl   one JSON object per line: {"file_name": "a/0001.png", "text": "a red apple"}
//   <root>/metadata.csv     or a CSV with a header row: file_name,text
//   <root>/a/0001.png ...
// metadata.jsonl is used when both exist. The caption column is configurable ("text" by default). In
// metadata.jsonl the caption may be a list of strings: one of them is picked at random per epoch from the
// sample's RNG (seeded from (seed, epoch, index)). Blank lines are ignored. Other keys are ignored.
//
// Errors (IoError), on top of ImageListDataset's:
//   "<root>: dataset folder does not exist"
//   "<root>: no metadata.jsonl or metadata.csv (an image folder needs one; for image + .txt caption files use
//    the 'captions' dataset)"
//   "<file>:<line>: invalid JSON: <parser message>"
//   "<file>:<line>: expected a JSON object, got <type>"
//   "<file>:<line>: missing 'file_name' (a string)"
//   "<file>:<line>: missing caption column 'text' (keys: file_name, caption)"
//   "<file>:<line>: caption column 'text' must be a string or a non-empty list of strings"
//   "<file>:1: no column 'text' in the header (columns: file_name, caption)"   (CSV; likewise file_name)
//   "<file>: no samples"
// plus the CSV syntax errors of parse_csv.
#pragma once

#include <cstdint>
#include <string>

#include "zerodiff/data/ImageListDataset.h"

namespace zerodiff::data {

struct ImageFolderOptions {
  std::string root;                     ///< the dataset folder
  std::string caption_column = "text";  ///< metadata key/column holding the caption(s)
  int64_t max_image_pixels = ImageDecoder::kDefaultMaxPixels;
};

class ImageFolderDataset : public ImageListDataset {
 public:
  /// Reads the metadata and validates every listed file (see the file comment for what throws).
  explicit ImageFolderDataset(const ImageFolderOptions& options);

  /// The metadata file that was read.
  const std::string& metadata_path() const { return metadata_path_; }

  /// Parses `<root>/metadata.jsonl` or `<root>/metadata.csv` into entries (no file-system checks on the
  /// listed images); sets `metadata_path` to the file read. Throws IoError as in the file comment.
  static std::vector<ImageEntry> read_metadata(const ImageFolderOptions& options, std::string& metadata_path);

 private:
  ImageFolderDataset(const ImageFolderOptions& options, std::string metadata_path,
                     std::vector<ImageEntry> entries);
  std::string metadata_path_;
};

}  // namespace zerodiff::data
