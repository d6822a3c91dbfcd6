// zerodiff/memory/GeminiManager.h — Gemini: where each chunk's parameter shard and optimizer states live
// (compute device, host memory, or disk for optimizer states) under a device-memory budget, from memory
// statistics of a warm-up step. After ColossalAI's Gemini (Fang et al. 2022, "Parallel Training of Pre-trained
// Models via Chunk-based Dynamic Memory Management", IEEE TPDS; colossalai/zero/gemini: GeminiManager,
// placement_policy.py, memory_tracer).
//
// What occupies the device, as this manager accounts for it ("model data"):
//  * a gathered chunk (chunk_numel elements) while its unit runs, or while it waits for gradients;
//  * a parameter shard whose tier is `device` (a shard on the host is copied to the device to be gathered);
//  * the optimizer block of a chunk whose optimizer tier is `device` (fp32 master, gradient, exp_avg,
//    exp_avg_sq of this rank's shard: 16 bytes per element);
//  * transient buffers the strategy reports (gradient reduce buffers, shard copies in flight).
// Everything else on the device (activations, temporaries, autograd's gradients, frozen modules on CUDA) is
// "non-model data": MemoryTracer measures its peak per moment of the warm-up step (the first training step),
// and from then on a moment may use at most budget − that peak for model data.
//
// Placement policies (PlacementOptions::policy; each is its own type inside the memory layer, created from the
// kind once by the constructor: src/memory/PlacementPolicy.h, which GeminiManager asks at the three points where
// the policies differ: the tiers at setup, the optimizer blocks moved to the device after the warm-up step, and
// whether a host shard stays on the device after a gather; the budget, the accounting and the eviction rule are
// the manager's own and the same for both):
//  * static (PlacementPolicyKind::fixed_fractions, StaticPlacement) — fixed fractions: the optimizer blocks of the
//    last ceil(offload_optim_frac·C) chunks and the parameter shards of the last ceil(offload_param_frac·C) chunks
//    live on the host (C chunks); the rest on the device. The budget is still enforced: a moment that does not fit
//    evicts device shards to the host for good (they are not brought back), and raises BudgetError when that is
//    not enough.
//  * auto (PlacementPolicyKind::automatic, AutoPlacement) — optimizer blocks start on the host; after the warm-up
//    step as many as fit next to the step's peak working set (non-model peak + the chunks of a unit and the next
//    one, + backward_margin() in backward) move to the device, in chunk order. Parameter shards move to the device
//    when gathered and stay while they fit; when a moment needs room, the shard whose next use (in the recorded unit
//    order, forward then backward) is furthest away is evicted to the host (Belady's rule). During the warm-up
//    step, whose order is not known yet, the lowest chunk index goes first (used last by backward).
// With an offload directory, optimizer blocks on the host tier are kept on disk between steps instead
// (DiskStateStore: read-ahead of the next chunk, write-behind of the last).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "zerodiff/core/Enum.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/memory/ChunkManager.h"
#include "zerodiff/memory/MemoryTracer.h"

namespace zerodiff::memory {

/// Raised when the device budget cannot hold one moment's working set; the message has the numbers.
class BudgetError : public Error {
 public:
  using Error::Error;
};

/// Gemini's placement policies (the file comment describes each), by the names users write ("auto", "static").
enum class PlacementPolicyKind { automatic, fixed_fractions };
inline constexpr EnumName<PlacementPolicyKind> kPlacementPolicyNames[] = {{PlacementPolicyKind::automatic, "auto"},
                                                                          {PlacementPolicyKind::fixed_fractions, "static"}};
/// PlacementPolicyKind's name table (core/Enum.h).
constexpr std::span<const EnumName<PlacementPolicyKind>> enum_names(PlacementPolicyKind) { return kPlacementPolicyNames; }

enum class Tier { device, host, disk };
const char* tier_name(Tier t);

/// How GeminiManager places chunks. Its errors name these members ("PlacementOptions::offload_optim_frac ...");
/// callers that read them from a config add the key path.
struct PlacementOptions {
  PlacementPolicyKind policy = PlacementPolicyKind::automatic;  ///< auto or static (the file comment)
  int64_t device_budget_bytes = 0;   ///< device memory the run may use (0 = the device's free memory at setup)
  double offload_optim_frac = 0.0;   ///< static: fraction of chunks whose optimizer blocks live on the host
  double offload_param_frac = 0.0;   ///< static: fraction of chunks whose parameter shards live on the host
  bool disk = false;                 ///< host-tier optimizer blocks are kept on disk between steps
};

/// Whether a schedule event is a unit's forward or its backward.
enum class Phase { forward, backward };

namespace detail {
class PlacementPolicy;  // src/memory/PlacementPolicy.h: one type per PlacementPolicyKind
}  // namespace detail

class GeminiManager {
 public:
  /// Places `chunks` (closed; their shards are on the compute device `device`) by `options`; `optim_block_bytes`
  /// = bytes of one chunk's optimizer block per shard element (16 for fp32 master + gradient + Adam's two
  /// moments). With a `group` of several ranks, every decision that could fail is made from agreed inputs (the
  /// smallest budget of all ranks, the largest warm-up peak of each moment), so that a BudgetError after the
  /// warm-up happens on every rank at the same point instead of leaving the others waiting in a collective
  /// (a collective: every rank constructs its manager at the same point). A zero budget means the device's
  /// free memory now plus what is already allocated on it (CUDA: the caching allocator's allocated bytes; CPU:
  /// the resident shards). Throws ConfigError naming the PlacementOptions member for a policy outside
  /// PlacementPolicyKind or a fraction outside [0, 1], zerodiff::Error for a negative budget, BudgetError when the
  /// budget is below what is resident from the start (the kept-gathered chunks, the static placement).
  GeminiManager(ChunkManager& chunks, c10::Device device, PlacementOptions options, int64_t optim_block_bytes = 16,
                dist::ProcessGroup* group = nullptr);
  ~GeminiManager();

  const PlacementOptions& options() const { return options_; }
  int64_t budget() const { return budget_; }
  Tier shard_tier(size_t chunk) const { return shard_tier_.at(chunk); }
  Tier optim_tier(size_t chunk) const { return optim_tier_.at(chunk); }

  // ---------------------------------------------------------------- the step's schedule

  /// Starts the warm-up trace (the first training step). No-op after the warm-up.
  void begin_warmup();
  bool warming_up() const { return tracer_->tracing(); }
  /// Ends the warm-up: `order` is the units' forward execution order (backward runs it in reverse). The
  /// non-model peak of each moment becomes the largest over the ranks (a collective with a group). The auto
  /// policy then places optimizer blocks: returns the chunks whose optimizer tier changed (the caller moves
  /// their blocks). No-op (empty) when not warming up.
  std::vector<size_t> end_warmup(const std::vector<size_t>& order);
  /// A unit is about to run (`phase`); `position` = its index in the forward order (npos when unknown).
  void on_event(size_t unit, Phase phase, size_t position);

  // ---------------------------------------------------------------- making room

  /// Makes room on the device for `bytes` more model data at the current moment, evicting device-tier parameter
  /// shards to the host (those of `keep` only as a last resort; a gathered chunk's shard may go, its gathered
  /// buffer stays) by the policy's victim rule — under the static policy too (an evicted shard then stays on
  /// the host). Throws BudgetError (with the numbers) when even evicting every shard does not make room.
  void reserve(int64_t bytes, const std::vector<size_t>& keep, const std::string& what);
  /// Whether `bytes` more fit now without evicting anything.
  bool fits(int64_t bytes) const;
  /// Before gathering `chunks` of the current unit: room for their gathered buffers (and for the device copy
  /// of host shards), evicting others if needed.
  void prepare_gather(const std::vector<size_t>& chunks, const std::string& unit);
  /// After a gather: the auto policy keeps a host shard on the device from now on when it fits.
  void after_gather(size_t chunk);
  /// Moves chunk c's parameter shard to `tier` (device or host), copying it for real. On CUDA the copy runs on a
  /// side stream (after the compute stream's pending work on the shard; the old buffer is kept until the copy
  /// ran); wait_shard() orders later use after it.
  void move_shard(size_t chunk, Tier tier);
  /// Before using chunk c's shard (gathering it, writing it): on CUDA the compute stream waits for the shard's
  /// last side-stream copy (and the host thread too when the shard is in host memory); a no-op on the CPU.
  void wait_shard(size_t chunk);
  /// Transient model data the strategy allocates (+, after reserve()ing room for it: `what` names it in a
  /// BudgetError) or frees (−) on the device (gradient reduce buffers).
  void add_transient(int64_t bytes, const std::string& what = "gradient reduce buffers");
  /// Records the current device bytes into the peaks (call after every allocation the strategy makes).
  void note();

  // ---------------------------------------------------------------- accounting

  /// Model data on the device now (see the file comment).
  int64_t device_model_bytes() const;
  /// Model data in host memory now (host-tier shards and optimizer blocks in memory; disk blocks excluded).
  int64_t host_model_bytes() const;
  /// Largest device_model_bytes() seen since reset_peaks(), and largest device_model_bytes() + the non-model
  /// estimate of the moment it was seen at, since the end of the warm-up step (during the warm-up the non-model
  /// part is known only as it happens, so model data is kept within budget − the non-model bytes live at each
  /// decision, and activations allocated later in the same moment can take the total above the budget).
  int64_t peak_device_model_bytes() const { return peak_model_; }
  int64_t peak_device_total_estimate() const { return peak_total_; }
  void reset_peaks();
  /// Non-model bytes allowed for the current moment: the warm-up peak of the moment (the live value during the
  /// warm-up).
  int64_t non_model_estimate() const;
  /// The warm-up's non-model peak of `moment` ("forward <unit>" / "backward <unit>"), agreed over the ranks; the
  /// largest of all moments for one never seen; 0 before the warm-up ended.
  int64_t non_model_peak(const std::string& moment) const;
  int64_t evictions() const { return evictions_; }
  int64_t bytes_to_host() const { return bytes_to_host_; }
  int64_t bytes_to_device() const { return bytes_to_device_; }
  const MemoryTracer& tracer() const { return *tracer_; }
  /// Optimizer block bytes of chunk c (on whichever tier).
  int64_t optim_block_bytes(size_t chunk) const;
  /// Room kept for gradient reduce buffers in flight during backward (three of the largest chunk's buffer and
  /// reduce-scatter output), added to a backward moment's working set when planning.
  int64_t backward_margin() const;
  /// One line: budget, tiers, peaks, evictions.
  std::string summary() const;

  static constexpr size_t npos = std::numeric_limits<size_t>::max();

 private:
  int64_t shard_bytes(size_t c) const;
  int64_t gathered_bytes(size_t c) const;
  int64_t limit() const;
  size_t pick_victim(const std::vector<size_t>& keep) const;
  size_t next_use(size_t chunk) const;
  [[noreturn]] void fail(int64_t bytes, const std::string& what) const;

  ChunkManager& chunks_;
  c10::Device device_;
  PlacementOptions options_;
  std::unique_ptr<detail::PlacementPolicy> policy_;  // made from options_.policy by the constructor
  int64_t optim_block_bytes_;
  int64_t budget_ = 0;
  std::vector<Tier> shard_tier_, optim_tier_;
  std::unique_ptr<MemoryTracer> tracer_;
  struct CudaCopies;                     // the side stream and per-chunk copy events (CUDA builds)
  std::unique_ptr<CudaCopies> cuda_;
  bool warmed_up_ = false;
  dist::ProcessGroup* group_ = nullptr;
  std::map<std::string, int64_t> peaks_;             // agreed non-model peak per moment (after the warm-up)
  int64_t max_peak_ = 0;
  std::vector<std::pair<size_t, Phase>> schedule_;  // forward order, then backward (reversed)
  size_t cursor_ = npos;                             // current index in schedule_
  std::string moment_;                               // "forward <unit>" / "backward <unit>"
  int64_t transient_ = 0;
  int64_t peak_model_ = 0, peak_total_ = 0;
  int64_t evictions_ = 0, bytes_to_host_ = 0, bytes_to_device_ = 0;
};

/// Free memory of `device` now, in bytes: cudaMemGetInfo's free bytes on CUDA, MemAvailable of /proc/meminfo
/// on the CPU. Throws zerodiff::Error when it cannot be read.
int64_t device_free_bytes(c10::Device device);

}  // namespace zerodiff::memory
