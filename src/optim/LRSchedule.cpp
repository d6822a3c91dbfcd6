#include "zerodiff/optim/LRSchedule.h"

#include <algorithm>
#include <cmath>

#include "zerodiff/core/Error.h"

namespace zerodiff::optim {

LRScheduleType parse_lr_schedule(const std::string& name) {
  return parse_enum<LRScheduleType>(name, "lr schedule");
}

double LRSchedule::lr_at(int64_t step) const {
  double m = 1.0;
  if (step < warmup_steps) {
    m = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  } else if (type == LRScheduleType::linear) {
    m = std::max(0.0, static_cast<double>(total_steps - step) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)));
  } else if (type == LRScheduleType::cosine) {
    const double progress = static_cast<double>(step - warmup_steps) /
                            static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
    m = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 2.0 * 0.5 * progress)));
  }
  if (step >= warmup_steps && type != LRScheduleType::constant) m = min_lr_ratio + (1.0 - min_lr_ratio) * m;
  return base_lr * m;
}

}  // namespace zerodiff::optim
