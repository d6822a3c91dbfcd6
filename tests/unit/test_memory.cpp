// memory layer: chunk-size search, tensor-state transitions, and a chunk's gather/release cycle (one process).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "zerodiff/core/Error.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/memory/Chunk.h"
#include "zerodiff/memory/ChunkManager.h"
#include "zerodiff/memory/TensorState.h"

namespace zm = zerodiff::memory;

TEST(ChunkSearch, FindsTheLeastPaddingAndMatchesBruteForce) {
  const std::vector<int64_t> numels{700, 300, 1000, 250, 750, 500, 500};  // Σ = 4000
  EXPECT_EQ(zm::packing_padding(numels, 1000), 0);  // 700+300 | 1000 | 250+750 | 500+500
  EXPECT_EQ(zm::packing_padding(numels, 1200), 4 * 200);   // the same four chunks, 200 short each
  // Brute force over the same candidates.
  int64_t best = -1, best_padding = -1;
  for (int64_t size = 1000; size <= 1000 + 3000; size += 100) {
    const int64_t p = zm::packing_padding(numels, size);
    if (best < 0 || p < best_padding) {
      best = size;
      best_padding = p;
    }
  }
  EXPECT_EQ(zm::search_chunk_numel(numels, 1, 3000, 100), best);
  EXPECT_EQ(best, 1000);
  // Sizes are multiples of the world size, at least the largest parameter.
  EXPECT_EQ(zm::search_chunk_numel({1001, 5}, 4, 0, 1), 1004);
  EXPECT_THROW(zm::search_chunk_numel({}, 1, 10, 1), zerodiff::Error);
}

TEST(TensorStates, OnlyTheLifeCycleTransitionsAreLegal) {
  using S = zm::TensorState;
  EXPECT_TRUE(zm::legal_transition(S::FREE, S::HOLD));
  EXPECT_TRUE(zm::legal_transition(S::HOLD, S::COMPUTE));
  EXPECT_TRUE(zm::legal_transition(S::COMPUTE, S::HOLD_AFTER_BWD));
  EXPECT_TRUE(zm::legal_transition(S::HOLD_AFTER_BWD, S::READY_FOR_REDUCE));
  EXPECT_TRUE(zm::legal_transition(S::READY_FOR_REDUCE, S::HOLD));
  EXPECT_TRUE(zm::legal_transition(S::HOLD, S::FREE));
  EXPECT_FALSE(zm::legal_transition(S::FREE, S::COMPUTE));  // compute on released data
  EXPECT_FALSE(zm::legal_transition(S::COMPUTE, S::FREE));  // release while a unit runs
  EXPECT_FALSE(zm::legal_transition(S::READY_FOR_REDUCE, S::FREE));
  EXPECT_FALSE(zm::legal_transition(S::FREE, S::READY_FOR_REDUCE));
}

TEST(Chunk, ParametersAreViewsThatSurviveReleaseAndGather) {
  auto group = zerodiff::dist::ProcessGroup::single();
  torch::manual_seed(0);
  auto a = torch::randn({3, 4}).requires_grad_(true);
  auto b = torch::randn({5}).requires_grad_(true);
  const auto a0 = a.detach().clone(), b0 = b.detach().clone();
  zm::ChunkManager manager(*group, {zm::UnitParams{"u0", {{"a", a}}}, zm::UnitParams{"u1", {{"b", b}}}}, 16);
  ASSERT_EQ(manager.num_chunks(), 2u);  // 12 + 5 > 16: b starts a second chunk
  EXPECT_EQ(manager.padding(), 4 + 11);
  EXPECT_EQ(manager.resident_bytes(), manager.shard_bytes());  // released after close()
  EXPECT_EQ(manager.chunk(0).tensors()[0].state, zm::TensorState::FREE);
  const auto version = a._version();
  manager.gather_all();
  EXPECT_TRUE(torch::equal(a.detach(), a0));
  EXPECT_TRUE(torch::equal(b.detach(), b0));
  EXPECT_EQ(manager.resident_bytes(), manager.shard_bytes() + 2 * 16 * 4);
  // An autograd graph saved while gathered sees the data again after release + gather.
  auto loss = (a * a).sum();
  manager.release_all();
  EXPECT_EQ(manager.resident_bytes(), manager.shard_bytes());
  manager.gather_all();
  loss.backward();
  EXPECT_TRUE(torch::allclose(a.grad(), 2 * a0));
  EXPECT_EQ(a._version(), version);  // gathers write through the chunk, not the parameter
  EXPECT_THROW(manager.chunk(0).set_state(0, zm::TensorState::READY_FOR_REDUCE), zerodiff::Error);
  // A parameter larger than the chunk size gets a chunk of its own; the next ones pack as usual.
  auto big = torch::randn({40}).requires_grad_(true), small = torch::randn({3}).requires_grad_(true);
  zm::ChunkManager mixed(*group, {zm::UnitParams{"u", {{"big", big}, {"small", small}}}}, 16);
  ASSERT_EQ(mixed.num_chunks(), 2u);
  EXPECT_EQ(mixed.chunk(0).chunk_numel(), 40);
  EXPECT_EQ(mixed.chunk(1).chunk_numel(), 16);
}

// ------------------------------------------------------------------ Gemini: memory tracer and placement

#include "zerodiff/core/Enum.h"
#include "zerodiff/memory/GeminiManager.h"
#include "zerodiff/memory/MemoryTracer.h"

namespace {

// Four units of one 1,000-element fp32 parameter each: four chunks of 4,000 B (one rank: shard = chunk).
struct FourUnits {
  std::shared_ptr<zerodiff::dist::ProcessGroup> group = zerodiff::dist::ProcessGroup::single();
  std::vector<at::Tensor> params;
  std::unique_ptr<zm::ChunkManager> manager;
  explicit FourUnits(int64_t numel = 1000) {
    std::vector<zm::UnitParams> units;
    for (int u = 0; u < 4; ++u) {
      params.push_back(torch::full({numel}, static_cast<float>(u + 1)));
      // (append, not literal + std::string: GCC 12 -O3 warns falsely on the latter, -Wstringop-overflow)
      units.push_back(zm::UnitParams{std::string("u").append(std::to_string(u)),
                                     {{std::string("p").append(std::to_string(u)), params.back()}}});
    }
    manager = std::make_unique<zm::ChunkManager>(*group, units, numel);
  }
  // The unit's chunk gathered as zero3's pre_forward does it under gemini.
  void run(zm::GeminiManager& g, size_t unit, zm::Phase phase, size_t position) {
    g.on_event(unit, phase, position);
    g.prepare_gather(manager->unit_chunks(unit), manager->unit_name(unit));
    for (size_t c : manager->unit_chunks(unit)) {
      manager->chunk(c).gather(*group);
      manager->chunk(c).wait();
      g.after_gather(c);
    }
    for (size_t c : manager->unit_chunks(unit)) manager->chunk(c).release();
  }
};

constexpr int64_t kChunkBytes = 4000;

}  // namespace

TEST(MemoryTracer, MeasuresTheNonModelPeakOfEachMomentOnTheCpu) {
  zm::MemoryTracer tracer(torch::kCPU, [] { return int64_t{0}; });
  tracer.start();
  tracer.sample("forward a");
  {
    at::Tensor act = torch::empty({1 << 20});  // 4 MiB of activations during "forward a"
    act.fill_(1);
  }
  tracer.sample("forward b");
  at::Tensor kept = torch::empty({1 << 18});  // 1 MiB during "forward b", still alive at its end
  at::Tensor model_data;
  {
    const zm::ModelDataScope scope;  // 4 MiB of model data (a gathered chunk): not counted
    model_data = torch::empty({1 << 20});
  }
  EXPECT_EQ(tracer.non_model_now(), int64_t{1} << 20);
  tracer.sample("backward b");
  model_data.reset();  // its free is not counted either
  at::Tensor more = torch::empty({1 << 17});  // + 0.5 MiB
  tracer.stop();
  EXPECT_EQ(tracer.non_model_peak("forward a"), int64_t{4} << 20);
  EXPECT_EQ(tracer.non_model_peak("forward b"), int64_t{1} << 20);
  EXPECT_EQ(tracer.non_model_peak("backward b"), (int64_t{3} << 19));  // 1 MiB still alive + 0.5 MiB
  EXPECT_EQ(tracer.non_model_peak("never sampled"), tracer.max_non_model_peak());
  EXPECT_EQ(tracer.max_non_model_peak(), int64_t{4} << 20);
  ASSERT_EQ(tracer.moments().size(), 3u);
  EXPECT_EQ(tracer.moments()[0].first, "forward a");
  EXPECT_EQ(tracer.non_model_now(), 0);  // not tracing any more
}

TEST(GeminiManager, StaticPolicyPlacesTheLastFractionsOnTheHost) {
  FourUnits f;
  zm::PlacementOptions o;
  o.policy = zm::PlacementPolicyKind::fixed_fractions;
  o.device_budget_bytes = 1 << 20;
  o.offload_optim_frac = 0.5;
  o.offload_param_frac = 0.25;
  zm::GeminiManager g(*f.manager, torch::kCPU, o, 16);
  for (size_t c = 0; c < 4; ++c) {
    EXPECT_EQ(g.optim_tier(c), c >= 2 ? zm::Tier::host : zm::Tier::device) << c;
    EXPECT_EQ(g.shard_tier(c), c >= 3 ? zm::Tier::host : zm::Tier::device) << c;
  }
  // Device: three shards + two optimizer blocks of 1,000 × 16 B.
  EXPECT_EQ(g.device_model_bytes(), 3 * kChunkBytes + 2 * 16000);
  EXPECT_EQ(g.host_model_bytes(), kChunkBytes + 2 * 16000);
  // The host shard still holds the values (a real copy) and the parameter reads them after a gather.
  f.manager->chunk(3).gather(*f.group);
  f.manager->chunk(3).wait();
  EXPECT_TRUE(torch::equal(f.params[3], torch::full({1000}, 4.0f)));
  f.manager->chunk(3).release();
  o.disk = true;
  zm::GeminiManager d(*f.manager, torch::kCPU, o, 16);
  EXPECT_EQ(d.optim_tier(3), zm::Tier::disk);
}

TEST(GeminiManager, AutoPolicyEvictsTheShardUsedFurthestInTheFuture) {
  FourUnits f(100000);  // chunks of 400,000 B
  const int64_t chunk = 400000;
  zm::PlacementOptions o;
  o.policy = zm::PlacementPolicyKind::automatic;
  o.device_budget_bytes = 3 * chunk + chunk / 2;  // three and a half chunks
  zm::GeminiManager g(*f.manager, torch::kCPU, o, 16);
  // Four shards do not fit: before the warm-up (order unknown) the lowest chunk index goes first.
  EXPECT_EQ(g.shard_tier(0), zm::Tier::host);
  EXPECT_EQ(g.evictions(), 1);
  EXPECT_EQ(g.device_model_bytes(), 3 * chunk);
  // The schedule: forward 0 1 2 3, backward 3 2 1 0 (no non-model memory recorded). No optimizer block
  // (1.6 MB each) fits beside the working set of two chunks.
  g.begin_warmup();
  EXPECT_TRUE(g.end_warmup({0, 1, 2, 3}).empty());
  // Forward of unit 0 needs a chunk of room. Resident shards 1, 2, 3 are next used 1, 2 and 3 events later:
  // Belady evicts 3 (the warm-up rule would have taken 1).
  f.run(g, 0, zm::Phase::forward, 0);
  EXPECT_EQ(g.evictions(), 2);
  EXPECT_EQ(g.shard_tier(3), zm::Tier::host);
  EXPECT_EQ(g.shard_tier(1), zm::Tier::device);
  EXPECT_EQ(g.shard_tier(2), zm::Tier::device);
  EXPECT_EQ(g.shard_tier(0), zm::Tier::host);  // no room to keep it after the gather
  for (size_t u = 1; u < 4; ++u) f.run(g, u, zm::Phase::forward, u);
  for (size_t u = 4; u-- > 0;) f.run(g, u, zm::Phase::backward, u);
  EXPECT_EQ(g.evictions(), 2);  // the rest of the step fits around shards 1 and 2
  EXPECT_EQ(g.peak_device_model_bytes(), 3 * chunk);
  EXPECT_LE(g.peak_device_total_estimate(), o.device_budget_bytes);
  // Shards that went to the host and back still hold their values.
  for (size_t u = 0; u < 4; ++u) {
    f.manager->chunk(u).gather(*f.group);
    f.manager->chunk(u).wait();
    EXPECT_TRUE(torch::equal(f.params[u], torch::full({100000}, static_cast<float>(u + 1)))) << u;
    f.manager->chunk(u).release();
  }
}

TEST(GeminiManager, ABudgetBelowOneUnitFailsWithTheNumbers) {
  FourUnits f;
  zm::PlacementOptions o;
  o.device_budget_bytes = kChunkBytes - 1;  // not even one gathered chunk fits
  zm::GeminiManager g(*f.manager, torch::kCPU, o, 16);
  try {
    f.run(g, 0, zm::Phase::forward, 0);
    FAIL() << "no BudgetError";
  } catch (const zm::BudgetError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("budget of 0 MiB cannot hold the chunks of unit 'u0'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("PlacementOptions::device_budget_bytes"), std::string::npos) << msg;  // its own option
  }
  // An unknown policy name cannot reach the manager any more (PlacementOptions::policy is a PlacementPolicyKind): it
  // is rejected where the name is parsed.
  EXPECT_THROW(zerodiff::parse_enum<zm::PlacementPolicyKind>("lru", "placement policy"), zerodiff::ConfigError);
  zm::PlacementOptions bad;
  bad.policy = zm::PlacementPolicyKind::fixed_fractions;
  bad.device_budget_bytes = 1 << 20;
  bad.offload_optim_frac = 1.5;
  EXPECT_THROW(zm::GeminiManager(*f.manager, torch::kCPU, bad), zerodiff::ConfigError);
  try {  // the memory layer names its own option (a config reader adds the key path)
    zm::GeminiManager never(*f.manager, torch::kCPU, bad);
    FAIL() << "no ConfigError";
  } catch (const zerodiff::ConfigError& e) {
    EXPECT_STREQ(e.what(), "PlacementOptions::offload_optim_frac must be in [0, 1], got 1.5");
  }
}
