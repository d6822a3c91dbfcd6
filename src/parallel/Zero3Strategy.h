// Internal: the zero3 strategy's factory (Zero3Strategy.cpp); its public type is parallel::ChunkedStrategy.
#pragma once

#include <memory>

#include "zerodiff/parallel/ChunkedStrategy.h"

namespace zerodiff::parallel::detail {

/// zero3 (kind zero3: the in-memory shard optimizer) or gemini (kind gemini: the tiered one, memory::GeminiManager
/// placing shards and optimizer blocks under options.placement). Throws zerodiff::Error for any other kind.
std::unique_ptr<ChunkedStrategy> make_zero3(std::shared_ptr<dist::ProcessGroup> group, StrategyOptions options,
                                            StrategyKind kind);

}  // namespace zerodiff::parallel::detail
