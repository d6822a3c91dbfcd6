// ImageFolderDataset: metadata.jsonl / metadata.csv (Hugging Face imagefolder) into an ImageListDataset.
#include "zerodiff/data/ImageFolderDataset.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/data/Csv.h"

namespace zerodiff::data {
namespace fs = std::filesystem;
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ZD_CHECK_T(IoError, in.good(), path, ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string key_list(const nlohmann::json& object) {
  std::string keys;
  for (auto it = object.begin(); it != object.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
  return keys;
}

std::vector<ImageEntry> read_jsonl(const std::string& path, const std::string& column) {
  std::istringstream in(read_text(path));
  std::vector<ImageEntry> entries;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = str(path, ":", number);
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::string why = e.what();
      if (const auto pos = why.find("] "); why.rfind("[json.exception", 0) == 0 && pos != std::string::npos) {
        why = why.substr(pos + 2);
      }
      throw IoError(str(where, ": invalid JSON: ", why), ZD_WHERE);
    }
    ZD_CHECK_T(IoError, row.is_object(), where, ": expected a JSON object, got ", row.type_name());
    const auto file = row.find("file_name");
    ZD_CHECK_T(IoError, file != row.end() && file->is_string(), where, ": missing 'file_name' (a string)");
    const auto caption = row.find(column);
    ZD_CHECK_T(IoError, caption != row.end(), where, ": missing caption column '", column, "' (keys: ",
               key_list(row), ")");
    ImageEntry entry{file->get<std::string>(), {}, where};
    bool ok = true;
    if (caption->is_string()) {
      entry.captions.push_back(caption->get<std::string>());
    } else if (caption->is_array() && !caption->empty()) {
      for (const auto& item : *caption) {
        if (!item.is_string()) {
          ok = false;
          break;
        }
        entry.captions.push_back(item.get<std::string>());
      }
    } else {
      ok = false;
    }
    ZD_CHECK_T(IoError, ok, where, ": caption column '", column, "' must be a string or a non-empty list of strings");
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::vector<ImageEntry> read_csv(const std::string& path, const std::string& column) {
  const std::vector<CsvRecord> records = parse_csv(read_text(path), path);
  ZD_CHECK_T(IoError, !records.empty(), path, ": no samples");
  const std::vector<std::string>& header = records.front().fields;
  std::string columns;
  for (const auto& h : header) columns += (columns.empty() ? "" : ", ") + h;
  auto find_column = [&](const std::string& wanted) {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == wanted) return i;
    }
    throw IoError(str(path, ":", records.front().line, ": no column '", wanted, "' in the header (columns: ", columns,
                      ")"),
                  ZD_WHERE);
  };
  const size_t file_col = find_column("file_name");
  const size_t caption_col = find_column(column);
  std::vector<ImageEntry> entries;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& record = records[r];
    ZD_CHECK_T(IoError, record.fields.size() == header.size(), path, ":", record.line, ": expected ", header.size(),
               " fields, got ", record.fields.size());
    entries.push_back(ImageEntry{record.fields[file_col], {record.fields[caption_col]}, str(path, ":", record.line)});
  }
  return entries;
}

}  // namespace

std::vector<ImageEntry> ImageFolderDataset::read_metadata(const ImageFolderOptions& options,
                                                          std::string& metadata_path) {
  std::error_code ec;
  ZD_CHECK_T(IoError, fs::is_directory(options.root, ec), options.root, ": dataset folder does not exist");
  const std::string jsonl = (fs::path(options.root) / "metadata.jsonl").string();
  const std::string csv = (fs::path(options.root) / "metadata.csv").string();
  std::vector<ImageEntry> entries;
  if (fs::exists(jsonl, ec)) {
    metadata_path = jsonl;
    entries = read_jsonl(jsonl, options.caption_column);
  } else if (fs::exists(csv, ec)) {
    metadata_path = csv;
    entries = read_csv(csv, options.caption_column);
  } else {
    throw IoError(str(options.root, ": no metadata.jsonl or metadata.csv (an image folder needs one; for image + "
                                    ".txt caption files use the 'captions' dataset)"),
                  ZD_WHERE);
  }
  ZD_CHECK_T(IoError, !entries.empty(), metadata_path, ": no samples");
  return entries;
}

ImageFolderDataset::ImageFolderDataset(const ImageFolderOptions& options)
    : ImageFolderDataset(options, std::string(), {}) {}

ImageFolderDataset::ImageFolderDataset(const ImageFolderOptions& options, std::string metadata_path,
                                       std::vector<ImageEntry> entries)
    : ImageListDataset(options.root,
                       entries.empty() ? read_metadata(options, metadata_path) : std::move(entries),
                       options.max_image_pixels),
      metadata_path_(std::move(metadata_path)) {}

}  // namespace zerodiff::data
