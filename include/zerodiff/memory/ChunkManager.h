// zerodiff/memory/ChunkManager.h — packs the trainable parameters of a model into chunks, unit by unit in
// execution order (ZeRO-3; ColossalAI's ChunkManager and its chunk-size search), and keeps the accounting
// of what is resident.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/memory/Chunk.h"

namespace zerodiff::memory {

/// A sharding unit's trainable parameters, by name, in the order the model registers them.
struct UnitParams {
  std::string name;
  std::vector<std::pair<std::string, at::Tensor>> params;
};

/// Chunk size (elements) that wastes least when `numels` are packed greedily in order into chunks of that
/// size, a parameter never split: candidates from max(numels) (rounded up to a multiple of world_size)
/// to that + search_range, in steps of `step`; ties go to the smaller size. Padding = Σ (chunk - used).
/// Throws zerodiff::Error for empty input or non-positive step / range.
int64_t search_chunk_numel(const std::vector<int64_t>& numels, int world_size, int64_t search_range, int64_t step);

/// Elements of padding when `numels` are packed greedily into chunks of `chunk_numel` (as ChunkManager does).
int64_t packing_padding(const std::vector<int64_t>& numels, int64_t chunk_numel);

class ChunkManager {
 public:
  /// Registers every parameter of `units` (a tensor listed in several units goes into the chunk of its first
  /// unit) into chunks of `chunk_numel` elements (0 = search_chunk_numel over a 32 Mi-element range in
  /// 1 Mi steps), closes them (each rank keeps its shard; the gathered buffers are released). A parameter
  /// larger than chunk_numel gets a chunk of its own size. Every rank must pass the same units with the same
  /// values. Throws zerodiff::Error for no parameters or a non-contiguous one (naming it).
  /// Units whose parameters (not registered by an earlier unit) total fewer than `keep_gathered_numel`
  /// elements go into keep_gathered chunks of their own: small groups stay whole on every rank and their
  /// gradients are all-reduced (gathering them would cost more than it saves).
  ChunkManager(dist::ProcessGroup& group, const std::vector<UnitParams>& units, int64_t chunk_numel = 0,
               int64_t keep_gathered_numel = 0);

  size_t num_chunks() const { return chunks_.size(); }
  Chunk& chunk(size_t i) { return *chunks_.at(i); }
  const Chunk& chunk(size_t i) const { return *chunks_.at(i); }
  size_t num_units() const { return unit_chunks_.size(); }
  const std::string& unit_name(size_t u) const { return unit_names_.at(u); }
  /// Chunks holding unit u's parameters, ascending.
  const std::vector<size_t>& unit_chunks(size_t u) const { return unit_chunks_.at(u); }
  /// Registered parameters (each tensor once), in registration order, with their (chunk, index in chunk).
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  std::pair<size_t, size_t> location(size_t param) const { return locations_.at(param); }
  int64_t chunk_numel() const { return chunk_numel_; }

  /// Ψ: elements of the registered parameters; padding: elements of the chunks beyond them.
  int64_t numel() const { return numel_; }
  int64_t padding() const;
  /// Bytes that stay resident between steps: every chunk's shard, and keep_gathered chunks whole.
  int64_t shard_bytes() const;
  /// Bytes resident now (shards + gathered buffers), and the largest value seen since reset_peak().
  int64_t resident_bytes() const;
  int64_t peak_resident_bytes() const { return peak_; }
  void reset_peak() { peak_ = resident_bytes(); }
  /// Records the current resident bytes into the peak (called after every gather).
  void note_resident() { peak_ = std::max(peak_, resident_bytes()); }

  /// Gathers every chunk (all ranks must call it) / releases every chunk.
  void gather_all();
  void release_all();

 private:
  dist::ProcessGroup& group_;
  int64_t chunk_numel_ = 0;
  int64_t numel_ = 0;
  int64_t peak_ = 0;
  std::vector<std::unique_ptr<Chunk>> chunks_;
  std::vector<std::vector<size_t>> unit_chunks_;
  std::vector<std::string> unit_names_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<std::pair<size_t, size_t>> locations_;
};

}  // namespace zerodiff::memory
