// zerodiff/data/LoaderState.h — the resumable position of a DataLoader, saved in training checkpoints.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>

namespace zerodiff::data {

/// Where a DataLoader is: the next batch it yields is batch `batch` of epoch `epoch`. The other fields
/// describe the loader that saved it; DataLoader::load_state refuses a state whose fields differ from its
/// own, because the same position would then name different samples.
struct LoaderState {
  int64_t epoch = 0;         ///< current epoch
  int64_t batch = 0;         ///< batches of this epoch already consumed
  uint64_t seed = 0;         ///< loader seed
  int64_t batch_size = 0;    ///< per-rank batch size
  int64_t world_size = 1;    ///< number of ranks
  int64_t dataset_size = 0;  ///< number of samples in the dataset

  bool operator==(const LoaderState&) const = default;
  /// {"epoch": 3, "batch": 17, "seed": 0, "batch_size": 4, "world_size": 2, "dataset_size": 1000}
  nlohmann::json to_json() const;
  /// Inverse of to_json. Throws zerodiff::Error naming a missing or non-integer key.
  static LoaderState from_json(const nlohmann::json& json);
};

}  // namespace zerodiff::data
