// zerodiff/parallel/ShardedEma.h — an EMA of the trained weights kept by the strategy itself, sharded like its master
// weights: the capability a strategy offers through Strategy::sharded_ema() (zero3 and gemini built with
// StrategyOptions::ema; every other strategy returns null, and the Trainer keeps train::EMA over whole parameters).
//
// What it holds: per chunk, an fp32 tensor of this rank's shard_numel elements (a chunk kept gathered: chunk_numel)
// beside the master shard — 4 bytes per trainable element / world size (MemoryReport::ema). zero3 keeps it in memory
// on the compute device; gemini keeps it in the chunk's optimizer block, on that block's tier (device, host or disk).
// It starts as the master shard when the strategy is set up (the parameters after rank 0's broadcast), as train::EMA
// snapshots the model.
//
// Per step (the Trainer): set_decay(ema_decay_at(options, step + 1)); strategy.step() then applies
// ema -= (1 - decay) * (ema - float(master)) to every element of this rank's shards after AdamW (train::EMA::update's
// rule on the same fp32 values, so both give the same bits), with no communication. A step that is skipped (no step()
// call) leaves the EMA alone. Checkpoints store the same "ema" file as train::EMA: gather() makes whole tensors,
// load() cuts them back into shards. (ZeRO's rule for every model state, Rajbhandari et al. 2020: each rank keeps and
// updates only its own partition.)
//
// Lifetime: owned by the strategy; the pointer stays valid as long as the strategy. Not thread-safe beyond what the
// strategy is (one training thread).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace zerodiff::parallel {

class ShardedEma {
 public:
  virtual ~ShardedEma() = default;
  ShardedEma(const ShardedEma&) = delete;
  ShardedEma& operator=(const ShardedEma&) = delete;

  /// The parameter tensors this EMA covers: every chunked (trainable) parameter, each distinct tensor once (a tied
  /// tensor appears once), in chunk order. The tensors are the model's own (views of the chunks). Valid after the
  /// strategy's setup(); empty before.
  virtual std::vector<at::Tensor> params() const = 0;

  /// The decay the next Strategy::step() applies to the EMA after its AdamW update (see the file comment); each
  /// step() consumes it, so every step needs its own set_decay (step() throws zerodiff::Error otherwise). Computed by
  /// the caller (train::ema_decay_at). Throws zerodiff::Error for a decay outside [0, 1].
  virtual void set_decay(double decay) = 0;

  /// Collective (every rank calls it, at the same point): the EMA of every chunked parameter, whole: (the parameter
  /// tensor, an fp32 CPU tensor of its shape), one entry per distinct tensor. Only rank 0 receives the entries (the
  /// others get an empty vector; they take part in the all-gathers, one chunk at a time: the transient memory is one
  /// chunk of fp32). Throws dist::CommError when a peer fails, IoError when a gemini block on disk cannot be read.
  virtual std::vector<std::pair<at::Tensor, at::Tensor>> gather() = 0;

  /// Every rank: replaces its EMA shards by the matching slices of `whole` (parameter tensor -> its whole EMA, of the
  /// parameter's shape, any float dtype and device; as gather() returns them). No communication. Throws IoError
  /// naming `where` and the parameter when a chunked parameter is missing or has another shape (the shards are then
  /// partly replaced: load again or restart).
  virtual void load(const std::vector<std::pair<at::Tensor, at::Tensor>>& whole, const std::string& where) = 0;

  /// With `on`, the parameter shards (the compute copies the units gather) hold the EMA weights, in their dtype, until
  /// use_ema_weights(false) puts the trained weights back exactly (a copy of the shards is kept meanwhile: zero3 on
  /// the compute device, gemini in host memory; the master weights and AdamW states are untouched). For export,
  /// validation and sampling at the end of a run; no step() in between. No communication. Throws zerodiff::Error
  /// while Strategy::gather_full_parameters() holds the model, for use_ema_weights(true) twice, or for
  /// use_ema_weights(false) without use_ema_weights(true) before.
  virtual void use_ema_weights(bool on) = 0;

 protected:
  ShardedEma() = default;
};

}  // namespace zerodiff::parallel
