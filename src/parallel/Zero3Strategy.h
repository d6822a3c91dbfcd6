// Internal: the zero3 strategy's factory (Zero3Strategy.cpp).
#pragma once

#include <memory>

#include "zerodiff/parallel/Strategy.h"

namespace zerodiff::parallel::detail {

/// zero3 (kind zero3: the in-memory shard optimizer) or gemini (kind gemini: the tiered one, memory::GeminiManager
/// placing shards and optimizer blocks under options.placement). Throws zerodiff::Error for any other kind.
std::unique_ptr<Strategy> make_zero3(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options,
                                     StrategyKind kind);

}  // namespace zerodiff::parallel::detail
