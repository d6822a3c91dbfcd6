// Internal (memory layer): Gemini's placement policies, one type each (AutoPlacement, StaticPlacement), behind the
// PlacementPolicy interface. GeminiManager makes one from PlacementOptions::policy in its constructor and asks it at
// the three points where the policies differ:
//  * setup — the tier of each chunk's optimizer block and parameter shard, and what happens when that initial
//    placement does not fit the budget (auto evicts shards; static fails: its fractions were asked for);
//  * the end of the warm-up step — which optimizer blocks move to the device (auto: as many as fit, in chunk order;
//    static: none);
//  * after a gather — whether a host shard stays on the device (auto: when it fits; static: never).
// The budget, the accounting, the schedule and the eviction rule (next use furthest away) are GeminiManager's own and
// the same under both policies. (Design: include/zerodiff/memory/GeminiManager.h.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "zerodiff/memory/GeminiManager.h"

namespace zerodiff::memory::detail {

/// Where gemini keeps each chunk's shard and optimizer block (AutoPlacement, StaticPlacement below).
class PlacementPolicy {
 public:
  /// The policy `options.policy` names, keeping the offload fractions it needs. Throws ConfigError naming
  /// PlacementOptions::policy for a value outside PlacementPolicyKind (a bad cast).
  static std::unique_ptr<PlacementPolicy> create(const PlacementOptions& options);
  virtual ~PlacementPolicy() = default;

  virtual PlacementPolicyKind kind() const = 0;
  /// Setup: the tier of chunk `c`'s optimizer block, out of `n` chunks; `host_tier` is where "not on the device" is
  /// (Tier::disk with PlacementOptions::disk, else Tier::host).
  virtual Tier initial_optim_tier(size_t c, size_t n, Tier host_tier) const = 0;
  /// Setup: whether chunk `c`'s parameter shard starts in host memory, out of `n` chunks.
  virtual bool initial_shard_on_host(size_t c, size_t n) const = 0;
  /// Setup, when the initial placement exceeds the budget: true = evict device shards until it fits (the same
  /// reserve() as any moment); false = a BudgetError naming setup_placement().
  virtual bool evicts_to_fit_setup() const = 0;
  /// What the initial placement is, for that BudgetError: "the static placement (offload_optim_frac ..., ...)".
  virtual std::string setup_placement() const = 0;
  /// End of the warm-up step: the chunks whose optimizer blocks move to the device, ascending, given `capacity` bytes
  /// free beside the step's peak working set, each chunk's block bytes and its optimizer tier now.
  virtual std::vector<size_t> blocks_to_device(int64_t capacity, const std::vector<int64_t>& block_bytes,
                                               const std::vector<Tier>& optim_tiers) const = 0;
  /// After a gather: whether a host shard moves to the device (when it fits without evicting anything).
  virtual bool adopts_gathered_shards() const = 0;
};

/// auto: optimizer blocks start at `host_tier` and move to the device after the warm-up while they fit, in chunk
/// order; shards start on the device (evicted to fit) and come back to it after a gather when they fit.
class AutoPlacement final : public PlacementPolicy {
 public:
  PlacementPolicyKind kind() const override { return PlacementPolicyKind::automatic; }
  Tier initial_optim_tier(size_t c, size_t n, Tier host_tier) const override;
  bool initial_shard_on_host(size_t c, size_t n) const override;
  bool evicts_to_fit_setup() const override { return true; }
  std::string setup_placement() const override;
  std::vector<size_t> blocks_to_device(int64_t capacity, const std::vector<int64_t>& block_bytes,
                                       const std::vector<Tier>& optim_tiers) const override;
  bool adopts_gathered_shards() const override { return true; }
};

/// static: the optimizer blocks of the last ceil(offload_optim_frac·n) chunks and the shards of the last
/// ceil(offload_param_frac·n) chunks on the host, the rest on the device, for the whole run (evicted shards stay on
/// the host). The fractions are in [0, 1] (checked by GeminiManager).
class StaticPlacement final : public PlacementPolicy {
 public:
  StaticPlacement(double offload_optim_frac, double offload_param_frac)
      : offload_optim_frac_(offload_optim_frac), offload_param_frac_(offload_param_frac) {}
  PlacementPolicyKind kind() const override { return PlacementPolicyKind::fixed_fractions; }
  Tier initial_optim_tier(size_t c, size_t n, Tier host_tier) const override;
  bool initial_shard_on_host(size_t c, size_t n) const override;
  bool evicts_to_fit_setup() const override { return false; }
  std::string setup_placement() const override;
  std::vector<size_t> blocks_to_device(int64_t capacity, const std::vector<int64_t>& block_bytes,
                                       const std::vector<Tier>& optim_tiers) const override;
  bool adopts_gathered_shards() const override { return false; }

 private:
  // The first chunk index of the last ceil(frac·n) chunks.
  static size_t first_offloaded(double frac, size_t n);
  double offload_optim_frac_, offload_param_frac_;
};

}  // namespace zerodiff::memory::detail
