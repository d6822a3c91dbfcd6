// zerodiff/data/Batch.h — a collated batch, what the DataLoader yields.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace zerodiff::data {

struct Batch {
  at::Tensor images;                  ///< [B, 3, H, W] float32 in [-1, 1], on CPU, contiguous
  std::vector<std::string> captions;  ///< B captions ("" for dropped ones)
  std::vector<int64_t> indices;       ///< B dataset indices (an unreadable sample's slot holds its substitute)
  int64_t epoch = 0;                  ///< the epoch this batch belongs to
  int64_t batch = 0;                  ///< its position in the epoch (0-based)
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

}  // namespace zerodiff::data
