// Internal: the zero3 strategy (see Zero3.cpp).
#pragma once

#include <memory>

#include "zerodiff/parallel/Strategy.h"

namespace zerodiff::parallel::detail {

std::unique_ptr<Strategy> make_zero3(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options);

}  // namespace zerodiff::parallel::detail
