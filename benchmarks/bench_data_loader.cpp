// bench_data_loader: DataLoader throughput in images/s on an image folder, as training feeds it.
//
//   bench_data_loader --data out/bench/emoji-256 --resolution 256 --workers 2 --batch 16 --batches 60 --warmup 6
//
// The work per image is that of diffusers' train_text_to_image.py: decode the file, resize the shorter side
// to --resolution (antialiased bicubic; skipped when it already has that size), random crop, random
// horizontal flip, normalise to [-1, 1]; then collate to [B, 3, R, R]. Its peer, python/data_loader_peer.py,
// does the same with Pillow + torchvision.transforms through torch.utils.data.DataLoader; run_data_loader.sh
// runs both on the same folder in the same session and prints them side by side (the figure below means
// nothing alone).
//
// Measurement: the loader is built (metadata read, files validated) and --warmup batches are consumed, which
// starts the workers and fills the prefetch queue; then the clock runs over the next --batches batches (or
// fewer: with --max-seconds S, timing stops after the first batch that ends past S seconds).
// Epoch ends are crossed as needed (next() returns nullopt once per epoch; the loader then starts the next
// one) and counted in the output. The setup line reports ATen's intra-op thread count (at::get_num_threads(),
// OpenMP's default, or OMP_NUM_THREADS): the worker threads run under c10::ParallelGuard, which with
// LibTorch's OpenMP backend does not keep ATen ops inside them single-threaded (at::parallel_for only asks
// omp_in_parallel()), so each worker's large ops start an OpenMP team of that many threads.
// run_data_loader.sh therefore also runs this binary under OMP_NUM_THREADS=1, what torch's worker processes
// get from torch.set_num_threads(1).
//
// Without --data (how tools/gpu/run_gpu.sh calls every bench_* binary) it measures the synthetic shapes
// dataset instead: rendering, not decoding, so only a smoke run of the binary, not a loader figure.
//
// Output: one machine-readable line (parsed by run_data_loader.sh), after a few informational ones:
//   zerodiff loader: 256 px, 2 workers, batch 16: 1234.5 images/s (960 images in 0.778 s)
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "zerodiff/core/Error.h"
#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/ImageFolderDataset.h"
#include "zerodiff/data/Rng.h"
#include "zerodiff/data/SyntheticShapesDataset.h"

namespace zd = zerodiff::data;

namespace zerodiff_bench::bench_data_loader {

int run(int argc, char** argv) {
  CLI::App app{"bench_data_loader: DataLoader throughput (images/s) on an image folder"};
  std::string data;
  int64_t resolution = 256, batch = 16, batches = 40, warmup = 4;
  int workers = 2, prefetch = 2;
  uint64_t seed = 0;
  double max_seconds = 0;
  app.add_option("--data", data, "Image folder with metadata.jsonl (default: the synthetic shapes dataset, a smoke run)");
  app.add_option("--resolution", resolution, "Training resolution in pixels")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--workers", workers, "Worker threads (DataLoaderOptions::num_workers)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--batch", batch, "Batch size")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batches", batches, "Timed batches")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "Batches consumed before the clock starts")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--prefetch", prefetch, "Batches queued per worker (torch's prefetch_factor)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "Loader seed (shuffle, crops, flips)")->capture_default_str();
  app.add_option("--max-seconds", max_seconds, "Stop timing after the batch that passes this many seconds (0: no cap)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  try {
    std::shared_ptr<const zd::Dataset> dataset;
    std::string what;
    if (data.empty()) {
      dataset = std::make_shared<zd::SyntheticShapesDataset>(
          zd::SyntheticShapesOptions{.size = 256, .image_size = resolution, .seed = 0});
      what = "synthetic shapes (no --data: a smoke run; rendering, not decoding)";
    } else {
      dataset = std::make_shared<zd::ImageFolderDataset>(zd::ImageFolderOptions{.root = data});
      what = data;
    }
    zd::Rng probe_rng = zd::Rng::for_sample(seed, 0, 0);
    const auto first = dataset->get(0, probe_rng).image;  // [3, H, W]
    std::printf("dataset: %s, %lld images, first %lldx%lld (%s)\n", what.c_str(),
                static_cast<long long>(dataset->size()), static_cast<long long>(first.size(2)),
                static_cast<long long>(first.size(1)),
                std::min(first.size(1), first.size(2)) == resolution ? "no resize" : "resized");

    zd::DataLoaderOptions options;
    options.batch_size = batch;
    options.num_workers = workers;
    options.prefetch = prefetch;
    options.shuffle = true;
    options.seed = seed;
    options.image = zd::ImageTransformOptions{.resolution = resolution, .center_crop = false, .random_flip = true};
    zd::DataLoader loader(dataset, options);

    int64_t epoch_ends = 0;
    auto next_batch = [&]() -> zd::Batch {
      for (;;) {
        if (auto b = loader.next()) return std::move(*b);
        ++epoch_ends;  // end of an epoch: the next call starts the following one
      }
    };
    for (int64_t i = 0; i < warmup; ++i) next_batch();
    const int64_t ends_before = epoch_ends;
    int64_t images = 0;
    const auto t0 = std::chrono::steady_clock::now();
    double seconds = 0;
    for (int64_t i = 0; i < batches; ++i) {
      const zd::Batch b = next_batch();
      ZD_CHECK(b.images.dim() == 4 && b.images.size(2) == resolution && b.images.size(3) == resolution,
               "unexpected batch shape ", b.images.sizes());
      images += b.size();
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (max_seconds > 0 && seconds >= max_seconds) break;
    }
    std::printf("setup: %lld batches per epoch, %lld epoch end(s) crossed while timed, %lld unreadable, "
                "prefetch %d per worker, ATen intra-op threads %d (OMP_NUM_THREADS=%s)\n",
                static_cast<long long>(loader.batches_per_epoch()), static_cast<long long>(epoch_ends - ends_before),
                static_cast<long long>(loader.num_skipped()), prefetch, at::get_num_threads(),
                std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "unset");
    std::printf("zerodiff loader: %lld px, %d worker%s, batch %lld: %.1f images/s (%lld images in %.3f s)\n",
                static_cast<long long>(resolution), workers, workers == 1 ? "" : "s", static_cast<long long>(batch),
                static_cast<double>(images) / seconds, static_cast<long long>(images), seconds);
    return 0;
  } catch (const zerodiff::Error& e) {
    std::cerr << "bench_data_loader: error: " << e.what() << std::endl;
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "bench_data_loader: error: " << e.what_without_backtrace() << std::endl;
    return 1;
  }
}

}  // namespace zerodiff_bench::bench_data_loader
