#include "zerodiff/memory/MemoryTracer.h"

#include <c10/core/Allocator.h>
#include <c10/util/Logging.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "zerodiff/core/BuildConfig.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"

#if ZERODIFF_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace zerodiff::memory {

namespace {

thread_local bool in_model_scope = false;

// Receives c10's CPU allocation reports on the thread it is installed on: net non-model bytes since start and
// the peak of that since the last read. Only frees of blocks it saw allocated (outside a ModelDataScope) count:
// c10 also reports frees of blocks allocated before this tracer (or by an earlier one) when its size table still
// knows them, and those must not drive the figure below what this tracer added.
class CpuReporter : public c10::MemoryReportingInfoBase {
 public:
  void reportMemoryUsage(void* ptr, int64_t alloc_size, size_t /*total_allocated*/, size_t /*total_reserved*/,
                         c10::Device device) override {
    if (!device.is_cpu()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (alloc_size > 0) {
        if (in_model_scope) return;
        blocks_[ptr] = alloc_size;
      } else {
        const auto it = blocks_.find(ptr);
        if (it == blocks_.end()) return;
        alloc_size = -it->second;
        blocks_.erase(it);
      }
    }
    const int64_t now = current_.fetch_add(alloc_size) + alloc_size;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
  }
  bool memoryProfilingEnabled() const override { return true; }
  int64_t current() const { return current_.load(); }
  // The peak since the previous call; the next interval starts at the current value.
  int64_t take_peak() { return peak_.exchange(current_.load()); }

 private:
  std::atomic<int64_t> current_{0};
  std::atomic<int64_t> peak_{0};
  std::mutex mutex_;
  std::unordered_map<void*, int64_t> blocks_;  // non-model blocks allocated while tracing, by address
};

// While c10's own log level is raised (below), torch warnings (TORCH_WARN) of the tracing thread still reach the
// user, through zerodiff's logger.
class ForwardWarnings : public c10::WarningHandler {
 public:
  void process(const c10::Warning& warning) override { ZD_LOG_WARN("torch: ", warning.msg()); }
};

}  // namespace

ModelDataScope::ModelDataScope() : previous_(in_model_scope) { in_model_scope = true; }
ModelDataScope::~ModelDataScope() { in_model_scope = previous_; }

struct MemoryTracer::Impl {
  Impl(c10::Device d, std::function<int64_t()> f) : device(d), model_bytes(std::move(f)) {}
  c10::Device device;
  std::function<int64_t()> model_bytes;
  bool tracing = false;
  // CPU
  std::shared_ptr<CpuReporter> reporter;
  std::optional<c10::DebugInfoGuard> guard;
  ForwardWarnings forward_warnings;
  std::optional<c10::WarningUtils::WarningHandlerGuard> warnings_guard;
  int saved_log_level = 0;
  // Interval bookkeeping
  std::string last_moment;
  bool have_last = false;
  int64_t model_at_interval_start = 0;
  std::map<std::string, int64_t> peaks;
  std::vector<std::string> order;

  // CUDA: memory in use (model data included). CPU: the non-model bytes themselves.
  int64_t in_use() const {
    if (device.is_cpu()) return reporter->current();
#if ZERODIFF_CUDA
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current;
#else
    return 0;
#endif
  }
  // Peak in use since the previous call; resets the peak for the next interval.
  int64_t take_peak() {
    if (device.is_cpu()) return reporter->take_peak();
#if ZERODIFF_CUDA
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const int64_t peak = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
    return peak;
#else
    return 0;
#endif
  }
  void close_interval() {
    const int64_t peak = std::max<int64_t>(0, take_peak() - (device.is_cpu() ? 0 : model_at_interval_start));
    if (!have_last) return;
    auto [it, inserted] = peaks.emplace(last_moment, peak);
    if (inserted) {
      order.push_back(last_moment);
    } else {
      it->second = std::max(it->second, peak);
    }
  }
};

MemoryTracer::MemoryTracer(c10::Device device, std::function<int64_t()> model_bytes)
    : impl_(std::make_unique<Impl>(device, std::move(model_bytes))) {
  ZD_CHECK(impl_->model_bytes, "MemoryTracer: no model-bytes function");
  if (device.is_cuda()) {
#if !ZERODIFF_CUDA
    throw NotImplementedError(zerodiff::str("MemoryTracer: device ", device,
                                            " but this zerodiff build has no CUDA support (ZERODIFF_WITH_CUDA=OFF)"));
#endif
  } else {
    ZD_CHECK(device.is_cpu(), "MemoryTracer: unsupported device ", device, " (cpu or cuda)");
  }
}

MemoryTracer::~MemoryTracer() {
  if (impl_->guard) {
    impl_->guard.reset();
    impl_->warnings_guard.reset();
    FLAGS_caffe2_log_level = impl_->saved_log_level;
  }
}

void MemoryTracer::start() {
  Impl& s = *impl_;
  ZD_CHECK(!s.tracing, "MemoryTracer: start() while already tracing");
  s.tracing = true;
  s.have_last = false;
  if (s.device.is_cpu()) {
    s.reporter = std::make_shared<CpuReporter>();
    s.guard.emplace(c10::DebugInfoKind::PROFILER_STATE, s.reporter);
    // c10 warns (every 1000th time) when a block allocated before tracing is freed: expected here, not news.
    s.saved_log_level = FLAGS_caffe2_log_level;
    FLAGS_caffe2_log_level = std::max(FLAGS_caffe2_log_level, 2);
    s.warnings_guard.emplace(&s.forward_warnings);
  }
  s.take_peak();
  s.model_at_interval_start = s.model_bytes();
}

void MemoryTracer::sample(const std::string& moment) {
  Impl& s = *impl_;
  if (!s.tracing) return;
  s.close_interval();
  s.last_moment = moment;
  s.have_last = true;
  s.model_at_interval_start = s.model_bytes();
}

void MemoryTracer::stop() {
  Impl& s = *impl_;
  if (!s.tracing) return;
  s.close_interval();
  s.tracing = false;
  s.have_last = false;
  if (s.guard) {
    s.guard.reset();
    s.reporter.reset();
    s.warnings_guard.reset();
    FLAGS_caffe2_log_level = s.saved_log_level;
  }
}

bool MemoryTracer::tracing() const { return impl_->tracing; }

int64_t MemoryTracer::non_model_peak(const std::string& moment) const {
  const auto it = impl_->peaks.find(moment);
  return it != impl_->peaks.end() ? it->second : max_non_model_peak();
}

int64_t MemoryTracer::max_non_model_peak() const {
  int64_t m = 0;
  for (const auto& [_, p] : impl_->peaks) m = std::max(m, p);
  return m;
}

int64_t MemoryTracer::non_model_now() const {
  if (!impl_->tracing) return 0;
  if (impl_->device.is_cpu()) return std::max<int64_t>(0, impl_->in_use());
  return std::max<int64_t>(0, impl_->in_use() - impl_->model_bytes());
}

std::vector<std::pair<std::string, int64_t>> MemoryTracer::moments() const {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& m : impl_->order) out.emplace_back(m, impl_->peaks.at(m));
  return out;
}

}  // namespace zerodiff::memory
