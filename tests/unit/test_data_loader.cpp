// DataLoader and ShardedSampler: determinism (seed, workers), sharding across ranks, exact resume,
// collation, drop_last, unreadable images skipped and counted, the data config section.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <set>

#include "data_test_util.h"
#include "zerodiff/core/Config.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/data/DataConfig.h"
#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/ImageFolderDataset.h"
#include "zerodiff/data/ShardedSampler.h"
#include "zerodiff/data/SyntheticShapesDataset.h"

using namespace zerodiff::data;
using namespace zerodiff::data::testing_util;

namespace {

std::shared_ptr<const Dataset> shapes(int64_t n = 20) {
  return std::make_shared<SyntheticShapesDataset>(SyntheticShapesOptions{n, 24, 0});
}

DataLoaderOptions opts(int64_t batch, int workers, uint64_t seed = 0) {
  DataLoaderOptions o;
  o.batch_size = batch;
  o.num_workers = workers;
  o.seed = seed;
  o.image = {.resolution = 16, .center_crop = false, .random_flip = true};
  o.caption = {.dropout = 0.2};
  return o;
}

std::vector<Batch> epoch_of(DataLoader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].indices, b[i].indices) << "batch " << i;
    EXPECT_EQ(a[i].captions, b[i].captions) << "batch " << i;
    EXPECT_EQ(a[i].epoch, b[i].epoch);
    EXPECT_EQ(a[i].batch, b[i].batch);
    EXPECT_TRUE(at::equal(a[i].images, b[i].images)) << "batch " << i;
  }
}

}  // namespace

TEST(DataShardedSampler, RanksPartitionEachEpoch) {
  for (const int64_t n : {10, 11}) {
    std::multiset<int64_t> seen;
    for (int rank = 0; rank < 2; ++rank) {
      ShardedSampler s(n, {.seed = 1, .rank = rank, .world_size = 2});
      EXPECT_EQ(s.num_samples(), (n + 1) / 2);
      for (int64_t i : s.indices(3)) seen.insert(i);
    }
    for (int64_t i = 0; i < n; ++i) EXPECT_GE(seen.count(i), 1u) << i;
    EXPECT_EQ(static_cast<int64_t>(seen.size()), n + n % 2);  // 11: one sample read twice (padding)
    if (n == 10) {
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen.count(i), 1u);
    }
  }
  ShardedSampler dropped(11, {.seed = 1, .drop_last = true, .rank = 1, .world_size = 2});
  EXPECT_EQ(dropped.num_samples(), 5);
  // Shuffling changes with the epoch, not with repeated calls.
  ShardedSampler s(100, {.seed = 1});
  EXPECT_EQ(s.indices(0), s.indices(0));
  EXPECT_NE(s.indices(0), s.indices(1));
  ShardedSampler ordered(5, {.shuffle = false});
  EXPECT_EQ(ordered.indices(7), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  try {
    ShardedSampler(1, {.drop_last = true, .rank = 0, .world_size = 2});
    FAIL();
  } catch (const zerodiff::Error& e) {
    EXPECT_STREQ(e.what(), "the dataset has 1 samples, fewer than world_size 2: with drop_last no rank gets a sample");
  }
}

TEST(DataLoader, SameSeedSameBatchesWhateverTheWorkers) {
  DataLoader sync(shapes(), opts(4, 0, 7)), two(shapes(), opts(4, 2, 7)), three(shapes(), opts(4, 3, 7));
  for (int epoch = 0; epoch < 2; ++epoch) {
    const auto a = epoch_of(sync);
    ASSERT_EQ(a.size(), 5u);
    EXPECT_EQ(a[0].images.sizes(), (at::IntArrayRef{4, 3, 16, 16}));
    EXPECT_EQ(a[0].images.scalar_type(), at::kFloat);
    EXPECT_LE(a[0].images.abs().max().item<float>(), 1.0f);
    EXPECT_EQ(a[0].epoch, epoch);
    expect_same(a, epoch_of(two));
    expect_same(a, epoch_of(three));
  }
  // Another seed: another order.
  DataLoader other(shapes(), opts(4, 1, 8));
  DataLoader again(shapes(), opts(4, 1, 7));
  EXPECT_NE(other.next()->indices, again.next()->indices);
}

TEST(DataLoader, EpochsShuffleAndCoverTheDataset) {
  DataLoader loader(shapes(10), opts(3, 2));
  EXPECT_EQ(loader.batches_per_epoch(), 4);
  std::vector<int64_t> e0, e1;
  for (const auto& b : epoch_of(loader)) e0.insert(e0.end(), b.indices.begin(), b.indices.end());
  for (const auto& b : epoch_of(loader)) e1.insert(e1.end(), b.indices.begin(), b.indices.end());
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(e0[static_cast<size_t>(i)], i);
  EXPECT_EQ(e0, e1);
  // Last batch smaller; drop_last drops it.
  DataLoader last(shapes(10), opts(3, 0));
  auto batches = epoch_of(last);
  EXPECT_EQ(batches.back().size(), 1);
  EXPECT_EQ(batches.back().images.size(0), 1);
  DataLoaderOptions o = opts(3, 0);
  o.drop_last = true;
  DataLoader dropped(shapes(10), o);
  EXPECT_EQ(dropped.batches_per_epoch(), 3);
  for (const auto& b : epoch_of(dropped)) EXPECT_EQ(b.size(), 3);
}

TEST(DataLoader, TwoRanksSeeEverySampleOncePerEpoch) {
  for (int epoch_count = 0; epoch_count < 1; ++epoch_count) {
    std::map<int64_t, int> seen;
    for (int rank = 0; rank < 2; ++rank) {
      DataLoaderOptions o = opts(3, 2, 11);
      o.rank = rank;
      o.world_size = 2;
      DataLoader loader(shapes(20), o);
      EXPECT_EQ(loader.batches_per_epoch(), 4);  // 10 samples per rank: 3 + 3 + 3 + 1
      for (const auto& b : epoch_of(loader)) {
        for (int64_t i : b.indices) ++seen[i];
      }
    }
    ASSERT_EQ(seen.size(), 20u);
    for (const auto& [index, count] : seen) EXPECT_EQ(count, 1) << index;
  }
}

TEST(DataLoader, ResumesExactlyFromASavedPosition) {
  DataLoader original(shapes(), opts(3, 2, 5));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(original.next());
  const LoaderState saved = original.state();
  EXPECT_EQ(saved.epoch, 0);
  EXPECT_EQ(saved.batch, 4);
  // Through JSON, as a checkpoint stores it; into a loader with another worker count.
  const LoaderState restored_state = LoaderState::from_json(nlohmann::json::parse(saved.to_json().dump()));
  EXPECT_EQ(restored_state, saved);
  DataLoader restored(shapes(), opts(3, 3, 5));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(restored.next());  // prefetched work is discarded by load_state
  restored.load_state(restored_state);
  // The rest of epoch 0 and all of epoch 1 are identical.
  expect_same(epoch_of(original), epoch_of(restored));
  expect_same(epoch_of(original), epoch_of(restored));
  EXPECT_EQ(original.state(), restored.state());
  EXPECT_EQ(restored.state().epoch, 2);

  // A state from a different loader is refused.
  DataLoader other(shapes(), opts(4, 0, 5));
  try {
    other.load_state(saved);
    FAIL();
  } catch (const zerodiff::Error& e) {
    EXPECT_STREQ(e.what(),
                 "loader state does not match this loader: saved with seed 5, batch_size 3, world_size 1, "
                 "dataset_size 20; this loader has seed 5, batch_size 4, world_size 1, dataset_size 20");
  }
  LoaderState past = saved;
  past.batch = 99;
  EXPECT_THROW(restored.load_state(past), zerodiff::Error);
}

TEST(DataLoader, UnreadableImagesAreSkippedWarnedAndCounted) {
  const std::string root = fresh_dir("loader");
  std::string meta;
  for (int i = 0; i < 6; ++i) {
    const std::string name = "img" + std::to_string(i) + ".png";
    if (i == 2) {
      write_text(root + "/" + name, "garbage");
    } else {
      write_solid_png(root + "/" + name, 8, 8, static_cast<uint8_t>(i * 40), 0, 0);
    }
    meta += "{\"file_name\": \"" + name + "\", \"text\": \"image " + std::to_string(i) + "\"}\n";
  }
  write_text(root + "/metadata.jsonl", meta);
  auto dataset = std::make_shared<ImageFolderDataset>(ImageFolderOptions{root});
  DataLoaderOptions o;
  o.batch_size = 3;
  o.num_workers = 2;
  o.shuffle = false;
  o.image.resolution = 8;
  zerodiff::log::init({});
  zerodiff::log::Capture capture;
  DataLoader loader(dataset, o);
  auto batches = epoch_of(loader);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].size(), 3);  // the batch keeps its size
  EXPECT_EQ(batches[0].indices, (std::vector<int64_t>{0, 1, 3}));  // slot of 2 filled by the next readable one
  EXPECT_EQ(batches[0].captions, (std::vector<std::string>{"image 0", "image 1", "image 3"}));
  EXPECT_EQ(loader.num_skipped(), 1);
  EXPECT_EQ(loader.skipped_indices(), (std::vector<int64_t>{2}));
  const std::string log = capture.text();
  const std::string expected_warning = "[warning] skipping unreadable image " + root + "/img2.png: " + root +
                                       "/img2.png: cannot decode image (";
  EXPECT_NE(log.find(expected_warning), std::string::npos) << log;
  EXPECT_NE(log.find("[warning] end of epoch 0: 1 unreadable image skipped so far"), std::string::npos) << log;
  // Warned once, even when met again in the next epoch.
  epoch_of(loader);
  const std::string later = capture.text();
  EXPECT_EQ(later.find("skipping unreadable image", later.find("skipping unreadable image") + 1), std::string::npos);
  EXPECT_EQ(loader.num_skipped(), 1);
}

TEST(DataLoader, ConfigSectionBuildsDatasetAndOptions) {
  const auto cfg = zerodiff::config::load_string<DataConfig>(
      "dataset: synthetic\nsynthetic_size: 12\nresolution: 16\ncenter_crop: true\nbatch_size: 4\n"
      "num_workers: 0\ncaption_dropout: 0.5\nseed: 3\n",
      "data.yaml");
  auto dataset = make_dataset(cfg);
  EXPECT_EQ(dataset->size(), 12);
  const DataLoaderOptions o = make_loader_options(cfg, 1, 2);
  EXPECT_EQ(o.batch_size, 4);
  EXPECT_EQ(o.rank, 1);
  EXPECT_EQ(o.world_size, 2);
  EXPECT_DOUBLE_EQ(o.caption.dropout, 0.5);
  EXPECT_TRUE(o.image.center_crop);
  DataLoader loader(dataset, o);
  EXPECT_EQ(loader.next()->images.sizes(), (at::IntArrayRef{4, 3, 16, 16}));
  auto error_of = [](const std::string& yaml) {
    try {
      zerodiff::config::load_string<DataConfig>(yaml, "data.yaml");
    } catch (const zerodiff::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_EQ(error_of("dataset: imagefolder\n"), "data.yaml:1:1: key 'path' is required for dataset 'imagefolder'");
  EXPECT_EQ(error_of("dataset: parquet\n").rfind("data.yaml:1:10: key 'dataset' must be one of imagefolder, captions, "
                                                 "synthetic; got 'parquet'", 0),
            0u)
      << error_of("dataset: parquet\n");
  EXPECT_EQ(error_of("dataset: synthetic\ncaption_dropout: 2\n"),
            "data.yaml:2:18: key 'caption_dropout' must be in [0, 1], got 2");
}
