// Internal: the zero3 and gemini strategies (see Zero3.cpp).
#pragma once

#include <memory>

#include "zerodiff/parallel/Strategy.h"

namespace zerodiff::parallel::detail {

/// zero3, or with `gemini` zero3 plus memory::GeminiManager's placement of shards and optimizer states.
std::unique_ptr<Strategy> make_zero3(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options, bool gemini);

}  // namespace zerodiff::parallel::detail
