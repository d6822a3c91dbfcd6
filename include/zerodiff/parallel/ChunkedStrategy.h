// zerodiff/parallel/ChunkedStrategy.h — the zero3 strategy's own type: zero3 and gemini, whose parameters live in
// chunks (memory::ChunkManager) sharded over the ranks and gathered unit by unit (Strategy.h describes the contract
// both share). What the generic Strategy interface does not show — the chunk layout and resident-byte accounting, and
// gemini's placement manager — is reached through this type:
//
//   if (const auto* chunked = dynamic_cast<const parallel::ChunkedStrategy*>(&strategy)) {
//     const memory::ChunkManager& chunks = chunked->chunks();
//     if (const memory::GeminiManager* placement = chunked->placement()) { ... }  // gemini only
//   }
//
// make_strategy(StrategyKind::zero3 / gemini, ...) returns one. The two differ only in their shard optimizer (what
// happens to a shard in the optimizer step: in memory for zero3; blocks placed on device, host or disk for gemini;
// src/parallel/ShardOptimizer.h), chosen at construction.
#pragma once

#include "zerodiff/memory/ChunkManager.h"
#include "zerodiff/memory/GeminiManager.h"
#include "zerodiff/parallel/Strategy.h"

namespace zerodiff::parallel {

/// zero3's and gemini's own type (the file comment): its chunks and its placement, for tests and benchmarks.
class ChunkedStrategy : public Strategy {
 public:
  using Strategy::Strategy;

  /// The chunks holding the trainable parameters: layout (chunks, units, parameters in registration order) and the
  /// resident-byte accounting (shards, gathered buffers, peak). Built by setup(); throws zerodiff::Error before.
  virtual const memory::ChunkManager& chunks() const = 0;
  /// gemini's placement manager (tiers of shards and optimizer blocks, device budget, peaks, evictions, warm-up
  /// trace); null for zero3 (its shards and optimizer states stay in memory on the compute device) and before setup().
  virtual const memory::GeminiManager* placement() const = 0;
};

}  // namespace zerodiff::parallel
