// zerodiff/data/Dataset.h — the interface every dataset implements (map-style, like torch.utils.data.Dataset).
//
// Design rules: a dataset is immutable after construction and `get` is const and thread-safe (the
// DataLoader calls it from several worker threads at once). All validation that can be done up front
// (missing files, paths escaping the root, malformed metadata) happens in the constructor, so a bad dataset
// fails at start-up, before training; only decoding happens per sample.
#pragma once

#include <cstdint>
#include <string>

#include "zerodiff/data/Rng.h"
#include "zerodiff/data/Sample.h"

namespace zerodiff::data {

class Dataset {
 public:
  virtual ~Dataset() = default;

  /// Number of samples (> 0 for every dataset zerodiff builds).
  virtual int64_t size() const = 0;

  /// Sample `index` (0 <= index < size()) before transforms: image uint8 RGB [3, H, W] at its stored size,
  /// and its caption. When the sample has several captions one is picked with `rng` (one draw); a dataset
  /// with one caption per sample draws nothing. Throws IoError when the image cannot be read or decoded
  /// (the DataLoader skips such samples), zerodiff::Error when `index` is out of range.
  virtual Sample get(int64_t index, Rng& rng) const = 0;

  /// What sample `index` is, for messages: the image path, or "synthetic #index".
  virtual std::string describe(int64_t index) const = 0;
};

}  // namespace zerodiff::data
