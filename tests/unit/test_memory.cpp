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
