// ImageListDataset: validated list of image files under a root folder, decoded on demand.
#include "zerodiff/data/ImageListDataset.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "zerodiff/core/Error.h"

namespace zerodiff::data {
namespace fs = std::filesystem;

ImageListDataset::ImageListDataset(std::string root, std::vector<ImageEntry> entries, int64_t max_image_pixels)
    : root_(std::move(root)), entries_(std::move(entries)), decoder_(max_image_pixels) {
  std::error_code ec;
  ZD_CHECK_T(IoError, fs::is_directory(root_, ec), root_, ": dataset folder does not exist");
  ZD_CHECK_T(IoError, !entries_.empty(), root_, ": no samples");
  const fs::path root_canonical = fs::canonical(root_, ec);
  ZD_CHECK_T(IoError, !ec, root_, ": cannot resolve the dataset folder (", ec.message(), ")");

  std::vector<std::string> rejected, missing;
  paths_.reserve(entries_.size());
  for (const ImageEntry& entry : entries_) {
    const fs::path name(entry.file_name);
    const fs::path normal = name.lexically_normal();
    const fs::path full = fs::path(root_) / normal;
    paths_.push_back(full.string());
    if (entry.file_name.empty()) {
      rejected.push_back(str(entry.source, ": empty file_name"));
      continue;
    }
    if (name.is_absolute()) {
      rejected.push_back(str(entry.source, ": file_name '", entry.file_name,
                             "' is an absolute path; file names are relative to the dataset root '", root_, "'"));
      continue;
    }
    if (normal.empty() || *normal.begin() == "..") {
      rejected.push_back(str(entry.source, ": file_name '", entry.file_name, "' escapes the dataset root '", root_,
                             "'"));
      continue;
    }
    if (!fs::exists(full, ec)) {  // follows symbolic links: a dangling link is missing
      missing.push_back(str(entry.source, ": ", entry.file_name));
      continue;
    }
    const fs::path resolved = fs::canonical(full, ec);
    if (ec) {
      missing.push_back(str(entry.source, ": ", entry.file_name));
      continue;
    }
    const auto [root_end, unused] =
        std::mismatch(root_canonical.begin(), root_canonical.end(), resolved.begin(), resolved.end());
    if (root_end != root_canonical.end()) {
      rejected.push_back(str(entry.source, ": file_name '", entry.file_name, "' resolves to '", resolved.string(),
                             "', outside the dataset root '", root_, "'"));
      continue;
    }
    if (!fs::is_regular_file(resolved, ec)) {
      rejected.push_back(str(entry.source, ": file_name '", entry.file_name, "' is not a regular file"));
    }
  }
  if (!rejected.empty()) {
    std::string message;
    for (const auto& line : rejected) message += (message.empty() ? "" : "\n") + line;
    throw IoError(message, ZD_WHERE);
  }
  if (!missing.empty()) {
    std::string message = str(root_, ": ", missing.size(), missing.size() == 1 ? " image file is" : " image files are",
                              " missing:");
    for (const auto& line : missing) message += "\n  " + line;
    throw IoError(message, ZD_WHERE);
  }
}

Sample ImageListDataset::get(int64_t index, Rng& rng) const {
  ZD_CHECK(index >= 0 && index < size(), "sample index ", index, " out of range [0, ", size(), ")");
  const ImageEntry& entry = entries_[static_cast<size_t>(index)];
  Sample sample;
  sample.index = index;
  sample.image = decoder_.decode_file(paths_[static_cast<size_t>(index)]);
  if (entry.captions.size() == 1) {
    sample.caption = entry.captions.front();
  } else if (!entry.captions.empty()) {
    sample.caption = entry.captions[static_cast<size_t>(rng.uniform_int(0, static_cast<int64_t>(entry.captions.size()) - 1))];
  }
  return sample;
}

std::string ImageListDataset::describe(int64_t index) const {
  ZD_CHECK(index >= 0 && index < size(), "sample index ", index, " out of range [0, ", size(), ")");
  return paths_[static_cast<size_t>(index)];
}

}  // namespace zerodiff::data
