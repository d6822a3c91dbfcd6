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
  return save(step, tensors, state, {}, RankSync{});
}

std::string CheckpointManager::save(int64_t step, const std::map<std::string, TensorMap>& tensors,
                                    const nlohmann::json& state, const std::map<std::string, TensorMap>& rank_tensors,
                                    const RankSync& sync) {
  const int rank = sync.rank, world = sync.world_size;
  ZD_CHECK(world >= 1 && rank >= 0 && rank < world, "checkpoint: rank ", rank, " of ", world);
  ZD_CHECK(world == 1 || sync.all_ok, "checkpoint: a multi-process save needs RankSync::all_ok");
  auto all_ok = [&](bool ok) { return world == 1 ? ok : sync.all_ok(ok); };
  std::error_code ec;
  const fs::path final_path = fs::path(dir_) / zerodiff::str(kPrefix, step);
  const fs::path staging = fs::path(dir_) / zerodiff::str(".staging-", kPrefix, step);
  auto rank_file = [&](const std::string& name, int r) {
    return zerodiff::str(name, ".rank-", r, "-of-", world, ".safetensors");
  };
  std::string error;
  if (rank == 0) {
    try {
      fs::create_directories(dir_, ec);
      if (ec) throw IoError(zerodiff::str(dir_, ": cannot create checkpoint folder: ", ec.message()));
      // Leftovers of an interrupted save or prune (kill -9, full disk): hidden, never complete; one writer per
      // folder (rank 0), so they can go — except a moved-aside complete checkpoint whose replacement never
      // arrived, which is put back first.
      restore_interrupted_replacements(dir_);
      for (const auto& entry : fs::directory_iterator(dir_, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(std::string(".") + kPrefix, 0) == 0 || name.rfind(".deleting-", 0) == 0 ||
            name.rfind(".staging-", 0) == 0) {
          fs::remove_all(entry.path(), ec);
        }
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (!all_ok(error.empty())) {
    throw IoError(error.empty() ? zerodiff::str(dir_, ": rank 0 could not prepare checkpoint-", step) : error);
  }
  // Ranks other than 0 stage their files.
  if (rank != 0) {
    try {
      fs::create_directories(staging, ec);
      if (ec) throw IoError(zerodiff::str(staging.string(), ": cannot create: ", ec.message()));
      for (const auto& [name, map] : rank_tensors) save_safetensors((staging / rank_file(name, rank)).string(), map);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (!all_ok(error.empty())) {
    if (rank == 0) fs::remove_all(staging, ec);
    throw IoError(error.empty() ? zerodiff::str(final_path.string(), ": another rank failed to write its part") : error);
  }
  if (rank == 0) {
    try {
      // Each checkpoint folder appears complete or not at all; trainer_state.json is also written last.
      write_directory_atomic(final_path.string(), [&](const std::string& temp) {
        for (const auto& [name, map] : tensors) save_safetensors((fs::path(temp) / (name + ".safetensors")).string(), map);
        std::vector<std::string> rank_names;
        for (const auto& [name, map] : rank_tensors) {
          rank_names.push_back(name);
          save_safetensors((fs::path(temp) / rank_file(name, 0)).string(), map);
          for (int r = 1; r < world; ++r) {
            const fs::path from = staging / rank_file(name, r);
            fs::rename(from, fs::path(temp) / rank_file(name, r), ec);
            if (ec) throw IoError(zerodiff::str(from.string(), ": cannot move into the checkpoint: ", ec.message()));
          }
        }
        nlohmann::json full = state;
        full["step"] = step;
        std::vector<std::string> names;
        for (const auto& [name, _] : tensors) names.push_back(name);
        full["tensor_files"] = names;
        if (!rank_names.empty()) {
          full["rank_files"] = rank_names;
          full["world_size"] = world;
        }
        write_file_atomic((fs::path(temp) / kStateFile).string(), full.dump(2) + "\n");
      });
      fs::remove_all(staging, ec);
      prune(final_path.string(), step);
    } catch (const std::exception& e) {
      error = e.what();
      fs::remove_all(staging, ec);
    }
  }
  if (!all_ok(error.empty())) {
    throw IoError(error.empty() ? zerodiff::str(final_path.string(), ": rank 0 failed to complete the checkpoint") : error);
  }
  return final_path.string();
}

void CheckpointManager::prune(const std::string& just_written, int64_t step) {
  std::error_code ec;
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
      if (all[i] != just_written) remove(all[i]);
    }
  }
}

std::vector<std::string> CheckpointManager::list() const {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return {};
  restore_interrupted_replacements(dir_);  // a checkpoint moved aside by a killed replacement counts again
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

Checkpoint CheckpointManager::load(const std::string& path) { return load(path, 0, 1); }

Checkpoint CheckpointManager::load(const std::string& path, int rank, int world_size) {
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
  } catch (const nlohmann::json::exception& e) {
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
  if (ck.state.contains("rank_files")) {
    const int saved_world = ck.state.value("world_size", 0);
    if (saved_world != world_size) {
      throw IoError(zerodiff::str(path, ": written by ", saved_world,
                                  " processes (per-rank files: generator states, ZeRO optimizer shards); this run has ",
                                  world_size, ". Resume with the same world size"));
    }
    for (const auto& name : ck.state["rank_files"]) {
      if (!name.is_string()) throw IoError(zerodiff::str(state_path.string(), ": 'rank_files' must list names"));
      const fs::path file =
          fs::path(path) / zerodiff::str(name.get<std::string>(), ".rank-", rank, "-of-", world_size, ".safetensors");
      if (!fs::exists(file)) throw IoError(zerodiff::str(file.string(), ": missing from the checkpoint"));
      ck.tensors[name.get<std::string>()] = load_safetensors(file.string());
    }
  }
  return ck;
}

}  // namespace zerodiff::io
