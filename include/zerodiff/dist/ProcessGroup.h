// zerodiff/dist/ProcessGroup.h — the process group every strategy talks through: PyTorch's own c10d
// (ProcessGroupGloo on CPU tensors, ProcessGroupNCCL on CUDA tensors) behind a small synchronous-or-async
// API that counts the bytes of every collective, plus the launch environment (torchrun, SLURM, or one
// process with no store at all).
//
// Design rules of this file:
//  * Collectives are called in the same order on every rank (c10d's contract); the strategies keep that
//    order deterministic (buckets launch strictly in index order).
//  * Every failure of a collective or of the rendezvous is rethrown as zerodiff::dist::CommError naming
//    the operation, its size, this rank and the timeout: a dead peer makes the survivors exit, not hang.
//  * Byte counters are per tag ("grad_all_reduce", "param_all_gather", ...): the payload of the call
//    (all-reduce: the tensor; reduce-scatter: the full input; all-gather: the full output; broadcast: the
//    tensor), counted on every rank, so communication volume is checked against the ZeRO formulas.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "zerodiff/core/Error.h"

namespace zerodiff::dist {

/// A collective failed (peer died, timeout, store unreachable) or the launch environment is incomplete.
class CommError : public Error {
 public:
  using Error::Error;
};

/// Where this process sits in the job, read from the launcher's environment.
struct LaunchEnv {
  int rank = 0;              ///< global rank in [0, world_size)
  int world_size = 1;        ///< number of processes
  int local_rank = 0;        ///< rank on this node (selects the CUDA device)
  int local_world_size = 1;  ///< processes on this node
  std::string master_addr;   ///< host of the rendezvous store (rank 0 serves it)
  int master_port = 0;       ///< its TCP port
  std::string source = "single";  ///< "torchrun", "slurm" or "single"
  /// torchrun's agent already serves the store on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True): every rank
  /// connects as a client, under the prefix "/worker/attempt_<TORCHELASTIC_RESTART_COUNT>" as torch does.
  bool use_agent_store = false;
  int restart_count = 0;

  /// torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) when
  /// RANK or WORLD_SIZE is set (LOCAL_RANK may be missing when WORLD_SIZE is 1); else, for a task of an srun
  /// step with SLURM_STEP_NUM_TASKS > 1, SLURM's (SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
  /// SLURM_NTASKS_PER_NODE or SLURM_TASKS_PER_NODE, MASTER_ADDR or the first host of SLURM_JOB_NODELIST /
  /// SLURM_NODELIST, MASTER_PORT or 29500); else one process.
  /// Throws CommError naming the missing or malformed variable.
  static LaunchEnv from_environment();
};

/// First host name of a SLURM node list: "node[03-05,7],gpu2" -> "node03"; "a,b" -> "a". Throws CommError
/// on an empty or malformed list.
std::string first_slurm_host(const std::string& nodelist);

/// Bytes and calls of one tag.
struct CommStats {
  int64_t calls = 0;
  int64_t bytes = 0;
};

enum class ReduceOp { sum, max, min };

/// A collective in flight. wait() blocks until it is done; a failure is rethrown as CommError.
class Work {
 public:
  struct Impl;
  Work() = default;
  explicit Work(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  /// Blocks until done (no-op for a finished or empty Work). Throws CommError on failure.
  void wait();
  bool pending() const { return impl_ != nullptr; }

 private:
  std::shared_ptr<Impl> impl_;
};

struct ProcessGroupOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};  ///< rendezvous and every collective
};

/// A group of `size()` processes. Single-process groups (size 1) need no store; their collectives are
/// identities (nothing moves, nothing is counted).
class ProcessGroup {
 public:
  /// One process, no store.
  static std::shared_ptr<ProcessGroup> single();
  /// Connects to the rendezvous store of `env` (rank 0 serves it) and builds the c10d backend for `device`:
  /// Gloo for CPU, NCCL for CUDA (throws NotImplementedError when this build has no NCCL). size 1 = single().
  /// Throws CommError naming MASTER_ADDR:MASTER_PORT when the store is unreachable within the timeout.
  static std::shared_ptr<ProcessGroup> create(const LaunchEnv& env, c10::Device device, ProcessGroupOptions options = {});

  ~ProcessGroup();

  int rank() const { return rank_; }
  int size() const { return size_; }
  c10::Device device() const { return device_; }
  std::chrono::milliseconds timeout() const { return options_.timeout; }
  /// "gloo", "nccl" or "none".
  std::string backend_name() const;

  /// In-place reduction of `tensor` over ranks. async: returns the Work in flight (wait before reading).
  Work all_reduce(at::Tensor& tensor, const std::string& tag, ReduceOp op = ReduceOp::sum, bool async = false);
  /// output [size() * n] <- concatenation of every rank's input [n] (contiguous, same dtype).
  Work all_gather(at::Tensor& output, const at::Tensor& input, const std::string& tag, bool async = false);
  /// output [n] <- sum over ranks of input[rank * n, (rank + 1) * n) (input [size() * n], contiguous).
  Work reduce_scatter(at::Tensor& output, const at::Tensor& input, const std::string& tag, bool async = false);
  /// tensor <- root's tensor.
  void broadcast(at::Tensor& tensor, int root, const std::string& tag);
  void barrier();
  /// True when `flag` is true on every rank (one small all-reduce).
  bool all_true(bool flag, const std::string& tag = "control");
  /// True when `flag` is true on any rank.
  bool any_true(bool flag, const std::string& tag = "control");

  /// Counters per tag since construction or the last reset.
  std::map<std::string, CommStats> stats() const { return stats_; }
  /// Bytes of every tag whose name starts with `prefix` ("" = all).
  int64_t bytes(const std::string& prefix = "") const;
  void reset_stats() { stats_.clear(); }

 private:
  ProcessGroup() = default;
  struct Impl;
  void count(const std::string& tag, const at::Tensor& t);

  int rank_ = 0;
  int size_ = 1;
  c10::Device device_ = c10::kCPU;
  ProcessGroupOptions options_;
  std::unique_ptr<Impl> impl_;  // the c10d store and backend (none for size 1)
  std::map<std::string, CommStats> stats_;
};

}  // namespace zerodiff::dist
