// zerodiff/data/SubsetDataset.h — a view of some samples of another dataset (torch.utils.data.Subset), and
// the deterministic train/validation split built from it.
#pragma once

#include <memory>
#include <vector>

#include "zerodiff/data/Dataset.h"

namespace zerodiff::data {

/// Samples `indices` of `base`, in that order: sample i of the subset is sample indices[i] of the base.
/// Thread-safe like every dataset (immutable after construction).
class SubsetDataset : public Dataset {
 public:
  /// Throws zerodiff::Error when `base` is null, `indices` is empty or an index is outside [0, base->size()).
  SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices);

  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  /// The base's sample indices[index] (its caption draw uses `rng` as the base does).
  Sample get(int64_t index, Rng& rng) const override;
  std::string describe(int64_t index) const override;
  /// The base dataset's index of sample `index`.
  int64_t base_index(int64_t index) const;

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
};

/// A train/validation split of one dataset.
struct DatasetSplit {
  std::shared_ptr<const Dataset> train;       ///< never null
  std::shared_ptr<const Dataset> validation;  ///< null when fraction == 0
};

/// Holds out round(fraction * N) samples (at least 1 when fraction > 0) for validation: a Fisher–Yates
/// permutation of [0, N) drawn from `seed` (the same split on every run and platform); validation takes the
/// first held-out positions, training keeps the rest, both in ascending base-index order. fraction == 0
/// returns the dataset itself as `train`. Throws zerodiff::Error when fraction is outside [0, 0.5] or the
/// split would leave either side empty.
DatasetSplit split_dataset(std::shared_ptr<const Dataset> dataset, double fraction, uint64_t seed);

}  // namespace zerodiff::data
