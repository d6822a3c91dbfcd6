// zerodiff/memory/MemoryTracer.h — measures the non-model memory (activations, temporaries, gradients
// autograd allocates) of a training step on the compute device, per moment of the step, during Gemini's
// warm-up step. After ColossalAI's Gemini memory-statistics collector (colossalai/zero/gemini/memory_tracer:
// MemStats, "non-model data" = device memory in use minus the model data the chunk manager accounts for).
//
// How the device's memory in use is read:
//  * CUDA: the caching allocator's allocated bytes (current, and peak since the last sample) of the device.
//  * CPU: every allocation and free made on the tracing thread through c10's CPU allocator, reported to a
//    c10::MemoryReportingInfoBase installed as thread-local debug info (the hook torch's memory profiler
//    uses). Allocations made inside a ModelDataScope (chunk gathers, shard moves, reduce buffers) are model
//    data and are left out, as are their frees; everything else is non-model data, tracked at every
//    allocation rather than sampled. Blocks allocated before start() and freed while tracing are not seen
//    (counted as still live); allocations of other threads (data-loader workers, ATen's intra-op worker
//    threads) are not counted: on the CPU the training step runs on the tracing thread (autograd's CPU backward
//    included), and intra-op kernels rarely allocate. While tracing, c10's log level is raised to error, since
//    c10 warns about the frees it cannot attribute; torch warnings of the tracing thread are forwarded to
//    zerodiff's log instead, raw c10 LOG(WARNING) lines of any thread are hidden for the warm-up step.
//  * CUDA: the interval's allocator peak minus the model bytes at the interval's start (conservative: model
//    data allocated during the interval counts as non-model). It resets the device's peak statistics at every
//    sample (the process-wide figures torch.cuda.max_memory_allocated reads).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace zerodiff::memory {

/// While alive, CPU allocations of this thread are model data (see above). Nests.
class ModelDataScope {
 public:
  ModelDataScope();
  ~ModelDataScope();
  ModelDataScope(const ModelDataScope&) = delete;
  ModelDataScope& operator=(const ModelDataScope&) = delete;

 private:
  bool previous_;
};

class MemoryTracer {
 public:
  /// Traces memory on `device` (CPU or CUDA). `model_bytes` returns the model data (chunks, shards, optimizer
  /// states) held now on the device; on CUDA it is subtracted to give the non-model part (the CPU path tells
  /// model data by ModelDataScope instead). Throws
  /// NotImplementedError for a CUDA device in a build without CUDA.
  MemoryTracer(c10::Device device, std::function<int64_t()> model_bytes);
  ~MemoryTracer();
  MemoryTracer(const MemoryTracer&) = delete;
  MemoryTracer& operator=(const MemoryTracer&) = delete;

  /// Starts tracing on the calling thread (CPU: counting from zero; CUDA: the allocator's figures are absolute).
  /// Throws zerodiff::Error when already started.
  void start();
  /// Closes the interval since the previous sample (or start) under `moment`'s name and opens the next one:
  /// the interval's non-model peak (bytes, >= 0): CPU, the largest non-model bytes in use during it; CUDA, the
  /// allocator's peak during it − the model bytes at its start.
  /// A moment sampled several times keeps its largest peak. No-op when not started.
  void sample(const std::string& moment);
  /// Closes the last interval (under the previous moment's name) and stops tracing.
  void stop();
  bool tracing() const;

  /// Non-model peak (bytes) recorded for `moment`, or the largest of all moments when it was never sampled
  /// (a conservative default); 0 before anything was recorded.
  int64_t non_model_peak(const std::string& moment) const;
  /// Largest non-model peak over every moment.
  int64_t max_non_model_peak() const;
  /// Non-model bytes in use now (memory in use − model bytes); 0 when not tracing.
  int64_t non_model_now() const;
  /// Moments in the order they were first sampled, with their peaks.
  std::vector<std::pair<std::string, int64_t>> moments() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zerodiff::memory
