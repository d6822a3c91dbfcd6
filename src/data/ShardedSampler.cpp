// ShardedSampler: DistributedSampler's epoch permutation, padding/dropping and rank striding.
#include "zerodiff/data/ShardedSampler.h"

#include <numeric>

#include "zerodiff/core/Error.h"
#include "zerodiff/data/Rng.h"

namespace zerodiff::data {

ShardedSampler::ShardedSampler(int64_t dataset_size, ShardedSamplerOptions options)
    : dataset_size_(dataset_size), options_(options) {
  ZD_CHECK(dataset_size_ >= 1, "the dataset is empty");
  ZD_CHECK(options_.world_size >= 1, "world_size must be >= 1, got ", options_.world_size);
  ZD_CHECK(options_.rank >= 0 && options_.rank < options_.world_size, "rank ", options_.rank,
           " is outside [0, world_size = ", options_.world_size, ")");
  const int64_t w = options_.world_size;
  num_samples_ = options_.drop_last ? dataset_size_ / w : (dataset_size_ + w - 1) / w;
  ZD_CHECK(num_samples_ >= 1, "the dataset has ", dataset_size_, " samples, fewer than world_size ", w,
           ": with drop_last no rank gets a sample");
}

std::vector<int64_t> ShardedSampler::indices(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(dataset_size_));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (options_.shuffle) {
    Rng rng = Rng::for_stream(options_.seed, epoch, kShuffleStream);
    rng.shuffle(order);
  }
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(num_samples_));
  for (int64_t k = 0; k < num_samples_; ++k) {
    const int64_t position = options_.rank + k * options_.world_size;
    out.push_back(order[static_cast<size_t>(position % dataset_size_)]);  // wrap-around padding
  }
  return out;
}

}  // namespace zerodiff::data
