// c10d behind zerodiff::dist::ProcessGroup. References: torch.distributed's init_process_group (env:// and
// TCPStore rendezvous, Gloo device selection by GLOO_SOCKET_IFNAME / hostname), torchrun's environment
// variables, and SLURM's (as Lightning's SLURMEnvironment reads them).
#include "zerodiff/dist/ProcessGroup.h"

// ProcessGroupGloo.hpp declares its class only under USE_C10D_GLOO (LibTorch is built with it; the Gloo headers
// come from Debian's libgloo-dev: only opaque gloo pointers cross this file's boundary).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <cctype>
#include <cstdlib>
#include <sstream>

#include "Backends.h"

namespace zerodiff::dist {

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, const std::string& launcher) {
  const auto v = env(name);
  if (!v) throw CommError(zerodiff::str("environment variable ", name, " is not set (needed for a ", launcher, " launch)"));
  try {
    size_t used = 0;
    const int out = std::stoi(*v, &used);
    if (used != v->size() || out < 0) throw std::invalid_argument(*v);
    return out;
  } catch (const std::exception&) {
    throw CommError(zerodiff::str("environment variable ", name, "='", *v, "' is not a non-negative integer"));
  }
}

std::string human_bytes(int64_t bytes) {
  std::ostringstream os;
  if (bytes >= (1 << 20)) {
    os << static_cast<double>(bytes) / (1 << 20) << " MiB";
  } else {
    os << bytes << " B";
  }
  return os.str();
}

// c10::Error's what() carries a C++ backtrace; users get the message only.
std::string message_of(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return c10d::ReduceOp::SUM;
    case ReduceOp::max: return c10d::ReduceOp::MAX;
    case ReduceOp::min: return c10d::ReduceOp::MIN;
  }
  return c10d::ReduceOp::SUM;
}

}  // namespace

// ------------------------------------------------------------------ launch environment

std::string first_slurm_host(const std::string& nodelist) {
  if (nodelist.empty()) throw CommError("SLURM node list is empty");
  // The first entry ends at the first comma outside brackets.
  std::string first;
  int depth = 0;
  for (char c : nodelist) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) break;
    first += c;
  }
  const auto open = first.find('[');
  if (open == std::string::npos) {
    if (first.empty()) throw CommError(zerodiff::str("malformed SLURM node list '", nodelist, "'"));
    return first;
  }
  const auto close = first.find(']', open);
  if (close == std::string::npos || close == open + 1) {
    throw CommError(zerodiff::str("malformed SLURM node list '", nodelist, "'"));
  }
  // First number of the range list inside the brackets, zero padding kept: "03-05,7" -> "03".
  std::string range = first.substr(open + 1, close - open - 1);
  std::string number;
  for (char c : range) {
    if (!std::isdigit(static_cast<unsigned char>(c))) break;
    number += c;
  }
  if (number.empty()) throw CommError(zerodiff::str("malformed SLURM node list '", nodelist, "'"));
  return first.substr(0, open) + number + first.substr(close + 1);
}

LaunchEnv LaunchEnv::from_environment() {
  LaunchEnv out;
  if (env("RANK") || env("WORLD_SIZE")) {
    const std::string l = "torchrun";
    out.source = l;
    out.rank = env_int("RANK", l);
    out.world_size = env_int("WORLD_SIZE", l);
    // LOCAL_RANK: torchrun always sets it; a one-process "world" (e.g. a job started under another launcher)
    // may not.
    out.local_rank = env("LOCAL_RANK") || out.world_size > 1 ? env_int("LOCAL_RANK", l) : 0;
    out.local_world_size = env("LOCAL_WORLD_SIZE") ? env_int("LOCAL_WORLD_SIZE", l) : out.world_size;
    const auto addr = env("MASTER_ADDR");
    if (!addr) throw CommError("environment variable MASTER_ADDR is not set (needed for a torchrun launch)");
    out.master_addr = *addr;
    out.master_port = env_int("MASTER_PORT", l);
    out.use_agent_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
    if (env("TORCHELASTIC_RESTART_COUNT")) out.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", l);
  } else if (env("SLURM_PROCID") && env("SLURM_STEP_NUM_TASKS") && env_int("SLURM_STEP_NUM_TASKS", "SLURM") > 1) {
    // A task of an srun step (SLURM_STEP_NUM_TASKS is srun's); the batch script itself (sbatch --ntasks=N,
    // no srun) is one process.
    const std::string l = "SLURM";
    out.source = "slurm";
    out.rank = env_int("SLURM_PROCID", l);
    out.world_size = env_int("SLURM_STEP_NUM_TASKS", l);
    out.local_rank = env_int("SLURM_LOCALID", l);
    if (env("SLURM_NTASKS_PER_NODE")) {
      out.local_world_size = env_int("SLURM_NTASKS_PER_NODE", l);
    } else if (const auto tpn = env("SLURM_TASKS_PER_NODE")) {
      out.local_world_size = std::max(1, std::atoi(tpn->c_str()));  // "4(x2)" -> 4
    }
    if (const auto addr = env("MASTER_ADDR")) {
      out.master_addr = *addr;
    } else if (const auto nodes = env("SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST")) {
      out.master_addr = first_slurm_host(*nodes);
    } else {
      throw CommError("neither MASTER_ADDR nor SLURM_JOB_NODELIST is set (needed for a SLURM launch)");
    }
    out.master_port = env("MASTER_PORT") ? env_int("MASTER_PORT", l) : 29500;
  }
  if (out.world_size < 1) throw CommError(zerodiff::str("world size must be >= 1, got ", out.world_size));
  if (out.rank >= out.world_size) {
    throw CommError(zerodiff::str("rank ", out.rank, " is outside the world of ", out.world_size, " processes"));
  }
  if (out.master_port > 65535) throw CommError(zerodiff::str("MASTER_PORT ", out.master_port, " is not a TCP port"));
  return out;
}

// ------------------------------------------------------------------ Work

struct Work::Impl {
  c10::intrusive_ptr<c10d::Work> work;
  std::string what;
  std::chrono::milliseconds timeout{0};
  std::function<void()> on_done;
  bool done = false;
};

void Work::wait() {
  if (!impl_ || impl_->done) return;
  impl_->done = true;
  try {
    if (impl_->work) impl_->work->wait(impl_->timeout);
  } catch (const std::exception& e) {
    throw CommError(zerodiff::str(impl_->what, " failed: ", message_of(e),
                                  "\n(a peer process probably died or stopped responding; collective timeout ",
                                  impl_->timeout.count() / 1000.0, " s)"));
  }
  if (impl_->on_done) impl_->on_done();
}

// ------------------------------------------------------------------ ProcessGroup

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::string name = "none";  // backend name, for logs
  bool nccl = false;          // NCCL needs CUDA tensors
};

ProcessGroup::~ProcessGroup() = default;

std::shared_ptr<ProcessGroup> ProcessGroup::single() {
  return std::shared_ptr<ProcessGroup>(new ProcessGroup());
}

std::shared_ptr<ProcessGroup> ProcessGroup::create(const LaunchEnv& env, c10::Device device, ProcessGroupOptions options) {
  if (env.world_size == 1) {
    auto pg = single();
    pg->device_ = device;
    pg->options_ = options;
    return pg;
  }
  std::shared_ptr<ProcessGroup> pg(new ProcessGroup());
  pg->rank_ = env.rank;
  pg->size_ = env.world_size;
  pg->device_ = device;
  pg->options_ = options;
  pg->impl_ = std::make_unique<Impl>();
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(env.master_port);
  store_options.isServer = env.rank == 0 && !env.use_agent_store;
  store_options.numWorkers = env.world_size;
  store_options.waitWorkers = true;
  store_options.timeout = options.timeout;
  try {
    c10::intrusive_ptr<c10d::Store> tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    pg->impl_->store = tcp;
    if (env.use_agent_store) {
      pg->impl_->store = c10::make_intrusive<c10d::PrefixStore>(zerodiff::str("/worker/attempt_", env.restart_count), tcp);
    }
  } catch (const std::exception& e) {
    throw CommError(zerodiff::str("rank ", env.rank, "/", env.world_size, ": cannot ",
                                  store_options.isServer ? "serve" : "reach", " the rendezvous store at ", env.master_addr, ":",
                                  env.master_port, " (MASTER_ADDR:MASTER_PORT) within ", options.timeout.count() / 1000.0,
                                  " s: ", message_of(e)));
  }
  try {
    if (device.is_cuda()) {
      pg->impl_->backend = detail::make_nccl_backend(pg->impl_->store, env.rank, env.world_size, options.timeout);
      pg->impl_->name = "nccl";
      pg->impl_->nccl = true;
    } else {
      auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      pg->impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(pg->impl_->store, env.rank, env.world_size, gloo);
      pg->impl_->name = "gloo";
    }
  } catch (const NotImplementedError&) {
    throw;
  } catch (const std::exception& e) {
    throw CommError(zerodiff::str("rank ", env.rank, "/", env.world_size, ": cannot connect the ",
                                  device.is_cuda() ? "NCCL" : "Gloo", " process group (store ", env.master_addr, ":",
                                  env.master_port, ", timeout ", options.timeout.count() / 1000.0, " s): ", message_of(e)));
  }
  return pg;
}

std::string ProcessGroup::backend_name() const { return impl_ ? impl_->name : "none"; }

void ProcessGroup::count(const std::string& tag, const at::Tensor& t) {
  auto& s = stats_[tag];
  s.calls += 1;
  s.bytes += static_cast<int64_t>(t.numel()) * static_cast<int64_t>(t.element_size());
}

int64_t ProcessGroup::bytes(const std::string& prefix) const {
  int64_t total = 0;
  for (const auto& [tag, s] : stats_) {
    if (tag.rfind(prefix, 0) == 0) total += s.bytes;
  }
  return total;
}

namespace {

Work make_work(c10::intrusive_ptr<c10d::Work> w, std::string what, std::chrono::milliseconds timeout, bool async,
               std::function<void()> on_done = {}) {
  auto impl = std::make_shared<Work::Impl>();
  impl->work = std::move(w);
  impl->what = std::move(what);
  impl->timeout = timeout;
  impl->on_done = std::move(on_done);
  Work work(impl);
  if (!async) {
    work.wait();
    return Work();
  }
  return work;
}

// Starts a collective through `fn`; a failure to start or to finish is a CommError naming `what`.
Work start(const std::string& what, std::chrono::milliseconds timeout, bool async,
           const std::function<c10::intrusive_ptr<c10d::Work>()>& fn) {
  c10::intrusive_ptr<c10d::Work> w;
  try {
    w = fn();
  } catch (const std::exception& e) {
    throw CommError(zerodiff::str(what, " failed to start: ", message_of(e)));
  }
  return make_work(std::move(w), what, timeout, async);
}

std::string describe(const char* op, const at::Tensor& t, int rank, int size, const std::string& tag) {
  return zerodiff::str(op, " '", tag, "' of ", human_bytes(static_cast<int64_t>(t.numel()) * t.element_size()),
                       " on rank ", rank, "/", size);
}

}  // namespace

Work ProcessGroup::all_reduce(at::Tensor& tensor, const std::string& tag, ReduceOp op, bool async) {
  if (size_ == 1) return Work();
  if (impl_->nccl && !tensor.is_cuda()) {
    // NCCL moves device memory only: small host tensors (metrics, flags) go through the device.
    at::Tensor staged = tensor.to(device_);
    all_reduce(staged, tag, op, /*async=*/false);
    tensor.copy_(staged);
    return Work();
  }
  ZD_CHECK(tensor.is_contiguous(), "all_reduce '", tag, "': tensor must be contiguous");
  count(tag, tensor);
  std::vector<at::Tensor> list{tensor};
  c10d::AllreduceOptions o;
  o.reduceOp = to_c10d(op);
  o.timeout = options_.timeout;
  const std::string what = describe("all_reduce", tensor, rank_, size_, tag);
  return start(what, options_.timeout, async, [&] { return impl_->backend->allreduce(list, o); });
}

Work ProcessGroup::all_gather(at::Tensor& output, const at::Tensor& input, const std::string& tag, bool async) {
  if (size_ == 1) {
    output.copy_(input);
    return Work();
  }
  ZD_CHECK(output.is_contiguous() && input.is_contiguous(), "all_gather '", tag, "': tensors must be contiguous");
  ZD_CHECK(output.numel() == input.numel() * size_, "all_gather '", tag, "': output has ", output.numel(),
           " elements, expected ", size_, " x ", input.numel());
  count(tag, output);
  c10d::AllgatherOptions o;
  o.timeout = options_.timeout;
  at::Tensor in = input;
  const std::string what = describe("all_gather", output, rank_, size_, tag);
  return start(what, options_.timeout, async, [&] { return impl_->backend->_allgather_base(output, in, o); });
}

Work ProcessGroup::reduce_scatter(at::Tensor& output, const at::Tensor& input, const std::string& tag, bool async) {
  if (size_ == 1) {
    output.copy_(input);
    return Work();
  }
  ZD_CHECK(output.is_contiguous() && input.is_contiguous(), "reduce_scatter '", tag, "': tensors must be contiguous");
  ZD_CHECK(input.numel() == output.numel() * size_, "reduce_scatter '", tag, "': input has ", input.numel(),
           " elements, expected ", size_, " x ", output.numel());
  count(tag, input);
  c10d::ReduceScatterOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = options_.timeout;
  at::Tensor in = input;
  const std::string what = describe("reduce_scatter", input, rank_, size_, tag);
  return start(what, options_.timeout, async, [&] { return impl_->backend->_reduce_scatter_base(output, in, o); });
}

void ProcessGroup::broadcast(at::Tensor& tensor, int root, const std::string& tag) {
  if (size_ == 1) return;
  if (impl_->nccl && !tensor.is_cuda()) {
    at::Tensor staged = tensor.to(device_);
    broadcast(staged, root, tag);
    tensor.copy_(staged);
    return;
  }
  ZD_CHECK(root >= 0 && root < size_, "broadcast '", tag, "': root ", root, " outside [0, ", size_, ")");
  ZD_CHECK(tensor.is_contiguous(), "broadcast '", tag, "': tensor must be contiguous");
  count(tag, tensor);
  std::vector<at::Tensor> list{tensor};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.timeout = options_.timeout;
  const std::string what = describe("broadcast", tensor, rank_, size_, tag);
  start(what, options_.timeout, false, [&] { return impl_->backend->broadcast(list, o); });
}

void ProcessGroup::barrier() {
  if (size_ == 1) return;
  // A one-element all-reduce: the same ordering guarantees as any collective, and no device selection issues.
  at::Tensor t = at::zeros({1}, at::TensorOptions().device(device_));
  all_reduce(t, "barrier");
}

bool ProcessGroup::all_true(bool flag, const std::string& tag) {
  if (size_ == 1) return flag;
  at::Tensor t = at::full({1}, flag ? 1 : 0, at::TensorOptions().dtype(at::kInt).device(device_));
  all_reduce(t, tag, ReduceOp::min);
  return t.item<int>() == 1;
}

bool ProcessGroup::any_true(bool flag, const std::string& tag) {
  if (size_ == 1) return flag;
  at::Tensor t = at::full({1}, flag ? 1 : 0, at::TensorOptions().dtype(at::kInt).device(device_));
  all_reduce(t, tag, ReduceOp::max);
  return t.item<int>() == 1;
}

}  // namespace zerodiff::dist
