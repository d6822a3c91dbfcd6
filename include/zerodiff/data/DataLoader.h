// zerodiff/data/DataLoader.h — batches from a dataset: worker threads, bounded prefetch, rank sharding,
// per-epoch shuffling and an exactly resumable position. The shape of torch.utils.data.DataLoader with a
// DistributedSampler, minus processes.
//
// Design rules:
//  * Determinism. Batch b of epoch e is a pure function of (dataset, options, e, b): the indices come from
//    ShardedSampler, each sample is built with Rng::for_sample(seed, e, index) (caption pick, crop, flip,
//    caption dropout, tag shuffle, in that order). Hence the same seed gives the same batches whatever the
//    number of workers, and a loader restored with load_state(state()) yields exactly the batches the
//    original would have.
//  * Workers. num_workers threads build whole batches (decode, transform, collate) in batch order, at most
//    num_workers * prefetch batches ahead of the consumer (torch's prefetch_factor); next() returns them in
//    order. ATen intra-op parallelism is switched off inside workers (c10::ParallelGuard), as torch's worker
//    processes run with one thread. num_workers = 0 builds each batch in the calling thread.
//  * Batches. Per rank, ceil(num_samples / batch_size) batches per epoch, the last one smaller; with
//    drop_last, floor(...) batches, all full (drop_last also applies to the sharding: see ShardedSampler).
//  * Unreadable images. A sample whose image cannot be read or decoded (IoError: corrupt, truncated, over
//    the pixel limit, deleted after start-up) is skipped: a warning "skipping unreadable image <path>: <why>"
//    is logged the first time that sample fails, it is counted (num_skipped()), and its slot is filled with
//    the next readable sample in dataset order (index + 1, index + 2, ... mod N), built with the original
//    slot's RNG, so batches keep their size and determinism. When no sample is readable next() throws
//    IoError. Errors that are not IoError propagate from next().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "zerodiff/data/Batch.h"
#include "zerodiff/data/CaptionTransform.h"
#include "zerodiff/data/Dataset.h"
#include "zerodiff/data/ImageTransform.h"
#include "zerodiff/data/LoaderState.h"
#include "zerodiff/data/ShardedSampler.h"

namespace zerodiff::data {

struct DataLoaderOptions {
  int64_t batch_size = 1;    ///< samples per batch on this rank (>= 1)
  int num_workers = 2;       ///< worker threads; 0 = build batches in the calling thread
  int prefetch = 2;          ///< batches queued per worker ahead of the consumer (>= 1)
  bool shuffle = true;       ///< reshuffle every epoch (from (seed, epoch))
  uint64_t seed = 0;         ///< seed of the shuffle and of every per-sample RNG
  bool drop_last = false;    ///< drop the incomplete last batch and the sharding remainder
  int rank = 0;              ///< this process's rank
  int world_size = 1;        ///< number of ranks sharing the dataset
  ImageTransformOptions image;      ///< resize / crop / flip
  CaptionTransformOptions caption;  ///< dropout / tag shuffle
};

class DataLoader {
 public:
  /// Starts the workers, which begin prefetching epoch 0. Throws zerodiff::Error for invalid options
  /// (batch_size < 1, num_workers < 0, prefetch < 1, and ShardedSampler's checks) or when drop_last leaves
  /// no batch per epoch.
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options);
  /// Stops and joins the workers (batches in flight are discarded).
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch of the current epoch, or nullopt when the epoch is exhausted; the nullopt also moves
  /// the loader to batch 0 of the next epoch (and workers start prefetching it):
  ///   while (auto batch = loader.next()) train(*batch);   // one epoch
  /// Rethrows an error raised while building the batch.
  std::optional<Batch> next();

  /// Batches per epoch on this rank.
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  /// The position to save: the next batch next() yields.
  LoaderState state() const;
  /// Moves to `state` (discarding prefetched batches). Throws zerodiff::Error when `state` was saved by a
  /// loader with another seed, batch size, world size or dataset size, or when its position is past the
  /// end of its epoch.
  void load_state(const LoaderState& state);

  /// Batch `batch` of `epoch`, built in the calling thread without touching the position. Throws
  /// zerodiff::Error when `batch` is outside [0, batches_per_epoch()).
  Batch build_batch(int64_t epoch, int64_t batch) const;

  /// Number of distinct samples found unreadable so far (each is warned about once).
  int64_t num_skipped() const;
  /// Their dataset indices, ascending.
  std::vector<int64_t> skipped_indices() const;

  const DataLoaderOptions& options() const { return options_; }
  const Dataset& dataset() const { return *dataset_; }

 private:
  struct Impl;
  Sample build_sample(int64_t epoch, int64_t index) const;

  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  ShardedSampler sampler_;
  ImageTransform image_transform_;
  CaptionTransform caption_transform_;
  int64_t batches_per_epoch_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zerodiff::data
