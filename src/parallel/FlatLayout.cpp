#include "zerodiff/parallel/FlatLayout.h"

#include <algorithm>

#include "zerodiff/core/Error.h"

namespace zerodiff::parallel {

FlatLayout::FlatLayout(const std::vector<int64_t>& numels, int world_size, int64_t bucket_numel)
    : world_size_(world_size), numels_(numels) {
  ZD_CHECK(world_size >= 1, "FlatLayout: world size must be >= 1, got ", world_size);
  ZD_CHECK(bucket_numel >= 1, "FlatLayout: bucket size must be >= 1 element, got ", bucket_numel);
  ZD_CHECK(!numels.empty(), "FlatLayout: no parameters");
  const int64_t n = world_size;
  bucket_numel = (bucket_numel + n - 1) / n * n;
  bucket_numel_ = bucket_numel;
  offsets_.reserve(numels.size());
  for (size_t i = 0; i < numels.size(); ++i) {
    ZD_CHECK(numels[i] >= 1, "FlatLayout: parameter ", i, " has ", numels[i], " elements");
    offsets_.push_back(numel_);
    numel_ += numels[i];
  }
  padded_numel_ = (numel_ + n - 1) / n * n;
  buckets_of_.resize(numels.size());
  size_t param = 0;
  for (int64_t start = 0; start < padded_numel_; start += bucket_numel) {
    Bucket b;
    b.offset = start;
    b.numel = std::min(bucket_numel, padded_numel_ - start);  // both multiples of n
    const int64_t end = std::min(start + b.numel, numel_);
    while (param < numels.size() && offsets_[param] + numels[param] <= start) ++param;
    for (size_t p = param; p < numels.size() && offsets_[p] < end; ++p) {
      const int64_t lo = std::max(offsets_[p], start);
      const int64_t hi = std::min(offsets_[p] + numels[p], end);
      b.pieces.push_back(Piece{p, lo - offsets_[p], lo, hi - lo});
      buckets_of_[p].push_back(buckets_.size());
    }
    shard_offsets_.push_back(start / n);
    buckets_.push_back(std::move(b));
  }
}

ShardInfo FlatLayout::bucket_part(size_t b, int rank) const {
  ZD_CHECK(b < buckets_.size() && rank >= 0 && rank < world_size_, "FlatLayout: bucket ", b, " / rank ", rank,
           " out of range");
  const int64_t part = buckets_[b].numel / world_size_;
  return ShardInfo{buckets_[b].offset + rank * part, part};
}

std::vector<Piece> FlatLayout::shard_pieces(int rank) const {
  std::vector<Piece> out;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const ShardInfo part = bucket_part(b, rank);
    for (const Piece& piece : buckets_[b].pieces) {
      const int64_t lo = std::max(piece.offset, part.offset);
      const int64_t hi = std::min(piece.offset + piece.numel, part.offset + part.size);
      if (lo >= hi) continue;
      out.push_back(Piece{piece.param, piece.param_offset + (lo - piece.offset),
                          shard_offsets_[b] + (lo - part.offset), hi - lo});
    }
  }
  return out;
}

}  // namespace zerodiff::parallel
