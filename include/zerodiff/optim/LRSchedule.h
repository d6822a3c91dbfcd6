// zerodiff/optim/LRSchedule.h — learning-rate schedules with linear warmup, as a pure function of the
// optimizer step (so resuming needs no scheduler state beyond the step). Formulas follow transformers'
// get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and get_cosine_schedule_with_warmup
// (num_cycles 0.5), which diffusers' training scripts use through diffusers.optimization.get_scheduler.
#pragma once

#include <cstdint>
#include <string>

#include "zerodiff/core/Enum.h"

namespace zerodiff::optim {

enum class LRScheduleType { constant, linear, cosine };
/// LRScheduleType's name table (core/Enum.h): trainer.lr_schedule.type.
inline constexpr EnumName<LRScheduleType> kLRScheduleNames[] = {
    {LRScheduleType::constant, "constant"}, {LRScheduleType::linear, "linear"}, {LRScheduleType::cosine, "cosine"}};
constexpr std::span<const EnumName<LRScheduleType>> enum_names(LRScheduleType) { return kLRScheduleNames; }

/// Parses "constant", "linear", "cosine" (ConfigError otherwise, naming the value).
LRScheduleType parse_lr_schedule(const std::string& name);

struct LRSchedule {
  LRScheduleType type = LRScheduleType::constant;
  double base_lr = 1e-4;      ///< peak learning rate
  int64_t warmup_steps = 0;   ///< linear ramp 0 -> base_lr over these steps
  int64_t total_steps = 1;    ///< linear / cosine decay reach 0 (times min_lr_ratio floor) here
  double min_lr_ratio = 0.0;  ///< floor of the decay as a fraction of base_lr (0 = the reference behaviour)

  /// Learning rate for optimizer step `step` (0-based: the lr used by the step-th update).
  /// Multiplier m(step): warmup step / max(1, warmup); then constant 1, linear
  /// max(0, (total - step) / max(1, total - warmup)), or cosine max(0, 0.5 (1 + cos(pi * progress))).
  double lr_at(int64_t step) const;
};

}  // namespace zerodiff::optim
