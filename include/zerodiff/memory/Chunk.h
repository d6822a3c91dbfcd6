// zerodiff/memory/Chunk.h — one flat buffer of one dtype that a group of parameters are views into
// (ZeRO-3; ColossalAI's Chunk, FSDP's FlatParameter).
//
// Design rules of this file:
//  * A chunk has chunk_numel() elements, a multiple of the world size N; rank r owns elements
//    [r*chunk_numel/N, (r+1)*chunk_numel/N) as its shard, which always exists.
//  * The gathered buffer lives in one StorageImpl that never changes identity: release() frees its memory
//    (size 0) and gather() allocates it again and all-gathers into it. The parameters were turned into views
//    of that storage once (set_data), so autograd's saved references to them see the data again after a
//    re-gather, and writes through the chunk never bump the parameters' version counters.
//  * Parameters are never split between chunks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/memory/TensorState.h"

namespace zerodiff::memory {

/// A parameter's place in its chunk.
struct ChunkTensor {
  std::string name;
  at::Tensor param;        ///< the model's parameter (a view of the chunk's storage after close())
  int64_t offset = 0;      ///< first element in the chunk
  int64_t numel = 0;
  TensorState state = TensorState::HOLD;
};

class Chunk {
 public:
  /// `capacity` elements (rounded up to a multiple of world_size) of `dtype` on `device`. A `keep_gathered`
  /// chunk (a small unit's) is never released and keeps no separate shard: every rank holds it whole.
  Chunk(int64_t capacity, at::ScalarType dtype, c10::Device device, int rank, int world_size,
        bool keep_gathered = false);

  /// Whether a parameter of `numel` elements still fits.
  bool fits(int64_t numel) const { return used_ + numel <= capacity_; }
  /// Appends `param` (contiguous, this chunk's dtype and device; not after close()). Returns its index.
  size_t append(const std::string& name, const at::Tensor& param);
  /// Copies the parameters into the chunk, makes them views of its storage, keeps this rank's shard and
  /// releases the gathered buffer (state FREE). Every rank must hold the same parameter values.
  void close();

  int64_t chunk_numel() const { return capacity_; }
  int64_t used_numel() const { return used_; }  ///< elements of parameters (the rest is padding)
  int64_t shard_numel() const { return capacity_ / world_size_; }
  /// Bytes of the gathered buffer: chunk_numel() elements of dtype().
  int64_t chunk_bytes() const { return chunk_numel() * static_cast<int64_t>(c10::elementSize(dtype_)); }
  /// Bytes of one rank's shard: shard_numel() elements of dtype().
  int64_t shard_bytes() const { return shard_numel() * static_cast<int64_t>(c10::elementSize(dtype_)); }
  at::ScalarType dtype() const { return dtype_; }
  const at::Tensor& shard() const { return shard_; }  ///< [shard_numel] this rank's part (always resident;
                                                      ///< undefined for a keep_gathered chunk)
  at::Tensor& shard() { return shard_; }
  /// Replaces the shard by `shard` (same numel and dtype; any device: Gemini moves shards between the compute
  /// device and host memory). gather() copies a shard that is not on the chunk's device there first.
  void set_shard(at::Tensor shard);
  c10::Device device() const { return device_; }  ///< where the gathered buffer lives (the compute device)
  std::vector<ChunkTensor>& tensors() { return tensors_; }
  const std::vector<ChunkTensor>& tensors() const { return tensors_; }

  bool gathered() const { return gathered_; }
  bool keep_gathered() const { return keep_gathered_; }
  /// Allocates the full buffer and all-gathers the shards into it (async: wait() before use). No-op when
  /// gathered or a gather is in flight. Parameters become HOLD.
  void gather(dist::ProcessGroup& group, bool async = false);
  /// Waits for an in-flight gather.
  void wait();
  /// Frees the full buffer (the shard stays). Parameters become FREE.
  void release();
  /// Copies the full buffer's part of this rank back into the shard (after the parameters were changed in
  /// place while gathered, e.g. by loading weights).
  void update_shard_from_full();

  /// The full buffer as a [chunk_numel] tensor (only while gathered).
  at::Tensor full() const;
  /// Bytes resident now: the shard plus the gathered buffer when it exists.
  int64_t resident_bytes() const;
  /// Moves every tensor to `to`, checking legality (throws InternalError naming the tensor otherwise).
  void set_state(size_t tensor, TensorState to);

 private:
  int64_t capacity_;
  int64_t used_ = 0;
  at::ScalarType dtype_;
  c10::Device device_;
  int rank_, world_size_;
  bool closed_ = false;
  bool keep_gathered_ = false;
  bool gathered_ = true;  // before close(): the parameters hold their own data
  std::vector<ChunkTensor> tensors_;
  c10::Storage storage_;  // the gathered buffer (size 0 while released)
  at::Tensor shard_;
  dist::Work pending_;
};

}  // namespace zerodiff::memory
