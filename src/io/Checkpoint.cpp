#include "zerodiff/io/Checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/AtomicFile.h"

namespace fs = std::filesystem;

namespace zerodiff::io {

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kPrefix = "checkpoint-";

std::optional<int64_t> step_of(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind(kPrefix, 0) != 0) return std::nullopt;
  const std::string digits = name.substr(std::string(kPrefix).size());
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return std::nullopt;
  return std::stoll(digits);
}

}  // namespace

CheckpointManager::CheckpointManager(std::string dir, int64_t keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {
  ZD_CHECK(keep_last_ >= 0, "checkpoint keep_last must be >= 0, got ", keep_last_);
}

std::string CheckpointManager::save(int64_t step, const std::map<std::string, TensorMap>& tensors,
                                    const nlohmann::json& state) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw IoError(zerodiff::str(dir_, ": cannot create checkpoint folder: ", ec.message()));
  const fs::path final_path = fs::path(dir_) / zerodiff::str(kPrefix, step);
  // Leftovers of an interrupted save or prune (kill -9, full disk): hidden, never complete; one writer per
  // folder, so they can go.
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(std::string(".") + kPrefix, 0) == 0 || name.rfind(".deleting-", 0) == 0) fs::remove_all(entry.path(), ec);
  }
  // Each checkpoint folder appears complete or not at all; trainer_state.json is also written last.
  write_directory_atomic(final_path.string(), [&](const std::string& temp) {
    for (const auto& [name, map] : tensors) save_safetensors((fs::path(temp) / (name + ".safetensors")).string(), map);
    nlohmann::json full = state;
    full["step"] = step;
    std::vector<std::string> names;
    for (const auto& [name, _] : tensors) names.push_back(name);
    full["tensor_files"] = names;
    write_file_atomic((fs::path(temp) / kStateFile).string(), full.dump(2) + "\n");
  });
  // Prune: checkpoints past this step belong to an abandoned timeline (we resumed from an earlier one) and
  // go first; then the oldest beyond keep_last. The one just written is never removed. Each goes through a
  // hidden name first, so a kill mid-removal never leaves a half-deleted folder that looks complete.
  auto remove = [&](const std::string& path) {
    const fs::path hidden = fs::path(dir_) / zerodiff::str(".deleting-", fs::path(path).filename().string());
    fs::rename(path, hidden, ec);
    if (!ec) fs::remove_all(hidden, ec);
  };
  for (const auto& path : list()) {
    if (auto s = step_of(path); s && *s > step) remove(path);
  }
  if (keep_last_ > 0) {
    auto all = list();
    for (size_t i = 0; static_cast<int64_t>(all.size() - i) > keep_last_ && i < all.size(); ++i) {
      if (all[i] != final_path.string()) remove(all[i]);
    }
  }
  return final_path.string();
}

std::vector<std::string> CheckpointManager::list() const {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const auto step = step_of(entry.path());
    if (!step || !entry.is_directory()) continue;
    if (!fs::exists(entry.path() / kStateFile)) continue;  // incomplete (should not happen: rename is atomic)
    found.emplace_back(*step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [_, p] : found) out.push_back(std::move(p));
  return out;
}

std::optional<std::string> CheckpointManager::latest() const {
  auto all = list();
  if (all.empty()) return std::nullopt;
  return all.back();
}

Checkpoint CheckpointManager::load(const std::string& path) {
  if (!fs::is_directory(path)) throw IoError(zerodiff::str(path, ": checkpoint folder does not exist"));
  const fs::path state_path = fs::path(path) / kStateFile;
  if (!fs::exists(state_path)) {
    throw IoError(zerodiff::str(path, ": not a complete checkpoint (no ", kStateFile, ")"));
  }
  Checkpoint ck;
  ck.path = path;
  std::ifstream in(state_path);
  try {
    ck.state = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw IoError(zerodiff::str(state_path.string(), ": invalid JSON: ", e.what()));
  }
  if (!ck.state.is_object() || !ck.state.contains("step") || !ck.state["step"].is_number_integer() ||
      !ck.state.contains("tensor_files") || !ck.state["tensor_files"].is_array()) {
    throw IoError(zerodiff::str(state_path.string(), ": missing 'step' or 'tensor_files'"));
  }
  ck.step = ck.state["step"].get<int64_t>();
  for (const auto& name : ck.state["tensor_files"]) {
    if (!name.is_string()) throw IoError(zerodiff::str(state_path.string(), ": 'tensor_files' must list names"));
    const fs::path file = fs::path(path) / (name.get<std::string>() + ".safetensors");
    if (!fs::exists(file)) throw IoError(zerodiff::str(file.string(), ": missing from the checkpoint"));
    ck.tensors.emplace(name.get<std::string>(), load_safetensors(file.string()));
  }
  return ck;
}

}  // namespace zerodiff::io
