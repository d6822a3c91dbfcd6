// Gemini's placement policies (see PlacementPolicy.h).
#include "PlacementPolicy.h"

#include <cmath>

#include "zerodiff/core/Enum.h"
#include "zerodiff/core/Error.h"

namespace zerodiff::memory::detail {

std::unique_ptr<PlacementPolicy> PlacementPolicy::create(const PlacementOptions& options) {
  switch (options.policy) {
    case PlacementPolicyKind::automatic: return std::make_unique<AutoPlacement>();
    case PlacementPolicyKind::fixed_fractions:
      return std::make_unique<StaticPlacement>(options.offload_optim_frac, options.offload_param_frac);
  }
  throw ConfigError(zerodiff::str("PlacementOptions::policy: ", static_cast<int>(options.policy),
                                  " is not a placement policy (", enum_list<PlacementPolicyKind>(), ")"));
}

// ------------------------------------------------------------------ auto

Tier AutoPlacement::initial_optim_tier(size_t c, size_t n, Tier host_tier) const {
  (void)c;
  (void)n;
  return host_tier;  // (moved after the warm-up, once the step's working set is known)
}

bool AutoPlacement::initial_shard_on_host(size_t c, size_t n) const {
  (void)c;
  (void)n;
  return false;  // (evicted by next use where the budget needs it)
}

std::string AutoPlacement::setup_placement() const { return "the parameter shards"; }

std::vector<size_t> AutoPlacement::blocks_to_device(int64_t capacity, const std::vector<int64_t>& block_bytes,
                                                    const std::vector<Tier>& optim_tiers) const {
  std::vector<size_t> moved;
  for (size_t c = 0; c < block_bytes.size(); ++c) {
    if (optim_tiers[c] != Tier::device && block_bytes[c] <= capacity) {
      capacity -= block_bytes[c];
      moved.push_back(c);
    }
  }
  return moved;
}

// ------------------------------------------------------------------ static

size_t StaticPlacement::first_offloaded(double frac, size_t n) {
  return n - static_cast<size_t>(std::ceil(frac * static_cast<double>(n)));
}

Tier StaticPlacement::initial_optim_tier(size_t c, size_t n, Tier host_tier) const {
  return c >= first_offloaded(offload_optim_frac_, n) ? host_tier : Tier::device;
}

bool StaticPlacement::initial_shard_on_host(size_t c, size_t n) const {
  return c >= first_offloaded(offload_param_frac_, n);
}

std::string StaticPlacement::setup_placement() const {
  return "the static placement (offload_optim_frac " + std::to_string(offload_optim_frac_) + ", offload_param_frac " +
         std::to_string(offload_param_frac_) + ")";
}

std::vector<size_t> StaticPlacement::blocks_to_device(int64_t capacity, const std::vector<int64_t>& block_bytes,
                                                      const std::vector<Tier>& optim_tiers) const {
  (void)capacity;
  (void)block_bytes;
  (void)optim_tiers;
  return {};  // the fractions hold for the whole run
}

}  // namespace zerodiff::memory::detail
