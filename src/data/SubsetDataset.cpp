// SubsetDataset and the deterministic train/validation split.
#include "zerodiff/data/SubsetDataset.h"

#include <algorithm>
#include <cmath>

#include "zerodiff/core/Error.h"

namespace zerodiff::data {

SubsetDataset::SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices)
    : base_(std::move(base)), indices_(std::move(indices)) {
  ZD_CHECK(base_ != nullptr, "SubsetDataset: base dataset is null");
  ZD_CHECK(!indices_.empty(), "SubsetDataset: no indices");
  for (int64_t i : indices_) {
    ZD_CHECK(i >= 0 && i < base_->size(), "SubsetDataset: index ", i, " out of range [0, ", base_->size(), ")");
  }
}

int64_t SubsetDataset::base_index(int64_t index) const {
  ZD_CHECK(index >= 0 && index < size(), "sample index ", index, " out of range [0, ", size(), ")");
  return indices_[static_cast<size_t>(index)];
}

Sample SubsetDataset::get(int64_t index, Rng& rng) const {
  Sample s = base_->get(base_index(index), rng);
  s.index = index;
  return s;
}

std::string SubsetDataset::describe(int64_t index) const { return base_->describe(base_index(index)); }

DatasetSplit split_dataset(std::shared_ptr<const Dataset> dataset, double fraction, uint64_t seed) {
  ZD_CHECK(dataset != nullptr, "split_dataset: dataset is null");
  ZD_CHECK(fraction >= 0 && fraction <= 0.5, "validation split must be in [0, 0.5], got ", fraction);
  if (fraction == 0) return {dataset, nullptr};
  const int64_t n = dataset->size();
  const auto held_out = std::max<int64_t>(1, static_cast<int64_t>(std::llround(fraction * static_cast<double>(n))));
  ZD_CHECK(held_out < n, "validation split ", fraction, " of ", n, " samples leaves no training samples");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  Rng rng = Rng::for_stream(seed, /*epoch=*/0, /*stream=*/0x76616c69ull);  // "vali"
  rng.shuffle(order);
  std::vector<int64_t> validation(order.begin(), order.begin() + held_out);
  std::vector<int64_t> train(order.begin() + held_out, order.end());
  std::sort(validation.begin(), validation.end());
  std::sort(train.begin(), train.end());
  return {std::make_shared<SubsetDataset>(dataset, std::move(train)),
          std::make_shared<SubsetDataset>(dataset, std::move(validation))};
}

}  // namespace zerodiff::data
