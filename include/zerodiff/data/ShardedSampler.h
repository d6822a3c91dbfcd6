// zerodiff/data/ShardedSampler.h — which sample indices this rank reads in an epoch; the rules of
// torch.utils.data.DistributedSampler.
//
// Epoch order: a permutation of [0, N) from Rng::for_stream(seed, epoch, kShuffleStream) (Fisher–Yates), or
// 0..N-1 without shuffling. The order is then made divisible by world_size W:
//  * drop_last = false: padded by repeating its beginning (wrap-around) to ceil(N / W) * W entries, so a
//    few samples are read twice in an epoch when W does not divide N;
//  * drop_last = true: its tail is dropped to floor(N / W) * W entries, so a few samples are skipped in an
//    epoch (a different few each epoch when shuffling).
// Rank r takes entries r, r + W, r + 2W, ... Every rank gets the same count, so ranks stay in step; when W
// divides N, the ranks together read every sample exactly once per epoch.
#pragma once

#include <cstdint>
#include <vector>

namespace zerodiff::data {

struct ShardedSamplerOptions {
  uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = false;
  int rank = 0;
  int world_size = 1;
};

class ShardedSampler {
 public:
  /// Stream id of the epoch permutation (see Rng::for_stream).
  static constexpr uint64_t kShuffleStream = 1;

  /// Throws zerodiff::Error when dataset_size < 1, world_size < 1, rank outside [0, world_size), or
  /// drop_last leaves this rank no sample (dataset_size < world_size).
  ShardedSampler(int64_t dataset_size, ShardedSamplerOptions options);

  /// Number of indices per rank per epoch.
  int64_t num_samples() const { return num_samples_; }
  /// This rank's indices for `epoch`, in reading order (num_samples() of them).
  std::vector<int64_t> indices(int64_t epoch) const;

  const ShardedSamplerOptions& options() const { return options_; }
  int64_t dataset_size() const { return dataset_size_; }

 private:
  int64_t dataset_size_;
  ShardedSamplerOptions options_;
  int64_t num_samples_;
};

}  // namespace zerodiff::data
