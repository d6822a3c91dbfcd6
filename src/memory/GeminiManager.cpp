// Gemini's placement manager (see zerodiff/memory/GeminiManager.h); the policies are in PlacementPolicy.cpp.
#include "zerodiff/memory/GeminiManager.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "PlacementPolicy.h"
#include "zerodiff/core/BuildConfig.h"
#include "zerodiff/core/Enum.h"
#include "zerodiff/core/Logging.h"

#if ZERODIFF_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace zerodiff::memory {

namespace {

double mib(int64_t bytes) { return std::round(static_cast<double>(bytes) / (1024.0 * 1024.0) * 100.0) / 100.0; }

}  // namespace

#if ZERODIFF_CUDA
struct GeminiManager::CudaCopies {
  explicit CudaCopies(c10::Device device, size_t chunks)
      : stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())), ready(chunks) {}
  c10::cuda::CUDAStream stream;
  std::vector<std::unique_ptr<at::cuda::CUDAEvent>> ready;  // after the last copy into each chunk's shard
};
#else
struct GeminiManager::CudaCopies {};
#endif

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::device: return "device";
    case Tier::host: return "host";
    case Tier::disk: return "disk";
  }
  return "?";
}

int64_t device_free_bytes(c10::Device device) {
  if (device.is_cuda()) {
#if ZERODIFF_CUDA
    const c10::cuda::CUDAGuard guard(device);
    size_t free = 0, total = 0;
    const cudaError_t err = cudaMemGetInfo(&free, &total);
    ZD_CHECK(err == cudaSuccess, "cudaMemGetInfo on ", device, " failed: ", cudaGetErrorString(err));
    return static_cast<int64_t>(free);
#else
    throw NotImplementedError(zerodiff::str("device_free_bytes: ", device, " in a build without CUDA"));
#endif
  }
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t value = 0;
  while (in >> key >> value >> unit) {
    if (key == "MemAvailable:") return value * 1024;
  }
  throw Error("device_free_bytes: no MemAvailable in /proc/meminfo; give the device budget explicitly "
              "(PlacementOptions::device_budget_bytes)");
}

GeminiManager::GeminiManager(ChunkManager& chunks, c10::Device device, PlacementOptions options,
                             int64_t optim_block_bytes, dist::ProcessGroup* group)
    : chunks_(chunks),
      device_(device),
      options_(std::move(options)),
      optim_block_bytes_(optim_block_bytes),
      group_(group != nullptr && group->size() > 1 ? group : nullptr) {
  for (const auto& [name, f] : {std::make_pair("offload_optim_frac", options_.offload_optim_frac),
                                std::make_pair("offload_param_frac", options_.offload_param_frac)}) {
    if (!(f >= 0.0 && f <= 1.0)) {
      throw ConfigError(zerodiff::str("PlacementOptions::", name, " must be in [0, 1], got ", f));
    }
  }
  ZD_CHECK(options_.device_budget_bytes >= 0, "PlacementOptions::device_budget_bytes must be >= 0 (0: the device's "
           "free memory), got ", options_.device_budget_bytes);
  policy_ = detail::PlacementPolicy::create(options_);
  // (The CUDA tracer subtracts the model data on the device; the CPU one tells model data by ModelDataScope.)
  tracer_ = std::make_unique<MemoryTracer>(device_, [this] { return device_model_bytes(); });
  const size_t n = chunks_.num_chunks();
#if ZERODIFF_CUDA
  if (device_.is_cuda()) cuda_ = std::make_unique<CudaCopies>(device_, n);
#endif
  shard_tier_.assign(n, Tier::device);
  optim_tier_.assign(n, Tier::host);
  if (options_.device_budget_bytes > 0) {
    budget_ = options_.device_budget_bytes;
  } else {
    // The device's free memory plus what this process already holds on it (the tracer and the accounting count
    // that again: frozen modules as non-model data, shards as model data).
    int64_t held = device_model_bytes();
#if ZERODIFF_CUDA
    if (device_.is_cuda()) {
      held = c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index())
                 .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
                 .current;
    }
#endif
    budget_ = device_free_bytes(device_) + held;
  }
  if (group_) {  // one budget for all ranks: the smallest
    at::Tensor b = at::tensor({budget_}, at::kLong).to(device_);
    group_->all_reduce(b, "gemini_budget", dist::ReduceOp::min);
    budget_ = b.cpu().item<int64_t>();
  }
  const Tier host_optim = options_.disk ? Tier::disk : Tier::host;
  for (size_t c = 0; c < n; ++c) optim_tier_[c] = policy_->initial_optim_tier(c, n, host_optim);
  for (size_t c = 0; c < n; ++c) {
    if (policy_->initial_shard_on_host(c, n) && !chunks_.chunk(c).keep_gathered()) move_shard(c, Tier::host);
  }
  if (policy_->evicts_to_fit_setup()) {
    reserve(0, {}, policy_->setup_placement());
  } else if (device_model_bytes() > budget_) {
    fail(0, policy_->setup_placement());
  }
  reset_peaks();
}

GeminiManager::~GeminiManager() = default;

int64_t GeminiManager::shard_bytes(size_t c) const {
  const Chunk& chunk = chunks_.chunk(c);
  return chunk.keep_gathered() ? 0 : chunk.shard_bytes();
}

int64_t GeminiManager::gathered_bytes(size_t c) const {
  const Chunk& chunk = chunks_.chunk(c);
  return chunk.gathered() ? chunk.chunk_bytes() : 0;
}

int64_t GeminiManager::optim_block_bytes(size_t c) const {
  const Chunk& chunk = chunks_.chunk(c);
  return (chunk.keep_gathered() ? chunk.chunk_numel() : chunk.shard_numel()) * optim_block_bytes_;
}

int64_t GeminiManager::device_model_bytes() const {
  int64_t b = transient_;
  for (size_t c = 0; c < chunks_.num_chunks(); ++c) {
    b += gathered_bytes(c);
    if (shard_tier_[c] == Tier::device) b += shard_bytes(c);
    if (optim_tier_[c] == Tier::device) b += optim_block_bytes(c);
  }
  return b;
}

int64_t GeminiManager::host_model_bytes() const {
  int64_t b = 0;
  for (size_t c = 0; c < chunks_.num_chunks(); ++c) {
    if (shard_tier_[c] == Tier::host) b += shard_bytes(c);
    if (optim_tier_[c] == Tier::host) b += optim_block_bytes(c);
  }
  return b;
}

int64_t GeminiManager::non_model_estimate() const {
  if (tracer_->tracing()) return tracer_->non_model_now();
  if (!warmed_up_) return 0;
  return moment_.empty() ? max_peak_ : non_model_peak(moment_);
}

int64_t GeminiManager::non_model_peak(const std::string& moment) const {
  const auto it = peaks_.find(moment);
  return it != peaks_.end() ? it->second : max_peak_;
}

int64_t GeminiManager::limit() const { return budget_ - non_model_estimate(); }

bool GeminiManager::fits(int64_t bytes) const { return device_model_bytes() + bytes <= limit(); }

void GeminiManager::note() {
  const int64_t m = device_model_bytes();
  peak_model_ = std::max(peak_model_, m);
  peak_total_ = std::max(peak_total_, m + non_model_estimate());
}

void GeminiManager::reset_peaks() {
  peak_model_ = 0;
  peak_total_ = 0;
  note();
}

void GeminiManager::begin_warmup() {
  if (warmed_up_ || tracer_->tracing()) return;
  tracer_->start();
}

std::vector<size_t> GeminiManager::end_warmup(const std::vector<size_t>& order) {
  if (!tracer_->tracing()) return {};
  tracer_->stop();
  warmed_up_ = true;
  peak_total_ = 0;  // from now on the estimate uses the measured peaks: it must stay within the budget
  schedule_.clear();
  for (size_t u : order) schedule_.emplace_back(u, Phase::forward);
  for (size_t i = order.size(); i-- > 0;) schedule_.emplace_back(order[i], Phase::backward);
  cursor_ = npos;
  moment_.clear();
  // Each moment's peak, the largest over the ranks (every rank has the same schedule, so the same moments).
  std::vector<std::string> names;
  for (const auto& [unit, phase] : schedule_) {
    names.push_back(zerodiff::str(phase == Phase::forward ? "forward " : "backward ", chunks_.unit_name(unit)));
  }
  std::vector<int64_t> values;
  for (const auto& m : names) values.push_back(tracer_->non_model_peak(m));
  values.push_back(tracer_->max_non_model_peak());
  if (group_) {
    at::Tensor v = at::tensor(values, at::kLong).to(device_);
    group_->all_reduce(v, "gemini_non_model_peaks", dist::ReduceOp::max);
    v = v.cpu();
    values.assign(v.data_ptr<int64_t>(), v.data_ptr<int64_t>() + v.numel());
  }
  peaks_.clear();
  for (size_t i = 0; i < names.size(); ++i) peaks_[names[i]] = std::max(peaks_[names[i]], values[i]);
  max_peak_ = values.back();
  // The step's peak working set: per event, its non-model peak + the gathered chunks of its unit and the next.
  int64_t kept = 0;
  for (size_t c = 0; c < chunks_.num_chunks(); ++c) {
    if (chunks_.chunk(c).keep_gathered()) kept += gathered_bytes(c);
  }
  int64_t peak_need = 0;
  for (size_t i = 0; i < schedule_.size(); ++i) {
    std::set<size_t> cs;
    for (size_t k = i; k <= std::min(i + 1, schedule_.size() - 1); ++k) {
      for (size_t c : chunks_.unit_chunks(schedule_[k].first)) {
        if (!chunks_.chunk(c).keep_gathered()) cs.insert(c);
      }
    }
    int64_t working = schedule_[i].second == Phase::backward ? backward_margin() : 0;
    for (size_t c : cs) {
      const Chunk& chunk = chunks_.chunk(c);
      working += chunk.chunk_bytes();
    }
    const std::string m = zerodiff::str(schedule_[i].second == Phase::forward ? "forward " : "backward ",
                                        chunks_.unit_name(schedule_[i].first));
    peak_need = std::max(peak_need, non_model_peak(m) + working);
  }
  std::vector<int64_t> block_bytes;
  for (size_t c = 0; c < chunks_.num_chunks(); ++c) block_bytes.push_back(optim_block_bytes(c));
  const std::vector<size_t> changed = policy_->blocks_to_device(budget_ - peak_need - kept, block_bytes, optim_tier_);
  for (size_t c : changed) optim_tier_[c] = Tier::device;
  return changed;
}

int64_t GeminiManager::backward_margin() const {
  int64_t largest = 0;
  for (size_t c = 0; c < chunks_.num_chunks(); ++c) {
    const Chunk& chunk = chunks_.chunk(c);
    largest = std::max(largest, chunk.chunk_bytes() + chunk.shard_bytes());
  }
  return 3 * largest;
}

void GeminiManager::on_event(size_t unit, Phase phase, size_t position) {
  moment_ = zerodiff::str(phase == Phase::forward ? "forward " : "backward ", chunks_.unit_name(unit));
  tracer_->sample(moment_);
  if (position != npos && !schedule_.empty()) {
    const size_t n = schedule_.size() / 2;
    if (position < n) cursor_ = phase == Phase::forward ? position : n + (n - 1 - position);
  }
}

size_t GeminiManager::next_use(size_t chunk) const {
  if (schedule_.empty() || cursor_ == npos) return npos - chunk;  // warm-up: lowest index first
  const size_t s = schedule_.size();
  for (size_t k = 1; k <= s; ++k) {
    const auto& cs = chunks_.unit_chunks(schedule_[(cursor_ + k) % s].first);
    if (std::find(cs.begin(), cs.end(), chunk) != cs.end()) return k;
  }
  return s + 1;
}

size_t GeminiManager::pick_victim(const std::vector<size_t>& keep) const {
  // First the chunks not in `keep`; as a last resort those too (a chunk gathers from a host shard as well).
  for (const bool allow_kept : {false, true}) {
    size_t best = npos, best_use = 0;
    for (size_t c = 0; c < chunks_.num_chunks(); ++c) {
      if (shard_tier_[c] != Tier::device || chunks_.chunk(c).keep_gathered()) continue;
      if (!allow_kept && std::find(keep.begin(), keep.end(), c) != keep.end()) continue;
      const size_t use = next_use(c);
      if (best == npos || use > best_use) {
        best = c;
        best_use = use;
      }
    }
    if (best != npos) return best;
  }
  return npos;
}

void GeminiManager::reserve(int64_t bytes, const std::vector<size_t>& keep, const std::string& what) {
  while (device_model_bytes() + bytes > limit()) {
    const size_t victim = pick_victim(keep);
    if (victim == npos) fail(bytes, what);
    move_shard(victim, Tier::host);
    ++evictions_;
  }
}

void GeminiManager::prepare_gather(const std::vector<size_t>& cs, const std::string& unit) {
  int64_t need = 0;
  for (size_t c : cs) {
    const Chunk& chunk = chunks_.chunk(c);
    if (chunk.gathered()) continue;
    need += chunk.chunk_bytes();
    if (shard_tier_[c] == Tier::host && !device_.is_cpu()) need += shard_bytes(c);  // the shard's device copy
  }
  reserve(need, cs, zerodiff::str("the chunks of unit '", unit, "'"));
  for (size_t c : cs) wait_shard(c);  // (after reserve: it may have moved one of them)
}

void GeminiManager::after_gather(size_t c) {
  if (policy_->adopts_gathered_shards() && shard_tier_[c] == Tier::host && fits(shard_bytes(c))) {
    move_shard(c, Tier::device);
  }
  note();
}

void GeminiManager::move_shard(size_t c, Tier tier) {
  ZD_CHECK(tier == Tier::device || tier == Tier::host, "GeminiManager: parameter shards live on the device or the host");
  Chunk& chunk = chunks_.chunk(c);
  if (chunk.keep_gathered() || shard_tier_[c] == tier) return;
  torch::NoGradGuard no_grad;
  const ModelDataScope model_data;
  const at::Tensor& from = chunk.shard();
  at::Tensor to;
  if (tier == Tier::device) {
    to = at::empty_like(from, from.options().device(device_).pinned_memory(false));
    bytes_to_device_ += shard_bytes(c);
  } else {
    to = at::empty(from.sizes(), from.options().device(at::kCPU).pinned_memory(device_.is_cuda()));
    bytes_to_host_ += shard_bytes(c);
  }
#if ZERODIFF_CUDA
  if (cuda_) {
    const c10::cuda::CUDAGuard device_guard(device_);
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(device_.index());
    wait_shard(c);                     // an earlier copy into `from` has finished (or is ordered before this one)
    at::cuda::CUDAEvent written;       // the compute stream's pending writes of the shard come first
    written.record(compute);
    written.block(cuda_->stream);
    {
      const c10::cuda::CUDAStreamGuard on_side(cuda_->stream);
      to.copy_(from, /*non_blocking=*/true);  // (pinned host memory on one side: an asynchronous DMA)
    }
    // The old device buffer is not reused before the copy ran; a pinned host buffer is kept by the host
    // allocator's own event, recorded by copy_.
    if (from.is_cuda()) c10::cuda::CUDACachingAllocator::recordStream(from.storage().data_ptr(), cuda_->stream);
    cuda_->ready[c] = std::make_unique<at::cuda::CUDAEvent>();
    cuda_->ready[c]->record(cuda_->stream);
  } else {
    to.copy_(from);
  }
#else
  to.copy_(from);  // a real copy on the CPU too: the two tiers are two buffers
#endif
  chunk.set_shard(std::move(to));
  shard_tier_[c] = tier;
  // (model bytes only: an eviction runs at a moment's start, before that moment's non-model memory exists)
  peak_model_ = std::max(peak_model_, device_model_bytes());
}

void GeminiManager::wait_shard(size_t c) {
#if ZERODIFF_CUDA
  if (!cuda_ || !cuda_->ready.at(c)) return;
  at::cuda::CUDAEvent& done = *cuda_->ready[c];
  if (shard_tier_[c] == Tier::host) {
    done.synchronize();  // the host thread may touch a host shard directly
  } else {
    done.block(c10::cuda::getCurrentCUDAStream(device_.index()));
  }
#else
  (void)c;
#endif
}

void GeminiManager::add_transient(int64_t bytes, const std::string& what) {
  if (bytes > 0) reserve(bytes, {}, what);
  transient_ += bytes;
  note();
}

[[noreturn]] void GeminiManager::fail(int64_t bytes, const std::string& what) const {
  int64_t gathered = 0, shards = 0, optim = 0;
  for (size_t c = 0; c < chunks_.num_chunks(); ++c) {
    gathered += gathered_bytes(c);
    if (shard_tier_[c] == Tier::device) shards += shard_bytes(c);
    if (optim_tier_[c] == Tier::device) optim += optim_block_bytes(c);
  }
  const int64_t nm = non_model_estimate();
  const int64_t need = gathered + shards + optim + transient_ + bytes + nm;
  throw BudgetError(zerodiff::str(
      "gemini: the device budget of ", mib(budget_), " MiB cannot hold ", what, " (", mib(bytes), " MiB more)",
      moment_.empty() ? std::string() : " at " + moment_, ": gathered chunks ", mib(gathered),
      " MiB + parameter shards that cannot move ", mib(shards), " MiB + optimizer states on the device ", mib(optim),
      " MiB + transient buffers ", mib(transient_), " MiB + non-model memory ", mib(nm), " MiB (",
      tracer_->tracing() ? "live, warm-up step" : "warm-up peak of this moment", ") = ", mib(need),
      " MiB. Raise the device budget (PlacementOptions::device_budget_bytes) to at least ", std::ceil(mib(need)),
      " MiB, or use smaller chunks or a smaller batch"));
}

std::string GeminiManager::summary() const {
  int64_t shard_dev = 0, optim_dev = 0, optim_host = 0, optim_disk = 0;
  for (size_t c = 0; c < chunks_.num_chunks(); ++c) {
    shard_dev += shard_tier_[c] == Tier::device;
    optim_dev += optim_tier_[c] == Tier::device;
    optim_host += optim_tier_[c] == Tier::host;
    optim_disk += optim_tier_[c] == Tier::disk;
  }
  return zerodiff::str("gemini (", name_of(policy_->kind()), "): budget ", mib(budget_), " MiB; ", chunks_.num_chunks(),
                       " chunks, parameter shards on the device ", shard_dev, ", optimizer states device/host/disk ",
                       optim_dev, "/", optim_host, "/", optim_disk, "; peak model data on the device ", mib(peak_model_),
                       " MiB (with non-model estimate ", mib(peak_total_), " MiB); non-model peak ",
                       mib(warmed_up_ ? max_peak_ : tracer_->max_non_model_peak()), " MiB; ", evictions_, " evictions, ", mib(bytes_to_host_),
                       " MiB to host, ", mib(bytes_to_device_), " MiB to device");
}

}  // namespace zerodiff::memory
