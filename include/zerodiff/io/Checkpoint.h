// zerodiff/io/Checkpoint.h — training-state checkpoints: <dir>/checkpoint-<step>/ holding named
// safetensors files (model, optimizer, ema, rng ...) and trainer_state.json.
//
// Atomicity: a checkpoint is written into a hidden temporary folder next to its final place, every file
// fsync'ed, then the folder is renamed to checkpoint-<step> and the parent fsync'ed. A crash (kill -9, full
// disk) at any point leaves either no new checkpoint or a complete one; earlier checkpoints are never
// touched until the new one is complete, and only then pruned to the newest `keep_last`.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "zerodiff/io/Safetensors.h"

namespace zerodiff::io {

/// Contents of one checkpoint.
struct Checkpoint {
  std::string path;                          ///< the checkpoint-<step> folder
  int64_t step = 0;                          ///< optimizer steps done when saved
  nlohmann::json state;                      ///< trainer_state.json
  std::map<std::string, TensorMap> tensors;  ///< "<name>" -> tensors of <name>.safetensors
};

class CheckpointManager {
 public:
  /// `dir` is created on first save. keep_last >= 1 (0 = keep all).
  CheckpointManager(std::string dir, int64_t keep_last);

  /// Writes checkpoint-<step> atomically, then prunes older ones beyond keep_last. Returns its path.
  /// Throws IoError naming the file on a write failure (nothing under checkpoint-<step> then, and older
  /// checkpoints intact). An existing checkpoint-<step> is replaced only after the new one is complete.
  std::string save(int64_t step, const std::map<std::string, TensorMap>& tensors, const nlohmann::json& state);

  /// Complete checkpoints, oldest first (checkpoint-<step> folders with a trainer_state.json).
  std::vector<std::string> list() const;
  /// The newest complete checkpoint, if any.
  std::optional<std::string> latest() const;

  /// Reads a checkpoint folder. Throws IoError naming the folder/file when it is missing, has no
  /// trainer_state.json, the JSON is invalid, or a listed tensor file is missing or corrupt.
  static Checkpoint load(const std::string& path);

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int64_t keep_last_;
};

}  // namespace zerodiff::io
