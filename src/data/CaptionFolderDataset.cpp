// CaptionFolderDataset: images with caption sidecar files (image.png + image.txt).
#include "zerodiff/data/CaptionFolderDataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "zerodiff/core/Error.h"

namespace zerodiff::data {
namespace fs = std::filesystem;
namespace {

constexpr const char* kImageExtensions[] = {".png", ".jpg", ".jpeg", ".webp", ".bmp"};

bool is_image(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return std::find(std::begin(kImageExtensions), std::end(kImageExtensions), ext) != std::end(kImageExtensions);
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

}  // namespace

std::vector<ImageEntry> CaptionFolderDataset::scan(const CaptionFolderOptions& options) {
  std::error_code ec;
  ZD_CHECK_T(IoError, fs::is_directory(options.root, ec), options.root, ": dataset folder does not exist");
  std::vector<std::string> images;  // relative paths
  for (auto it = fs::recursive_directory_iterator(options.root, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    // Symbolic links to files count (ImageListDataset rejects those resolving outside the root).
    if (is_image(it->path()) && (it->is_regular_file(ec) || it->is_symlink(ec))) {
      images.push_back(it->path().lexically_relative(options.root).generic_string());
    }
  }
  ZD_CHECK_T(IoError, !ec, options.root, ": cannot list the folder (", ec.message(), ")");
  ZD_CHECK_T(IoError, !images.empty(), options.root,
             ": no images found (extensions .png, .jpg, .jpeg, .webp, .bmp)");
  std::sort(images.begin(), images.end());

  std::vector<ImageEntry> entries;
  std::vector<std::string> missing;
  for (const std::string& image : images) {
    const std::string caption_name = fs::path(image).replace_extension(options.caption_extension).generic_string();
    const fs::path caption_path = fs::path(options.root) / caption_name;
    std::ifstream in(caption_path, std::ios::binary);
    if (!in.good()) {
      missing.push_back(caption_name);
      continue;
    }
    std::ostringstream text;
    text << in.rdbuf();
    entries.push_back(ImageEntry{image, {trim(text.str())}, caption_path.string()});
  }
  if (!missing.empty()) {
    std::string message = str(options.root, ": ", missing.size(),
                              missing.size() == 1 ? " caption file is" : " caption files are", " missing:");
    for (const auto& name : missing) message += "\n  " + name;
    throw IoError(message, ZD_WHERE);
  }
  return entries;
}

CaptionFolderDataset::CaptionFolderDataset(const CaptionFolderOptions& options)
    : ImageListDataset(options.root, scan(options), options.max_image_pixels) {}

}  // namespace zerodiff::data
