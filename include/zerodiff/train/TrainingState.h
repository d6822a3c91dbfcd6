// zerodiff/train/TrainingState.h — everything a checkpoint holds of a fit, saved and restored by one symmetric pair
// so that the two cannot drift apart. Per part, the file it lives in and who writes it:
//
//   part                               file (checkpoint folder)           written by
//   model parameters and buffers       model.safetensors                  rank 0 (whole; zero3 gathers it)
//   optimizer (AdamW moments, master)  optimizer[.rank-R-of-N].safetensors rank 0, or every rank its shard
//   EMA of the trained weights         ema.safetensors                    rank 0 (the sharded EMA is gathered)
//   the run's and torch's generators   rng[.rank-R-of-N].safetensors      every rank (its own streams)
//   the module's extra state           module.safetensors                 rank 0 (when the module has any)
//   loss scaler (16-mixed)             scaler.safetensors                 rank 0
//   loader position, seed              trainer_state.json                 rank 0
//
// Exact resume: N + N steps equal 2N steps bitwise (the LR is a function of the step; nothing else is needed).
// Also here: the collective helpers fit uses around them (agreed, with_full_parameters).
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <functional>
#include <string>

#include "zerodiff/data/DataLoader.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Checkpoint.h"
#include "zerodiff/optim/GradScaler.h"
#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/train/EmaKeeper.h"
#include "zerodiff/train/TrainingModule.h"

namespace zerodiff::train {

/// Runs `fn` on every rank and agrees on the outcome: work that can fail on one rank only (a missing shard file, a
/// bad weights file on one node) stops every rank with an error instead of the others waiting until the timeout.
/// Rethrows this rank's exception; a rank whose `fn` succeeded throws Error "another rank failed while <what> (see
/// its error); stopping". Collective.
void agreed(dist::ProcessGroup& group, const char* what, const std::function<void()>& fn);

/// Runs `fn` with every parameter whole: directly when the strategy keeps them whole, else between
/// gather_full_parameters() and release_full_parameters(write_back) (zero3, gemini; collective then).
void with_full_parameters(parallel::Strategy& strategy, bool write_back, const std::function<void()>& fn);

/// The parts of a fit a checkpoint holds; references stay owned by Trainer::fit.
struct TrainingStateParts {
  TrainingModule& module;
  parallel::Strategy& strategy;
  dist::ProcessGroup& group;
  EmaKeeper* ema;             ///< null without an EMA
  at::Generator& generator;   ///< the run's generator (timesteps, noise)
  optim::GradScaler* scaler;  ///< null unless 16-mixed
  data::DataLoader& loader;
  int64_t seed;               ///< trainer.seed, recorded in trainer_state.json
};

/// A fit's checkpointed state over its parts (the file comment lists each part and its file).
class TrainingState {
 public:
  explicit TrainingState(TrainingStateParts parts) : p_(parts) {}

  /// Collective: writes the checkpoint of optimizer step `step` through `checkpoints` (atomic, the last K kept;
  /// io::CheckpointManager) and returns its folder. Throws IoError when a file cannot be written (on every rank:
  /// the ranks agree), leaving the previous checkpoints intact.
  std::string save(io::CheckpointManager& checkpoints, int64_t step);

  /// Collective: restores every part save() wrote from `checkpoint` (each rank its own files), as save() wrote them.
  /// Throws IoError naming the checkpoint folder and the file or entry that is missing or does not fit (on every
  /// rank: the ranks agree). Returns the checkpoint's step.
  int64_t restore(const io::Checkpoint& checkpoint);

 private:
  TrainingStateParts p_;
};

}  // namespace zerodiff::train
