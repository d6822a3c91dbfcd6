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
#include <functional>
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
  std::map<std::string, TensorMap> tensors;  ///< "<name>" -> tensors of <name>.safetensors (and this rank's
                                             ///< "<name>.rank-<r>-of-<W>.safetensors" under "<name>")
};

/// How the processes of a multi-process run write one checkpoint together.
struct RankSync {
  int rank = 0;
  int world_size = 1;
  /// Collective over all ranks (also a barrier): true when every rank passed true.
  std::function<bool(bool)> all_ok;
};

class CheckpointManager {
 public:
  /// `dir` is created on first save. keep_last >= 1 (0 = keep all).
  CheckpointManager(std::string dir, int64_t keep_last);

  /// Writes checkpoint-<step> atomically, then prunes older ones beyond keep_last. Returns its path.
  /// Throws IoError naming the file on a write failure (nothing under checkpoint-<step> then, and older
  /// checkpoints intact). An existing checkpoint-<step> is replaced only after the new one is complete.
  std::string save(int64_t step, const std::map<std::string, TensorMap>& tensors, const nlohmann::json& state);

  /// Multi-process save, called by every rank: rank 0 writes `tensors` and `state`; every rank writes
  /// `rank_tensors` (the same names on every rank) as "<name>.rank-<r>-of-<W>.safetensors". Ranks other than 0
  /// stage their files next to the checkpoint; rank 0 moves them into its temporary folder, which becomes
  /// checkpoint-<step> in one rename, so the folder is complete (every rank's files) or absent. Throws IoError
  /// on every rank when any rank failed to write (nothing new under checkpoint-<step>, older ones intact).
  std::string save(int64_t step, const std::map<std::string, TensorMap>& tensors, const nlohmann::json& state,
                   const std::map<std::string, TensorMap>& rank_tensors, const RankSync& sync);

  /// Complete checkpoints, oldest first (checkpoint-<step> folders with a trainer_state.json).
  std::vector<std::string> list() const;
  /// The newest complete checkpoint, if any.
  std::optional<std::string> latest() const;

  /// Reads a checkpoint folder. Throws IoError naming the folder/file when it is missing, has no
  /// trainer_state.json, the JSON is invalid, or a listed tensor file is missing or corrupt.
  static Checkpoint load(const std::string& path);
  /// As above for rank `rank` of `world_size`: also reads this rank's files (listed in trainer_state.json's
  /// "rank_files"). Throws IoError when the checkpoint was written by another number of ranks.
  static Checkpoint load(const std::string& path, int rank, int world_size);

  const std::string& dir() const { return dir_; }

 private:
  void prune(const std::string& just_written, int64_t step);
  std::string dir_;
  int64_t keep_last_;
};

}  // namespace zerodiff::io
