// Internal (parallel layer): the ShardedEma capability of the chunked strategies (zero3, gemini; Zero3Strategy.cpp owns
// one when built with StrategyOptions::ema). Per chunk an fp32 EMA of this rank's master shard lives in the chunk's
// OptimizerBlock, kept by the shard optimizer (ShardOptimizer.h): in memory beside the master for zero3; on the block's
// tier for gemini, moving with it after the warm-up and updated while the block is in memory for AdamW (no extra disk
// traffic). The shard optimizer's step() applies the update with the decay this class hands the strategy
// (take_decay); this class converts the shards from and to whole tensors (all-gathered chunk by chunk for
// checkpoints) and puts them into the parameter shards for export. The contract:
// include/zerodiff/parallel/ShardedEma.h.
#pragma once

#include <cmath>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ShardOptimizer.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/memory/ChunkManager.h"
#include "zerodiff/parallel/ShardedEma.h"

namespace zerodiff::parallel::detail {

class ChunkedEma final : public ShardedEma {
 public:
  /// `strategy` names the strategy in errors. `group`, `shards`, `mutex` (the strategy's, held by every member) and
  /// `held_full` (whether gather_full_parameters holds the whole model) belong to the strategy and outlive this object.
  ChunkedEma(std::string strategy, dist::ProcessGroup& group, ShardOptimizer& shards, std::recursive_mutex& mutex,
             const bool& held_full)
      : strategy_(std::move(strategy)), group_(group), shards_(shards), mutex_(mutex), held_full_(held_full) {}

  /// The strategy's chunks, once its setup() built them (and the shard optimizer's blocks over them). Before, params()
  /// is empty and the other members throw zerodiff::Error.
  void attach(memory::ChunkManager& chunks) { chunks_ = &chunks; }
  /// The decay set for this step, consumed (each step() needs its own set_decay). Throws zerodiff::Error when none was
  /// set since the last step.
  double take_decay();

  std::vector<at::Tensor> params() const override;
  void set_decay(double decay) override;
  std::vector<std::pair<at::Tensor, at::Tensor>> gather() override;
  void load(const std::vector<std::pair<at::Tensor, at::Tensor>>& whole, const std::string& where) override;
  void use_ema_weights(bool on) override;

 private:
  memory::ChunkManager& chunks() const;

  std::string strategy_;
  dist::ProcessGroup& group_;
  ShardOptimizer& shards_;
  std::recursive_mutex& mutex_;
  const bool& held_full_;
  memory::ChunkManager* chunks_ = nullptr;
  double decay_ = NAN;             // set by set_decay, consumed by the next step()
  std::vector<at::Tensor> saved_;  // use_ema_weights(true): the parameter shards' trained values, per chunk
};

}  // namespace zerodiff::parallel::detail
