// libFuzzer target: the image-folder metadata reader (metadata.jsonl, Hugging Face imagefolder layout) on arbitrary
// bytes. The input is written to <tmp>/metadata.jsonl and read by ImageFolderDataset::read_metadata; every input
// either gives entries (each with at least one caption) or throws zerodiff::IoError.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "zerodiff/core/Error.h"
#include "zerodiff/data/ImageFolderDataset.h"

namespace {
const std::string& root() {
  static const std::string* r = [] {
    const auto dir = std::filesystem::temp_directory_path() / ("zerodiff-fuzz-metadata-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    return new std::string(dir.string());
  }();
  return *r;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(root() + "/metadata.jsonl", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  zerodiff::data::ImageFolderOptions options;
  options.root = root();
  std::string read_from;
  try {
    const auto entries = zerodiff::data::ImageFolderDataset::read_metadata(options, read_from);
    for (const auto& e : entries) {
      if (e.captions.empty()) __builtin_trap();
    }
  } catch (const zerodiff::IoError&) {
  }
  return 0;
}
