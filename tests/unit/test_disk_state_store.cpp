// memory layer: DiskStateStore — optimizer states in scratch files with read-ahead and write-behind (ZeRO-Infinity's
// optimizer swapper). Every test checks values read back against values kept in memory.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "zerodiff/core/Error.h"
#include "zerodiff/memory/DiskStateStore.h"

namespace fs = std::filesystem;
namespace zm = zerodiff::memory;

namespace {

/// A fresh, empty folder under GoogleTest's TempDir.
fs::path fresh_store_dir(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / "zd_disk_state_store" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<at::Tensor> clone_all(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.clone());
  return out;
}

/// Asserts that `got` has the shapes and exact values of `want`.
void expect_equal(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].sizes(), want[i].sizes()) << what << ", tensor " << i;
    EXPECT_EQ(got[i].scalar_type(), at::kFloat) << what << ", tensor " << i;
    EXPECT_TRUE(torch::equal(got[i], want[i])) << what << ", tensor " << i;
  }
}

/// The floats stored in `path`.
std::vector<float> file_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

std::vector<float> concat_values(const std::vector<at::Tensor>& ts) {
  std::vector<float> out;
  for (const auto& t : ts) {
    const auto c = t.contiguous();
    out.insert(out.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  return out;
}

int64_t bytes_of(const std::vector<at::Tensor>& ts) {
  int64_t n = 0;
  for (const auto& t : ts) n += t.numel() * 4;
  return n;
}

template <class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const zerodiff::Error& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

}  // namespace

TEST(DiskStateStore, RoundTripsThreeTensorsOfDifferentSizes) {
  const fs::path dir = fresh_store_dir("round_trip");
  zm::DiskStateStore store(dir.string(), 3);
  EXPECT_EQ(store.directory(), (dir / "rank-3").string());
  torch::manual_seed(0);
  const std::vector<at::Tensor> block{torch::randn({7}), torch::randn({3, 5}), torch::randn({10, 10, 10})};
  store.add(42, block);
  EXPECT_EQ(store.num_blocks(), 1u);
  EXPECT_EQ(store.block_bytes(42), (7 + 15 + 1000) * 4);
  const std::string file = store.directory() + "/chunk-42.bin";
  ASSERT_TRUE(fs::exists(file));
  EXPECT_EQ(static_cast<int64_t>(fs::file_size(file)), (7 + 15 + 1000) * 4);
  EXPECT_EQ(file_floats(file), concat_values(block));  // back to back, in order
  const auto got = store.fetch(42);
  expect_equal(got, block, "fetched block 42");
  // The fetched tensors are fresh buffers, not the ones given to add().
  EXPECT_NE(got[0].data_ptr(), block[0].data_ptr());
  // A second fetch of a resident block returns the same tensors without reading.
  const auto again = store.fetch(42);
  EXPECT_EQ(again[2].data_ptr(), got[2].data_ptr());
  EXPECT_EQ(store.bytes_read(), store.block_bytes(42));
}

TEST(DiskStateStore, FetchSeesAWriteBackStillInFlight) {
  const fs::path dir = fresh_store_dir("in_flight");
  zm::DiskStateStore store(dir.string(), 0);
  // 8 MB blocks: the write takes long enough that the fetch right after it is queued behind it.
  const int64_t n = 2 * 1024 * 1024;
  std::vector<at::Tensor> reference{torch::arange(n, torch::kFloat), torch::full({1000}, 3.0f)};
  store.add(0, reference);
  for (int round = 1; round <= 4; ++round) {
    auto ts = store.fetch(0);
    expect_equal(ts, reference, "before round " + std::to_string(round));
    ts[0].mul_(-0.5f).add_(round);
    ts[1].add_(round);
    reference = clone_all(ts);
    store.write_back(0, std::move(ts));
    // Immediately: the write of 8 MB is (very likely) still running; the read must come after it.
    const auto got = store.fetch(0);
    expect_equal(got, reference, "fetch right after write_back, round " + std::to_string(round));
    store.write_back(0, got);
  }
  store.flush();
  EXPECT_EQ(file_floats(store.directory() + "/chunk-0.bin"), concat_values(reference));
}

TEST(DiskStateStore, PrefetchThenFetchReadsOnce) {
  const fs::path dir = fresh_store_dir("prefetch");
  zm::DiskStateStore store(dir.string(), 0);
  const std::vector<at::Tensor> a{torch::linspace(0, 1, 300)}, b{torch::linspace(5, 6, 500), torch::ones({2, 2})};
  store.add(10, a);
  store.add(11, b);
  store.prefetch(11);
  store.prefetch(11);  // no-op: in flight or ready
  store.flush();       // the read is done and stays ready
  EXPECT_EQ(store.bytes_read(), bytes_of(b));
  EXPECT_EQ(store.resident_bytes(), bytes_of(b));
  expect_equal(store.fetch(11), b, "prefetched block 11");
  EXPECT_EQ(store.bytes_read(), bytes_of(b));  // fetch took the prefetched read
  store.prefetch(11);  // resident: no-op
  store.prefetch(10);
  expect_equal(store.fetch(10), a, "prefetched block 10");
  store.flush();
  EXPECT_EQ(store.bytes_read(), bytes_of(a) + bytes_of(b));
}

TEST(DiskStateStore, WriteBackDiscardsAStalePrefetch) {
  const fs::path dir = fresh_store_dir("stale_prefetch");
  zm::DiskStateStore store(dir.string(), 0);
  store.add(1, {torch::zeros({4096})});
  // A prefetch that finished, then a write_back without a fetch: the prefetched (old) data is dropped.
  store.prefetch(1);
  store.flush();
  store.write_back(1, {torch::full({4096}, 2.0f)});
  expect_equal(store.fetch(1), {torch::full({4096}, 2.0f)}, "after a write_back over a finished prefetch");
  store.write_back(1, {torch::full({4096}, 3.0f)});
  // A prefetch queued behind the write, then another write_back before any fetch.
  store.prefetch(1);
  store.write_back(1, {torch::full({4096}, 4.0f)});
  expect_equal(store.fetch(1), {torch::full({4096}, 4.0f)}, "after a write_back over a queued prefetch");
  store.write_back(1, store.fetch(1));
  store.flush();
  EXPECT_EQ(store.resident_bytes(), 0);
}

TEST(DiskStateStore, StepsOverManyBlocksMatchAnInMemoryReference) {
  const fs::path dir = fresh_store_dir("steps");
  zm::DiskStateStore store(dir.string(), 1);
  torch::manual_seed(1);
  const size_t num_blocks = 7;
  std::map<size_t, std::vector<at::Tensor>> reference;
  int64_t total = 0;
  for (size_t c = 0; c < num_blocks; ++c) {
    std::vector<at::Tensor> block;
    for (size_t k = 0; k <= c % 3; ++k) block.push_back(torch::randn({static_cast<int64_t>(1000 + 3719 * c + 17 * k)}));
    const size_t id = 100 + c * 7;  // ids need not be dense
    store.add(id, block);
    total += bytes_of(block);
    reference[id] = clone_all(block);
  }
  int64_t largest = 0;
  for (const auto& [id, ts] : reference) largest = std::max(largest, bytes_of(ts));
  const int steps = 4;
  for (int step = 0; step < steps; ++step) {
    std::vector<size_t> ids;
    for (const auto& kv : reference) ids.push_back(kv.first);
    for (size_t i = 0; i < ids.size(); ++i) {
      auto ts = store.fetch(ids[i]);
      if (i + 1 < ids.size()) store.prefetch(ids[i + 1]);
      expect_equal(ts, reference[ids[i]], "step " + std::to_string(step) + " block " + std::to_string(ids[i]));
      for (size_t k = 0; k < ts.size(); ++k) {  // an "Adam step": any in-place update
        ts[k].mul_(0.9f).add_(static_cast<float>(step + k));
        reference[ids[i]][k].mul_(0.9f).add_(static_cast<float>(step + k));
      }
      store.write_back(ids[i], std::move(ts));
    }
    store.flush();
    EXPECT_EQ(store.resident_bytes(), 0) << "after step " << step;
  }
  for (const auto& [id, ts] : reference) {
    expect_equal(store.fetch(id), ts, "after all steps, block " + std::to_string(id));
    EXPECT_EQ(file_floats(store.directory() + "/chunk-" + std::to_string(id) + ".bin"), concat_values(ts));
  }
  EXPECT_EQ(store.bytes_read(), (steps + 1) * total);
  EXPECT_EQ(store.bytes_written(), (steps + 1) * total);  // add + one write_back per step
  EXPECT_GE(store.peak_resident_bytes(), largest);
  EXPECT_LE(store.peak_resident_bytes(), 2 * total);
}

TEST(DiskStateStore, ByteCountersAreExact) {
  const fs::path dir = fresh_store_dir("counters");
  zm::DiskStateStore store(dir.string(), 0);
  EXPECT_EQ(store.bytes_read(), 0);
  EXPECT_EQ(store.bytes_written(), 0);
  store.add(5, {torch::ones({123}), torch::ones({4, 5})});
  EXPECT_EQ(store.block_bytes(5), 143 * 4);
  EXPECT_EQ(store.bytes_written(), 572);
  EXPECT_EQ(store.bytes_read(), 0);
  auto ts = store.fetch(5);
  EXPECT_EQ(store.bytes_read(), 572);
  store.fetch(5);  // resident
  EXPECT_EQ(store.bytes_read(), 572);
  store.write_back(5, ts);
  store.flush();
  EXPECT_EQ(store.bytes_written(), 2 * 572);
  store.fetch(5);
  EXPECT_EQ(store.bytes_read(), 2 * 572);
}

TEST(DiskStateStore, ResidentBytesReturnToZeroAfterFlush) {
  const fs::path dir = fresh_store_dir("resident");
  zm::DiskStateStore store(dir.string(), 0);
  store.add(0, {torch::ones({1 << 20})});  // 4 MiB
  store.add(1, {torch::ones({1 << 18}), torch::ones({10})});
  const int64_t b0 = 4 << 20, b1 = (1 << 20) + 40;
  EXPECT_EQ(store.resident_bytes(), 0);  // add() keeps nothing
  auto t0 = store.fetch(0);
  EXPECT_EQ(store.resident_bytes(), b0);
  store.prefetch(1);
  store.flush();
  EXPECT_EQ(store.resident_bytes(), b0 + b1);  // a finished read waits for its fetch
  auto t1 = store.fetch(1);
  EXPECT_EQ(store.resident_bytes(), b0 + b1);
  store.write_back(0, std::move(t0));
  store.write_back(1, std::move(t1));
  store.flush();
  EXPECT_EQ(store.resident_bytes(), 0);
  EXPECT_EQ(store.peak_resident_bytes(), b0 + b1);
}

TEST(DiskStateStore, RejectsUnknownIds) {
  const fs::path dir = fresh_store_dir("unknown");
  zm::DiskStateStore store(dir.string(), 0);
  store.add(1, {torch::ones({4})});
  EXPECT_EQ(error_text([&] { store.fetch(2); }), "DiskStateStore::fetch: unknown block id 2 (1 blocks registered)");
  EXPECT_EQ(error_text([&] { store.prefetch(3); }),
            "DiskStateStore::prefetch: unknown block id 3 (1 blocks registered)");
  EXPECT_EQ(error_text([&] { store.write_back(4, {torch::ones({4})}); }),
            "DiskStateStore::write_back: unknown block id 4 (1 blocks registered)");
  EXPECT_THROW(store.block_bytes(5), zerodiff::Error);
  expect_equal(store.fetch(1), {torch::ones({4})}, "block 1 after the errors");
}

TEST(DiskStateStore, RejectsRepeatedIdsAndBadTensors) {
  const fs::path dir = fresh_store_dir("bad_input");
  zm::DiskStateStore store(dir.string(), 0);
  store.add(7, {torch::ones({4}), torch::ones({2, 3})});
  EXPECT_EQ(error_text([&] { store.add(7, {torch::ones({4})}); }),
            "DiskStateStore::add: block id 7 is already registered");
  EXPECT_EQ(error_text([&] { store.add(8, {torch::ones({4}, torch::kFloat64)}); }),
            "DiskStateStore::add: tensor 0 of block 8 is Double, expected Float (float32)");
  EXPECT_EQ(error_text([&] { store.add(8, {torch::ones({4}), torch::empty({4}, torch::Device(torch::kMeta))}); }),
            "DiskStateStore::add: tensor 1 of block 8 is on meta, expected cpu");
  EXPECT_EQ(error_text([&] { store.add(8, {torch::ones({4, 3}).t()}); }),
            "DiskStateStore::add: tensor 0 of block 8 (shape [3, 4], strides [1, 3]) is not contiguous");
  EXPECT_EQ(error_text([&] { store.add(8, {}); }), "DiskStateStore::add: block 8 has 0 tensors, expected 1 to 8");
  EXPECT_EQ(error_text([&] { store.add(8, std::vector<at::Tensor>(9, torch::ones({1}))); }),
            "DiskStateStore::add: block 8 has 9 tensors, expected 1 to 8");
  EXPECT_EQ(store.num_blocks(), 1u);  // nothing half-registered
  EXPECT_FALSE(fs::exists(store.directory() + "/chunk-8.bin"));
  EXPECT_EQ(error_text([&] { store.write_back(7, {torch::ones({4})}); }),
            "DiskStateStore::write_back: block 7 got 1 tensors, registered with 2");
  EXPECT_EQ(error_text([&] { store.write_back(7, {torch::ones({4}), torch::ones({3, 2})}); }),
            "DiskStateStore::write_back: tensor 1 of block 7 has shape [3, 2], registered with [2, 3]");
  EXPECT_EQ(error_text([&] { store.write_back(7, {torch::ones({4}, torch::kHalf), torch::ones({2, 3})}); }),
            "DiskStateStore::write_back: tensor 0 of block 7 is Half, expected Float (float32)");
  // A non-contiguous tensor of the right shape is accepted (copied).
  store.write_back(7, {torch::arange(4, torch::kFloat), torch::arange(6, torch::kFloat).view({3, 2}).t()});
  const auto transposed = torch::tensor({0.f, 2.f, 4.f, 1.f, 3.f, 5.f}).view({2, 3});
  expect_equal(store.fetch(7), {torch::arange(4, torch::kFloat), transposed}, "after a non-contiguous write_back");
  store.flush();
}

TEST(DiskStateStore, UncreatableDirectoryNamesThePath) {
  const fs::path dir = fresh_store_dir("uncreatable");
  const fs::path file = dir / "a_regular_file";
  std::ofstream(file) << "not a folder";
  try {
    zm::DiskStateStore store((file / "states").string(), 2);
    FAIL() << "no error for a folder under a regular file";
  } catch (const zerodiff::IoError& e) {
    EXPECT_EQ(std::string(e.what()),
              (file / "states" / "rank-2").string() +
                  ": cannot create the folder for optimizer states: Not a directory");
  }
}

TEST(DiskStateStore, ShortReadNamesTheFileAndTheCounts) {
  const fs::path dir = fresh_store_dir("short_read");
  zm::DiskStateStore store(dir.string(), 0);
  store.add(9, {torch::ones({30}), torch::ones({1000})});
  const std::string file = store.directory() + "/chunk-9.bin";
  ASSERT_EQ(::truncate(file.c_str(), 1000), 0);
  EXPECT_EQ(error_text([&] { store.fetch(9); }), file + ": short read at offset 1000: got 1000 of 4120 bytes");
  EXPECT_EQ(store.resident_bytes(), 0);  // the failed read's buffers are gone
  // Writing the block again repairs it.
  store.write_back(9, {torch::full({30}, 2.0f), torch::full({1000}, 3.0f)});
  expect_equal(store.fetch(9), {torch::full({30}, 2.0f), torch::full({1000}, 3.0f)}, "block 9 rewritten");
  store.flush();
}

// A full disk, made with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails with EFBIG as a full
// disk fails with ENOSPC), in a child process (the limit is process-wide). The child prints what it saw on stderr.
TEST(DiskStateStoreDeathTest, FailedWriteIsReportedByTheNextFetchAndFlush) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const fs::path dir = fresh_store_dir("failed_write");
  const auto scenario = [&] {
    std::signal(SIGXFSZ, SIG_IGN);
    std::string out;
    {
      zm::DiskStateStore store(dir.string(), 0);
      store.add(3, {torch::full({1 << 16}, 1.0f)});  // 256 KiB
      store.add(4, {torch::full({16}, 4.0f)});
      auto ts = store.fetch(3);
      rlimit old{};
      ::getrlimit(RLIMIT_FSIZE, &old);
      rlimit limited = old;
      limited.rlim_cur = 64 * 1024;  // the first 64 KiB go through, then EFBIG
      ::setrlimit(RLIMIT_FSIZE, &limited);
      store.write_back(3, {torch::full({1 << 16}, 2.0f)});
      try {
        store.flush();
        out += "flush: no error\n";
      } catch (const zerodiff::IoError& e) {
        out += std::string("flush: ") + e.what() + "\n";
      }
      out += "written " + std::to_string(store.bytes_written()) + "\n";
      try {
        store.flush();
        out += "second flush: no error\n";  // reported once
      } catch (const zerodiff::IoError& e) {
        out += std::string("second flush: ") + e.what() + "\n";
      }
      try {
        store.fetch(3);
        out += "fetch 3: no error\n";
      } catch (const zerodiff::IoError& e) {
        out += std::string("fetch 3: ") + e.what() + "\n";
      }
      // The next fetch of another block reports a failed write too.
      store.write_back(3, {torch::full({1 << 16}, 5.0f)});
      try {
        store.fetch(4);
        out += "fetch 4: no error\n";
      } catch (const zerodiff::IoError& e) {
        out += std::string("fetch 4: ") + e.what() + "\n";
      }
      ::setrlimit(RLIMIT_FSIZE, &old);
      // Without the limit, a write_back repairs the block.
      store.write_back(3, {torch::full({1 << 16}, 6.0f)});
      const auto back = store.fetch(3);
      out += torch::equal(back[0], torch::full({1 << 16}, 6.0f)) ? "repaired\n" : "NOT repaired\n";
      store.write_back(3, back);
      store.flush();
      out += torch::equal(store.fetch(4)[0], torch::full({16}, 4.0f)) ? "block 4 intact\n" : "block 4 damaged\n";
    }
    std::fputs(out.c_str(), stderr);
    std::exit(0);
  };
  const std::string file = (dir / "rank-0" / "chunk-3.bin").string();
  EXPECT_EXIT(scenario(), testing::ExitedWithCode(0),
              "flush: " + file + ": write failed at offset 65536: File too large\n"
              "written 327744\n"  // add 262144 + 64 + the 65536 bytes that went through
              "second flush: no error\n"
              "fetch 3: " + file + ": block 3 of optimizer states is lost, its last write_back failed: " + file +
              ": write failed at offset 65536: File too large\n"
              "fetch 4: " + file + ": write failed at offset 65536: File too large\n"
              "repaired\n"
              "block 4 intact\n");
}

TEST(DiskStateStore, DestructorRemovesItsFilesAndFolder) {
  const fs::path dir = fresh_store_dir("destructor");
  std::string rank_dir;
  {
    zm::DiskStateStore store(dir.string(), 5);
    rank_dir = store.directory();
    store.add(0, {torch::ones({2 << 20})});  // 8 MB
    store.add(1, {torch::ones({10})});
    EXPECT_TRUE(fs::exists(rank_dir + "/chunk-0.bin"));
    EXPECT_TRUE(fs::exists(rank_dir + "/chunk-1.bin"));
    store.write_back(0, {torch::zeros({2 << 20})});  // still in flight when the destructor runs
    store.prefetch(1);
  }
  EXPECT_FALSE(fs::exists(rank_dir));
  EXPECT_TRUE(fs::exists(dir));  // only the rank folder is the store's
  // A foreign file in the rank folder stays, and so does the folder.
  {
    zm::DiskStateStore store(dir.string(), 5);
    store.add(2, {torch::ones({10})});
    std::ofstream(rank_dir + "/foreign.txt") << "not ours";
  }
  EXPECT_FALSE(fs::exists(rank_dir + "/chunk-2.bin"));
  EXPECT_TRUE(fs::exists(rank_dir + "/foreign.txt"));
}

TEST(DiskStateStore, PinnedReadsOnlyWithCuda) {
  const fs::path dir = fresh_store_dir("pinned");
  zm::DiskStateStore store(dir.string(), 0);
  store.set_pinned(true);
  store.add(0, {torch::arange(100, torch::kFloat)});
  const auto ts = store.fetch(0);
  expect_equal(ts, {torch::arange(100, torch::kFloat)}, "pinned read");
  EXPECT_EQ(ts[0].is_pinned(), at::hasCUDA());
  store.write_back(0, ts);
  store.set_pinned(false);
  const auto plain = store.fetch(0);
  EXPECT_FALSE(plain[0].is_pinned());
  store.write_back(0, plain);
  store.flush();
}
