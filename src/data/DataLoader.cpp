// DataLoader: worker threads building whole batches in order, bounded prefetch, generation-stamped
// restarts (new epoch, load_state), deterministic per-sample RNG, unreadable samples substituted.
#include "zerodiff/data/DataLoader.h"

#include <ATen/ATen.h>
#include <c10/util/ParallelGuard.h>
#include <dlfcn.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"

namespace zerodiff::data {

namespace {

using SetThreads = void (*)(int);

// omp_set_num_threads of the OpenMP runtime LibTorch's at::parallel_for runs on, or null without OpenMP. Looked up
// through libtorch_cpu's handle (dlsym searches that library and its dependencies), so that a LibTorch shipping a
// renamed libgomp (the official zip archives: libgomp-<hash>.so) gets its own runtime's function even when another
// libgomp was loaded first; the global scope otherwise (a static LibTorch, or another library name).
SetThreads torch_omp_set_num_threads() {
  static const SetThreads fn = [] {
    SetThreads f = nullptr;
    if (void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD)) {
      f = reinterpret_cast<SetThreads>(dlsym(torch_cpu, "omp_set_num_threads"));
      dlclose(torch_cpu);  // drops the reference RTLD_NOLOAD took; the library stays loaded (we link it)
    }
    if (f == nullptr) f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    return f;
  }();
  return fn;
}

int64_t checked_size(const std::shared_ptr<const Dataset>& dataset) {
  ZD_CHECK(dataset != nullptr, "DataLoader: dataset is null");
  return dataset->size();
}
}  // namespace

struct DataLoader::Impl {
  struct Result {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  std::mutex mutex;  // guards everything below except `bad` and the index cache
  std::condition_variable work_cv, ready_cv;
  std::vector<std::thread> threads;
  bool stop = false;
  int64_t generation = 0;
  int64_t epoch = 0;
  int64_t position = 0;   // next batch next() returns
  int64_t scheduled = 0;  // next batch a worker starts building
  int64_t window = 1;     // batches built or queued ahead of `position` (inclusive)
  std::map<int64_t, Result> ready;

  std::mutex bad_mutex;
  std::set<int64_t> bad;  // dataset indices found unreadable

  std::mutex cache_mutex;
  int64_t cached_epoch = -1;
  std::shared_ptr<const std::vector<int64_t>> cached_indices;

  void restart_locked(int64_t new_epoch, int64_t new_position) {
    ++generation;
    epoch = new_epoch;
    position = new_position;
    scheduled = new_position;
    ready.clear();
    work_cv.notify_all();
  }
};

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)),
      options_(options),
      sampler_(checked_size(dataset_),
               ShardedSamplerOptions{options.seed, options.shuffle, options.drop_last, options.rank,
                                     options.world_size}),
      image_transform_(options.image),
      caption_transform_(options.caption),
      impl_(std::make_unique<Impl>()) {
  ZD_CHECK(options_.batch_size >= 1, "batch_size must be >= 1, got ", options_.batch_size);
  ZD_CHECK(options_.num_workers >= 0, "num_workers must be >= 0, got ", options_.num_workers);
  ZD_CHECK(options_.prefetch >= 1, "prefetch must be >= 1, got ", options_.prefetch);
  const int64_t n = sampler_.num_samples(), b = options_.batch_size;
  batches_per_epoch_ = options_.drop_last ? n / b : (n + b - 1) / b;
  ZD_CHECK(batches_per_epoch_ >= 1, "drop_last leaves no batch: ", n, " samples per rank, batch_size ", b);
  impl_->window = static_cast<int64_t>(options_.num_workers) * options_.prefetch;
  for (int i = 0; i < options_.num_workers; ++i) {
    impl_->threads.emplace_back([this] {
      // One thread per worker, like torch's worker processes. ParallelGuard alone is not enough: with this
      // LibTorch, at::parallel_for only consults omp_in_parallel(), so each large op in a worker would start
      // an OpenMP team that fights the training thread's team for the cores (measured: 4x slower loading on
      // a busy 2-core machine). The OpenMP thread count is per thread; set it to 1 for this one.
      c10::ParallelGuard serial(true);
      (void)at::get_num_threads();  // run torch's lazy thread-pool init first
      if (const SetThreads set = torch_omp_set_num_threads()) set(1);
      Impl& s = *impl_;
      std::unique_lock<std::mutex> lock(s.mutex);
      for (;;) {
        s.work_cv.wait(lock, [&] {
          return s.stop || (s.scheduled < batches_per_epoch_ && s.scheduled < s.position + s.window);
        });
        if (s.stop) return;
        const int64_t batch = s.scheduled++, generation = s.generation, epoch = s.epoch;
        lock.unlock();
        Impl::Result result;
        try {
          result.batch = build_batch(epoch, batch);
        } catch (...) {
          result.error = std::current_exception();
        }
        lock.lock();
        if (generation == s.generation) {
          s.ready.emplace(batch, std::move(result));
          s.ready_cv.notify_all();
        }
      }
    });
  }
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->work_cv.notify_all();
  for (auto& thread : impl_->threads) thread.join();
}

std::optional<Batch> DataLoader::next() {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mutex);
  if (s.position >= batches_per_epoch_) {
    const int64_t finished = s.epoch;
    s.restart_locked(finished + 1, 0);
    lock.unlock();
    if (const int64_t skipped = num_skipped(); skipped > 0) {
      ZD_LOG_WARN("end of epoch ", finished, ": ", skipped, " unreadable image", skipped == 1 ? "" : "s",
                  " skipped so far");
    }
    return std::nullopt;
  }
  const int64_t want = s.position;
  if (options_.num_workers == 0) {
    const int64_t epoch = s.epoch;
    ++s.position;
    lock.unlock();
    return build_batch(epoch, want);
  }
  s.ready_cv.wait(lock, [&] { return s.ready.count(want) > 0; });
  auto node = s.ready.extract(want);
  ++s.position;
  s.work_cv.notify_all();
  lock.unlock();
  if (node.mapped().error) std::rethrow_exception(node.mapped().error);
  return std::move(node.mapped().batch);
}

LoaderState DataLoader::state() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return LoaderState{impl_->epoch,       impl_->position,        options_.seed,
                     options_.batch_size, options_.world_size, dataset_->size()};
}

void DataLoader::load_state(const LoaderState& state) {
  const LoaderState mine = this->state();
  ZD_CHECK(state.seed == mine.seed && state.batch_size == mine.batch_size && state.world_size == mine.world_size &&
               state.dataset_size == mine.dataset_size,
           "loader state does not match this loader: saved with seed ", state.seed, ", batch_size ", state.batch_size,
           ", world_size ", state.world_size, ", dataset_size ", state.dataset_size, "; this loader has seed ",
           mine.seed, ", batch_size ", mine.batch_size, ", world_size ", mine.world_size, ", dataset_size ",
           mine.dataset_size);
  ZD_CHECK(state.epoch >= 0 && state.batch >= 0 && state.batch <= batches_per_epoch_, "loader state position (epoch ",
           state.epoch, ", batch ", state.batch, ") is outside an epoch of ", batches_per_epoch_, " batches");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->restart_locked(state.epoch, state.batch);
}

Batch DataLoader::build_batch(int64_t epoch, int64_t batch) const {
  ZD_CHECK(batch >= 0 && batch < batches_per_epoch_, "batch ", batch, " is outside [0, ", batches_per_epoch_, ")");
  std::shared_ptr<const std::vector<int64_t>> indices;
  {
    std::lock_guard<std::mutex> lock(impl_->cache_mutex);
    if (impl_->cached_epoch != epoch || !impl_->cached_indices) {
      impl_->cached_indices = std::make_shared<const std::vector<int64_t>>(sampler_.indices(epoch));
      impl_->cached_epoch = epoch;
    }
    indices = impl_->cached_indices;
  }
  const int64_t begin = batch * options_.batch_size;
  const int64_t end = std::min<int64_t>(begin + options_.batch_size, static_cast<int64_t>(indices->size()));
  Batch out;
  out.epoch = epoch;
  out.batch = batch;
  std::vector<at::Tensor> images;
  images.reserve(static_cast<size_t>(end - begin));
  for (int64_t i = begin; i < end; ++i) {
    Sample sample = build_sample(epoch, (*indices)[static_cast<size_t>(i)]);
    images.push_back(std::move(sample.image));
    out.captions.push_back(std::move(sample.caption));
    out.indices.push_back(sample.index);
  }
  out.images = at::stack(images);  // [B, 3, H, W]
  return out;
}

Sample DataLoader::build_sample(int64_t epoch, int64_t index) const {
  const int64_t n = dataset_->size();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t candidate = (index + k) % n;
    {
      std::lock_guard<std::mutex> lock(impl_->bad_mutex);
      if (impl_->bad.count(candidate)) continue;
    }
    Rng rng = Rng::for_sample(options_.seed, epoch, index);  // the slot's RNG, also for a substitute
    try {
      Sample raw = dataset_->get(candidate, rng);
      Sample out;
      out.index = candidate;
      out.image = image_transform_(raw.image, rng);
      out.caption = caption_transform_(raw.caption, rng);
      return out;
    } catch (const IoError& e) {
      bool first = false;
      {
        std::lock_guard<std::mutex> lock(impl_->bad_mutex);
        first = impl_->bad.insert(candidate).second;
      }
      if (first) ZD_LOG_WARN("skipping unreadable image ", dataset_->describe(candidate), ": ", e.what());
    }
  }
  throw IoError(str("no readable image in the dataset: all ", n, " samples failed to load"), ZD_WHERE);
}

int64_t DataLoader::num_skipped() const {
  std::lock_guard<std::mutex> lock(impl_->bad_mutex);
  return static_cast<int64_t>(impl_->bad.size());
}

std::vector<int64_t> DataLoader::skipped_indices() const {
  std::lock_guard<std::mutex> lock(impl_->bad_mutex);
  return {impl_->bad.begin(), impl_->bad.end()};
}

}  // namespace zerodiff::data
