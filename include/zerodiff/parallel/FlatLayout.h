// zerodiff/parallel/FlatLayout.h — where each trainable parameter lives in one flat index space, how that
// space is cut into communication buckets, and which slice of every bucket each rank owns (its shard).
//
// Layout rules (shared by ddp, zero1 and zero2):
//  * Parameters are laid out in the order given (the strategies pass them in reverse registration order,
//    the order backward produces their gradients, as PyTorch DDP's reducer does), back to back.
//  * Buckets are consecutive ranges of `bucket_numel` elements (a multiple of the world size N); a parameter
//    may straddle two buckets. The last bucket is padded up to a multiple of N, so the padding of the whole
//    layout is below N elements.
//  * Rank r owns, in every bucket b, the r-th of its N equal parts: [b.offset + r*b.numel/N, +b.numel/N).
//    Its shard is the concatenation of those parts (padded_numel / N elements). A bucket's reduce-scatter
//    then lands exactly in the owner's part, and a bucket's all-gather rebuilds it from the parts.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace zerodiff::parallel {

/// A contiguous run of one parameter's elements inside a bucket (or inside a rank's shard).
struct Piece {
  size_t param = 0;          ///< index into the layout's parameter list
  int64_t param_offset = 0;  ///< first element in the flattened parameter
  int64_t offset = 0;        ///< first element in the flat space (Bucket::pieces) or in the shard (shard_pieces)
  int64_t numel = 0;
};

/// A communication bucket: flat elements [offset, offset + numel).
struct Bucket {
  int64_t offset = 0;
  int64_t numel = 0;          ///< a multiple of the world size
  std::vector<Piece> pieces;  ///< the parameters it holds (padding excluded), in flat order
};

/// A value type describing one rank's slice of something flat (ShardInfo in DESIGN.md §7).
struct ShardInfo {
  int64_t offset = 0;
  int64_t size = 0;
};

class FlatLayout {
 public:
  /// `numels[i]` = element count of parameter i (>= 1 each); world_size >= 1; bucket_numel >= 1 (rounded up
  /// to a multiple of world_size). Throws zerodiff::Error on bad arguments.
  FlatLayout(const std::vector<int64_t>& numels, int world_size, int64_t bucket_numel);

  int world_size() const { return world_size_; }
  int64_t numel() const { return numel_; }                ///< Ψ: elements of all parameters
  int64_t padded_numel() const { return padded_numel_; }  ///< Ψ rounded up to a multiple of N
  int64_t shard_numel() const { return padded_numel_ / world_size_; }
  /// The bucket size (elements, rounded up to a multiple of N); the last bucket may be smaller.
  int64_t bucket_numel() const { return bucket_numel_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  /// Flat offset of parameter i.
  int64_t param_offset(size_t i) const { return offsets_[i]; }
  /// Buckets holding (part of) parameter i, ascending.
  const std::vector<size_t>& buckets_of(size_t i) const { return buckets_of_[i]; }

  /// Rank r's part of bucket b: flat offset and size.
  ShardInfo bucket_part(size_t b, int rank) const;
  /// Where bucket b's part of rank r starts inside r's shard.
  int64_t shard_offset_of_bucket(size_t b) const { return shard_offsets_[b]; }
  /// The parameter runs of rank r's shard, with Piece::offset relative to the shard, in shard order.
  std::vector<Piece> shard_pieces(int rank) const;

 private:
  int world_size_;
  int64_t numel_ = 0, padded_numel_ = 0, bucket_numel_ = 0;
  std::vector<int64_t> numels_, offsets_, shard_offsets_;
  std::vector<Bucket> buckets_;
  std::vector<std::vector<size_t>> buckets_of_;
};

}  // namespace zerodiff::parallel
