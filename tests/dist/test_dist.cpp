// Multi-process tests on loopback with Gloo (label dist). Each test launches 2 or 3 copies of this binary
// (fork + exec of /proc/self/exe with torchrun's variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT and ZD_DIST_SCENARIO); a copy with ZD_DIST_SCENARIO set runs that scenario as one rank and
// exits with 0 (pass), 1 (a check failed: the message is on stderr) or another code the test expects.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/data/DataLoader.h"
#include "zerodiff/data/SyntheticShapesDataset.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/Safetensors.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/nn/Autocast.h"
#include "zerodiff/optim/GradScaler.h"
#include "zerodiff/parallel/ChunkedStrategy.h"
#include "zerodiff/parallel/FlatLayout.h"
#include "zerodiff/parallel/Strategy.h"
#include "zerodiff/train/EMA.h"
#include "zerodiff/train/Trainer.h"

namespace fs = std::filesystem;
namespace zdist = zerodiff::dist;
namespace zp = zerodiff::parallel;

namespace {

// ------------------------------------------------------------------ launcher (parent side)

struct RankRun {
  int exit_code = -1;  // -1: killed after the deadline
  std::string output;  // stdout + stderr
};

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

// Runs `world` ranks of `scenario`; kills everything still running after `deadline_s`.
// With stop_others, the remaining ranks are killed as soon as rank 0 exits (as torchrun stops a job).
std::vector<RankRun> launch(int world, const std::string& scenario, double deadline_s = 240,
                            const std::map<std::string, std::string>& extra = {}, bool stop_others = false) {
  const std::string port = std::to_string(free_port());
  const fs::path logs = fs::path(testing::TempDir()) / "zd_dist_logs";
  fs::create_directories(logs);
  std::vector<pid_t> pids;
  std::vector<std::string> files;
  for (int r = 0; r < world; ++r) {
    std::map<std::string, std::string> env{{"RANK", std::to_string(r)},
                                           {"WORLD_SIZE", std::to_string(world)},
                                           {"LOCAL_RANK", std::to_string(r)},
                                           {"LOCAL_WORLD_SIZE", std::to_string(world)},
                                           {"MASTER_ADDR", "127.0.0.1"},
                                           {"MASTER_PORT", port},
                                           {"ZD_DIST_SCENARIO", scenario},
                                           {"OMP_NUM_THREADS", "1"}};
    for (const auto& [k, v] : extra) env[k] = v;
    std::vector<std::string> strings;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv(*e);
      if (!env.count(kv.substr(0, kv.find('=')))) strings.push_back(kv);
    }
    for (const auto& [k, v] : env) strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    const std::string file = (logs / (scenario + "." + std::to_string(r) + ".log")).string();
    files.push_back(file);
    std::string self = fs::read_symlink("/proc/self/exe").string();
    char* argv[] = {self.data(), nullptr};
    const pid_t pid = ::fork();
    if (pid == 0) {
      FILE* out = std::fopen(file.c_str(), "w");
      if (out != nullptr) {
        ::dup2(fileno(out), STDOUT_FILENO);
        ::dup2(fileno(out), STDERR_FILENO);
      }
      ::execve(argv[0], argv, envp.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<RankRun> runs(world);
  std::vector<bool> done(world, false);
  const auto t0 = std::chrono::steady_clock::now();
  int remaining = world;
  while (remaining > 0) {
    for (int r = 0; r < world; ++r) {
      if (done[r]) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        done[r] = true;
        --remaining;
        runs[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
    }
    if ((stop_others && done[0]) ||
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > deadline_s) {
      for (int r = 0; r < world; ++r) {
        if (!done[r]) {
          ::kill(pids[r], SIGKILL);
          ::waitpid(pids[r], nullptr, 0);
          runs[r].exit_code = -1;
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int r = 0; r < world; ++r) {
    std::ifstream in(files[r]);
    std::stringstream ss;
    ss << in.rdbuf();
    runs[r].output = ss.str();
  }
  return runs;
}

void expect_all_pass(const std::vector<RankRun>& runs) {
  for (size_t r = 0; r < runs.size(); ++r) {
    EXPECT_EQ(runs[r].exit_code, 0) << "rank " << r << " output:\n" << runs[r].output;
  }
}

// ------------------------------------------------------------------ scenarios (rank side)

// zero3 / gemini expose their chunks and gemini's placement through their own type (null for the other strategies).
const zerodiff::memory::ChunkManager* chunks_of(const zp::Strategy& s) {
  const auto* chunked = dynamic_cast<const zp::ChunkedStrategy*>(&s);
  return chunked != nullptr ? &chunked->chunks() : nullptr;
}
const zerodiff::memory::GeminiManager* placement_of(const zp::Strategy& s) {
  const auto* chunked = dynamic_cast<const zp::ChunkedStrategy*>(&s);
  return chunked != nullptr ? chunked->placement() : nullptr;
}

#define WCHECK(cond, ...)                                                                            \
  do {                                                                                                \
    if (!(cond)) {                                                                                    \
      std::cerr << "CHECK FAILED (" #cond "): " << zerodiff::str(__VA_ARGS__) << std::endl;          \
      std::exit(1);                                                                                   \
    }                                                                                                 \
  } while (0)

// The tiny SD-1-style UNet, plus a tied head (one Linear registered under two names and applied twice) and an
// unused branch (trainable parameters no forward touches: a frozen-by-disuse branch must not hang).
struct TinyNet : torch::nn::Module {
  TinyNet() {
    auto config = zerodiff::io::read_config_json(std::string(ZERODIFF_TEST_DATA_DIR) + "/parity/unet_sd1_tiny");
    unet = register_module("unet", zerodiff::models::UNet2DConditionModel(
                                       zerodiff::models::UNet2DConditionOptions::from_json(config)));
    head = register_module("head", torch::nn::Linear(4, 4));
    register_module("head_tied", head);
    unused = register_module("unused", torch::nn::Linear(3, 2));
  }
  // The head is one unit called twice (zero3: the unit-called-twice case).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& ctx) {
    auto y = unet->forward(x, t, ctx).permute({0, 2, 3, 1});
    y = zp::run_unit(hooks, head_unit, [&] { return head(y); });
    y = torch::silu(y);
    y = zp::run_unit(hooks, head_unit, [&] { return head(y); });
    return y.permute({0, 3, 1, 2});
  }
  // zero3 units in execution order: the UNet's, then "head" (registered twice: tied), then "unused".
  std::vector<zp::UnitSpec> units() {
    std::vector<zp::UnitSpec> out;
    for (const auto& u : unet->units()) {
      zp::UnitSpec spec{u.name, {}};
      for (auto& p : u.module->named_parameters(true)) spec.params.emplace_back(p.key(), p.value());
      out.push_back(std::move(spec));
    }
    head_unit = out.size();
    out.push_back({"head", {{"weight", head->weight}, {"bias", head->bias}}});
    out.push_back({"head_tied", {{"weight", head->weight}, {"bias", head->bias}}});  // same tensors again
    out.push_back({"unused", {{"weight", unused->weight}, {"bias", unused->bias}}});
    return out;
  }
  void set_hooks(zp::UnitHooks* h) {
    hooks = h;
    unet->set_unit_hooks(h, 0);
  }
  zp::UnitHooks* hooks = nullptr;
  size_t head_unit = 0;
  // Trainable parameters, a tied tensor once (as TrainingModule::trainable_parameters lists them).
  std::vector<std::pair<std::string, at::Tensor>> trainable() {
    std::vector<std::pair<std::string, at::Tensor>> out;
    std::set<const void*> seen;
    for (auto& p : named_parameters(true)) {
      if (seen.insert(p.value().unsafeGetTensorImpl()).second) out.emplace_back(p.key(), p.value());
    }
    return out;
  }
  zerodiff::models::UNet2DConditionModel unet{nullptr};
  torch::nn::Linear head{nullptr}, unused{nullptr};
};

constexpr int64_t kGlobalBatch = 12;  // divisible by every world size x accumulation tested

struct GlobalBatch {
  at::Tensor x, t, ctx, target;
};

GlobalBatch batch_for_step(int64_t step, int64_t cross_dim) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
  GlobalBatch b;
  b.x = at::randn({kGlobalBatch, 4, 16, 16}, gen);
  b.t = at::randint(0, 1000, {kGlobalBatch}, gen);
  b.ctx = at::randn({kGlobalBatch, 7, cross_dim}, gen);
  b.target = at::randn({kGlobalBatch, 4, 16, 16}, gen);
  return b;
}

struct TrainResult {
  std::map<std::string, at::Tensor> params;
  std::vector<double> norms;  // gradient norm of each step before clipping
  std::map<std::string, zdist::CommStats> stats;
  zp::MemoryReport memory;
  // gemini: peak model data on the device over the five steps, evictions, and the manager's summary line
  int64_t gemini_peak = 0, gemini_total = 0, gemini_evictions = 0, gemini_non_model = 0;
  std::string gemini_summary;
  // With an EMA: the strategy's (sharded: gathered on rank 0) and train::EMA over the whole parameters of the same run
  // (sharded: gathered after every step), by parameter name; equal for single.
  std::map<std::string, at::Tensor> ema, ema_ref;
};

// `steps` AdamW steps of `strategy` on rows [rank*G/N, (rank+1)*G/N) of each global batch, in `accum`
// micro-batches; the loss is the per-rank mean, so the rank average is the global-batch mean.
// bf16_true: the parameters are cast to bfloat16 and the forward runs under bfloat16 autocast (the Trainer's
// precision bf16-true; the strategy must then be built with master_dtype bfloat16).
// ema: keep an EMA with these options: the strategy's sharded one (built with StrategyOptions::ema), checked against
// train::EMA updated on the gathered parameters after every step; train::EMA alone for the other strategies.
TrainResult train_tiny(zp::Strategy& strategy, int steps, int accum, bool perturb, bool checkpointing = false,
                       bool bf16_true = false, const zerodiff::train::EMAOptions* ema = nullptr) {
  const int rank = strategy.group().rank(), world = strategy.group().size();
  torch::manual_seed(0);
  TinyNet net;
  net.unet->enable_gradient_checkpointing(checkpointing);  // zero3: the recomputation needs gathered chunks
  if (bf16_true) net.to(at::kBFloat16);
  std::optional<zerodiff::nn::AutocastScope> autocast;
  if (bf16_true) autocast.emplace(at::kCPU, at::kBFloat16);
  if (perturb && rank != 0) {
    torch::NoGradGuard g;
    for (auto& p : net.parameters()) p.add_(0.5);  // setup's broadcast must undo this
  }
  // lr 1e-4: five steps move parameters by ~5e-4, 50x the tolerance. (With AdamW's eps 1e-8, an element whose
  // gradient is ~1e-8 turns a 1e-7 relative difference of summation order into a sizeable step difference;
  // that noise scales with lr.)
  strategy.set_units(net.units());
  strategy.setup({zp::ParamGroupSpec{"all", net.trainable(), 1e-4}}, [&] {
    std::vector<at::Tensor> all;
    for (auto& p : net.parameters()) all.push_back(p);
    for (auto& b : net.buffers()) all.push_back(b);
    return all;
  }(), zp::AdamWSettings{0.9, 0.999, 1e-8, 1e-2});
  net.set_hooks(strategy.unit_hooks());
  std::optional<zerodiff::train::EMA> ref_ema;
  if (ema) {
    strategy.gather_full_parameters();  // zero3: whole parameters to snapshot (no-op for the others)
    ref_ema.emplace(net, *ema);
    strategy.release_full_parameters(false);
  }
  const int64_t per_rank = kGlobalBatch / world, per_micro = per_rank / accum;
  std::vector<double> norms;
  for (int s = 0; s < steps; ++s) {
    if (s == 1) strategy.group().reset_stats();  // communication is counted over steps 2..N (step 1 records zero3's order)
    const auto b = batch_for_step(s, net.unet->options.cross_attention_dim()[0]);
    strategy.zero_grad();
    for (int m = 0; m < accum; ++m) {
      const int64_t lo = rank * per_rank + m * per_micro, hi = lo + per_micro;
      const auto out = net.forward(b.x.slice(0, lo, hi), b.t.slice(0, lo, hi), b.ctx.slice(0, lo, hi));
      const auto loss = torch::mse_loss(out, b.target.slice(0, lo, hi)) / static_cast<double>(accum);
      strategy.begin_backward(m + 1 == accum);
      loss.backward();
      strategy.end_backward(m + 1 == accum);
    }
    // Clipping is active (norms are about 0.2): the global norm over ranks and shards must be right. Adam hides
    // a wrong gradient scale, so the norms are compared with the single-process run's too.
    norms.push_back(strategy.clip_grad_norm(0.05));
    if (ema && strategy.sharded_ema()) strategy.sharded_ema()->set_decay(zerodiff::train::ema_decay_at(*ema, s + 1));
    strategy.step();
    if (ref_ema) {
      strategy.gather_full_parameters();
      ref_ema->update(net, s + 1);
      strategy.release_full_parameters(false);
    }
  }
  TrainResult r;
  r.norms = norms;
  r.memory = strategy.memory();
  if (const auto* g = placement_of(strategy)) {  // (read before the whole-model gather below, which is outside the budget)
    r.gemini_peak = g->peak_device_model_bytes();
    r.gemini_total = g->peak_device_total_estimate();
    r.gemini_evictions = g->evictions();
    r.gemini_non_model = g->tracer().max_non_model_peak();
    r.gemini_summary = g->summary();
  }
  r.stats = strategy.group().stats();  // the training's traffic (before the gather for the comparison)
  strategy.gather_full_parameters();  // zero3: whole parameters to compare (no-op for the others)
  for (auto& p : net.named_parameters(true)) r.params[p.key()] = p.value().detach().clone();
  strategy.release_full_parameters(false);
  if (ref_ema) {
    for (const auto& [name, t] : ref_ema->shadow()) r.ema_ref[name] = t.clone();
    if (strategy.sharded_ema()) {
      std::map<const void*, at::Tensor> whole;
      for (auto& [p, t] : strategy.sharded_ema()->gather()) whole[p.unsafeGetTensorImpl()] = t;
      if (rank == 0) {
        for (auto& p : net.named_parameters(true)) {
          WCHECK(whole.count(p.value().unsafeGetTensorImpl()), "gather_ema has no entry for ", p.key());
          r.ema[p.key()] = whole.at(p.value().unsafeGetTensorImpl());
        }
      }
    } else {
      r.ema = r.ema_ref;
    }
  }
  net.set_hooks(nullptr);
  return r;
}

int scenario_parity(std::string strategy_name, int accum) {
  // "<strategy>+ckpt": the UNet's blocks recompute their activations in backward; "zero3+kept": units under
  // 30,000 elements (stem, head, head_tied, unused) stay gathered with all-reduced gradients.
  auto suffix = [&](const std::string& s) {
    if (strategy_name.size() <= s.size() || strategy_name.substr(strategy_name.size() - s.size()) != s) return false;
    strategy_name = strategy_name.substr(0, strategy_name.size() - s.size());
    return true;
  };
  const bool checkpointing = suffix("+ckpt");
  const bool kept = suffix("+kept");
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(60)});
  const int world = group->size();
  zp::StrategyOptions options;
  options.bucket_numel = 20000;  // several buckets, parameters straddling bucket boundaries
  options.chunk_numel = 80000;   // zero3: about ten chunks (the largest tensor has 73,728 elements)
  options.keep_gathered_numel = kept ? 30000 : 0;
  auto strategy = zp::make_strategy(strategy_name, group, options);
  group->reset_stats();
  constexpr int kSteps = 5;
  constexpr int kCounted = kSteps - 1;  // steps whose communication is counted
  const auto dist = train_tiny(*strategy, kSteps, accum, /*perturb=*/true, checkpointing);
  const auto& stats = dist.stats;
  // Reference: one process, the whole global batch at once.
  auto single = zp::make_strategy("single", zdist::ProcessGroup::single());
  const auto ref = train_tiny(*single, kSteps, 1, false, checkpointing);
  double max_diff = 0;
  std::string worst;
  for (const auto& [name, t] : ref.params) {
    const double d = (dist.params.at(name) - t).abs().max().item<double>();
    if (d > max_diff) worst = name;
    max_diff = std::max(max_diff, d);
  }
  std::cout << "largest difference in " << worst << std::endl;
  std::cout << strategy_name << " world " << world << " accum " << accum << ": max |param - single| = " << max_diff
            << std::endl;
  WCHECK(max_diff <= 1e-5, strategy_name, ": parameters differ from the single-process run by ", max_diff);
  double max_moved = 0;
  {
    torch::manual_seed(0);
    TinyNet init;
    for (auto& p : init.named_parameters(true)) {
      max_moved = std::max(max_moved, (ref.params.at(p.key()) - p.value()).abs().max().item<double>());
    }
  }
  std::cout << "  (the single-process run moved parameters by up to " << max_moved << ")" << std::endl;
  WCHECK(max_moved > 20 * 1e-5, "the reference run barely trained: ", max_moved);
  for (int s = 0; s < kSteps; ++s) {
    std::cout << "  step " << s + 1 << " gradient norm " << dist.norms[s] << " (single " << ref.norms[s] << ")" << std::endl;
    WCHECK(std::abs(dist.norms[s] - ref.norms[s]) <= 1e-5 * ref.norms[s], "gradient norm of step ", s + 1, ": ",
           dist.norms[s], " vs single ", ref.norms[s]);
  }
  // The unused branch had no gradient anywhere: untouched (no weight decay), as torch's AdamW leaves it.
  torch::manual_seed(0);
  TinyNet fresh;
  WCHECK(torch::equal(dist.params.at("unused.weight"), fresh.unused->weight), "the unused branch was updated");

  // Memory per rank vs ZeRO's formulas (Ψ trainable elements, N ranks): within 2 % plus padding.
  const auto& m = dist.memory;
  const auto f = zp::zero_memory_formula(kept ? "ddp" : strategy_name, m.numel, world);
  // Padding sits at the end of each bucket or chunk, so one rank may hold all of it: 12 B (master 4 + AdamW 8)
  // per padding element.
  const double pad_bytes = 12.0 * static_cast<double>(m.padded_numel - m.numel) + 16;
  auto close = [&](const char* what, int64_t got, int64_t want) {
    std::cout << "  " << what << ": " << got << " B (formula " << want << " B)" << std::endl;
    WCHECK(std::abs(static_cast<double>(got - want)) <= 0.02 * static_cast<double>(want) + pad_bytes, what, " ", got,
           " vs formula ", want);
  };
  if (!kept) {  // (kept units are whole on every rank: ZeRO's formulas do not apply to them)
    close("optimizer states", m.optimizer_states, f.optimizer_states);
    close("master weights", m.master_weights, f.master_weights);
    close("gradients", m.gradients, f.gradients);
    close("parameters", m.parameters, f.parameters);
  }

  if (const auto* chunks = chunks_of(*strategy)) {
    // Between steps only the shards are resident; during the step at most the shards plus the chunks of a
    // window of three consecutive units (the running one, the one prefetched, the one whose gradients are
    // still arriving).
    WCHECK(m.parameters == chunks->shard_bytes(), "resident parameter bytes between steps ", m.parameters,
           " != shard bytes ", chunks->shard_bytes());
    int64_t window = 0;
    for (size_t u = 0; u < chunks->num_units(); ++u) {
      std::set<size_t> cs;
      for (size_t v = u == 0 ? 0 : u - 1; v <= std::min(u + 1, chunks->num_units() - 1); ++v) {
        cs.insert(chunks->unit_chunks(v).begin(), chunks->unit_chunks(v).end());
      }
      int64_t b = 0;
      for (size_t c : cs) b += chunks->chunk(c).chunk_numel() * 4;
      window = std::max(window, b);
    }
    const int64_t all_gathered = chunks->shard_bytes() + m.padded_numel * 4;
    std::cout << "  zero3: " << chunks->num_chunks() << " chunks of " << chunks->chunk_numel()
              << " elements; resident between steps " << m.parameters << " B (shards), peak during the step "
              << m.peak_parameters << " B, bound " << chunks->shard_bytes() + window << " B (all gathered: "
              << all_gathered << " B)" << std::endl;
    WCHECK(m.peak_parameters <= chunks->shard_bytes() + window, "peak resident ", m.peak_parameters,
           " B exceeds shards + a three-unit window ", chunks->shard_bytes() + window);
    WCHECK(m.peak_parameters < all_gathered, "zero3 gathered everything at once");
  }
  // Communication volume per step (bytes of the payload on every rank) vs theory.
  auto bytes = [&](const std::string& tag) { return stats.count(tag) ? stats.at(tag).bytes : int64_t{0}; };
  const int64_t psi_bytes = 4 * m.padded_numel;  // padding < N elements
  const int64_t syncs = strategy_name == "zero2" ? accum : 1;  // zero2 reduce-scatters every micro-batch
  for (const auto& [tag, s] : stats) std::cout << "  comm " << tag << ": " << s.calls << " calls, " << s.bytes << " B" << std::endl;
  if (strategy_name == "ddp") {
    WCHECK(bytes("grad_all_reduce") == kCounted * psi_bytes, "ddp all-reduce moved ", bytes("grad_all_reduce"));
    WCHECK(bytes("param_all_gather") == 0 && bytes("grad_reduce_scatter") == 0, "ddp moved parameters or shards");
  } else if (strategy_name == "zero1") {
    WCHECK(bytes("grad_all_reduce") == kCounted * psi_bytes, "zero1 all-reduce moved ", bytes("grad_all_reduce"));
    WCHECK(bytes("param_all_gather") == kCounted * psi_bytes, "zero1 all-gather moved ", bytes("param_all_gather"));
  } else if (strategy_name == "zero3") {
    // Per micro-batch: every sharded chunk all-gathered in forward and again in backward, reduce-scattered once
    // (3Ψ); kept chunks are all-reduced only.
    int64_t kept_bytes = 0;
    const auto* chunks = chunks_of(*strategy);
    for (size_t c = 0; c < chunks->num_chunks(); ++c) {
      if (chunks->chunk(c).keep_gathered()) kept_bytes += chunks->chunk(c).chunk_numel() * 4;
    }
    WCHECK(kept == (kept_bytes > 0), "kept chunks: ", kept_bytes, " B");
    const int64_t sharded_bytes = psi_bytes - kept_bytes;
    WCHECK(bytes("param_all_gather") == 2 * kCounted * accum * sharded_bytes, "zero3 all-gather moved ",
           bytes("param_all_gather"), ", expected ", 2 * kCounted * accum * sharded_bytes);
    WCHECK(bytes("grad_reduce_scatter") == kCounted * accum * sharded_bytes, "zero3 reduce-scatter moved ",
           bytes("grad_reduce_scatter"));
    WCHECK(bytes("grad_all_reduce") == kCounted * accum * kept_bytes, "zero3 all-reduced ", bytes("grad_all_reduce"),
           ", expected ", kCounted * accum * kept_bytes);
  } else {
    WCHECK(bytes("grad_reduce_scatter") == kCounted * syncs * psi_bytes, "zero2 reduce-scatter moved ",
           bytes("grad_reduce_scatter"));
    WCHECK(bytes("param_all_gather") == kCounted * psi_bytes, "zero2 all-gather moved ", bytes("param_all_gather"));
    WCHECK(bytes("grad_all_reduce") == 0, "zero2 all-reduced gradients");
  }
  // Everything else is small control traffic: used-parameter flags and the norm.
  const int64_t control = bytes("grad_used_flags") + bytes("grad_norm");
  WCHECK(control < psi_bytes / 100, "control traffic ", control, " B is not small");
  return 0;
}

// A module for the Trainer: ToyNet-like conv net, noise from the run's (per-rank) generator.
struct ToyNet : torch::nn::Module {
  ToyNet() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 3, 3).padding(1)));
  }
  at::Tensor forward(const at::Tensor& x) { return conv2(torch::silu(conv1(x))); }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
};

struct ToyModule : zerodiff::train::TrainingModule {
  std::shared_ptr<ToyNet> net;
  void configure_model(const torch::Device& device) override {
    net = std::make_shared<ToyNet>();
    net->to(device);
  }
  torch::nn::Module& model() override { return *net; }
  zerodiff::train::StepOutput training_step(const zerodiff::data::Batch& batch, zerodiff::train::StepContext& ctx) override {
    auto noise = at::randn(batch.images.sizes(), ctx.generator) * 0.1;
    return {torch::mse_loss(net->forward(batch.images + noise), batch.images.flip(-1)), {}};
  }
};

int scenario_resume(const std::string& strategy_name) {
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(60)});
  zerodiff::log::init({.level = zerodiff::log::Level::warn, .rank = group->rank()});
  const fs::path root = fs::path(std::getenv("ZD_DIST_DIR"));
  auto config = [&](const std::string& name) {
    zerodiff::train::TrainerConfig c;
    c.output_dir = (root / name).string();
    c.max_steps = 6;
    c.accelerator = zerodiff::train::Accelerator::cpu;
    c.strategy = zerodiff::parse_enum<zerodiff::parallel::StrategyKind>(strategy_name, "strategy");
    c.optimizer.lr = 1e-2;
    c.lr_schedule.type = zerodiff::optim::LRScheduleType::cosine;
    c.ema.enabled = true;  // (zero3 / gemini: sharded, restored from the whole "ema" file)
    c.ema.decay = 0.9;
    c.gradient_accumulation_steps = 2;
    c.checkpoint_every = 2;
    c.bucket_size_mb = 0.001;  // a few hundred elements: several buckets
    return c;
  };
  auto loader = [&] {
    zerodiff::data::DataLoaderOptions o;
    o.batch_size = 2;
    o.num_workers = 1;
    o.seed = 5;
    o.image.resolution = 16;
    o.image.random_flip = true;
    o.rank = group->rank();
    o.world_size = group->size();
    return std::make_unique<zerodiff::data::DataLoader>(
        std::make_shared<zerodiff::data::SyntheticShapesDataset>(
            zerodiff::data::SyntheticShapesOptions{.size = 12, .image_size = 16, .seed = 3}),
        o);
  };
  {
    ToyModule m;
    auto l = loader();
    zerodiff::train::Trainer(config("a"), group).fit(m, *l);
  }
  {
    ToyModule m;
    auto l = loader();
    zerodiff::train::Trainer(config("b"), group).fit(m, *l, "", /*stop_at_step=*/3);
  }
  {
    ToyModule m;  // as a relaunched job
    auto l = loader();
    const auto r = zerodiff::train::Trainer(config("b"), group).fit(m, *l, "latest");
    WCHECK(r.steps == 6, "resumed run ended at step ", r.steps);
  }
  if (group->rank() == 0) {
    const auto ckpt = root / "b" / "checkpoints" / "checkpoint-6";
    WCHECK(fs::exists(ckpt / zerodiff::str("rng.rank-1-of-", group->size(), ".safetensors")), "no rank-1 rng file in ",
           ckpt.string());
    if (strategy_name != "ddp") {
      WCHECK(fs::exists(ckpt / zerodiff::str("optimizer.rank-", group->size() - 1, "-of-", group->size(), ".safetensors")),
             "no optimizer shard of the last rank in ", ckpt.string());
    }
    const auto a = zerodiff::io::load_safetensors((root / "a" / "final" / "model.safetensors").string());
    const auto b = zerodiff::io::load_safetensors((root / "b" / "final" / "model.safetensors").string());
    for (const auto& [name, t] : a) WCHECK(torch::equal(t, b.at(name)), name, " differs after the sharded resume");
    // The exported weights are the EMA's; the checkpointed EMA of both runs is the same too.
    const auto ea = zerodiff::io::load_safetensors((root / "a" / "checkpoints" / "checkpoint-6" / "ema.safetensors").string());
    const auto eb = zerodiff::io::load_safetensors((ckpt / "ema.safetensors").string());
    WCHECK(ea.size() == a.size() && eb.size() == a.size(), "EMA files hold ", ea.size(), " / ", eb.size(), " tensors, the model ",
           a.size());
    for (const auto& [name, t] : ea) {
      WCHECK(torch::equal(t, eb.at(name)), name, ": EMA differs after the sharded resume");
      WCHECK(torch::equal(t, a.at(name)), name, ": the export is not the EMA");
    }
    std::cout << strategy_name << ": resumed run equals the uninterrupted one (" << a.size() << " tensors)" << std::endl;
  }
  group->barrier();
  return 0;
}

// Sharded EMA (zero3 / gemini with StrategyOptions::ema) on the tiny UNet with its tied head and unused branch, five
// steps: the shards gathered on rank 0 equal, bit for bit, train::EMA updated on the whole parameters of the same run
// after every step; they equal the single-process run's EMA within 1e-6 (the EMA lags the weights by ~5e-5); each rank
// holds 4 bytes per (padded) trained element / world size of EMA.
int scenario_ema(const std::string& strategy_name) {
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(60)});
  const int world = group->size();
  zp::StrategyOptions options;
  options.chunk_numel = 80000;  // about ten chunks
  options.ema = true;
  auto strategy = zp::make_strategy(strategy_name, group, options);
  WCHECK(strategy->sharded_ema(), strategy_name, " built with options.ema keeps no sharded EMA");
  zerodiff::train::EMAOptions ema;
  ema.decay = 0.9;
  constexpr int kSteps = 5;
  const auto dist = train_tiny(*strategy, kSteps, 1, /*perturb=*/true, false, false, &ema);
  const int64_t want_bytes = 4 * dist.memory.padded_numel / world;
  std::cout << strategy_name << " world " << world << ": EMA held by this rank " << dist.memory.ema << " B (4 x "
            << dist.memory.padded_numel << " padded elements / " << world << " = " << want_bytes << " B)" << std::endl;
  WCHECK(dist.memory.ema == want_bytes, "EMA bytes on rank ", group->rank(), ": ", dist.memory.ema, ", expected ",
         want_bytes);
  if (group->rank() == 0) {
    WCHECK(dist.ema.size() == dist.ema_ref.size(), "EMA entries: ", dist.ema.size(), " vs ", dist.ema_ref.size());
    for (const auto& [name, t] : dist.ema_ref) {
      WCHECK(dist.ema.count(name) && torch::equal(dist.ema.at(name), t), name, ": the sharded EMA differs from "
             "train::EMA on the gathered parameters by ", (dist.ema.at(name) - t).abs().max().item<double>());
    }
    auto single = zp::make_strategy("single", zdist::ProcessGroup::single());
    const auto ref = train_tiny(*single, kSteps, 1, false, false, false, &ema);
    double max_diff = 0, max_lag = 0;
    for (const auto& [name, t] : ref.ema) {
      max_diff = std::max(max_diff, (dist.ema.at(name) - t).abs().max().item<double>());
      max_lag = std::max(max_lag, (t - ref.params.at(name)).abs().max().item<double>());
    }
    std::cout << "  sharded EMA equals train::EMA on the gathered parameters (" << dist.ema.size()
              << " tensors, bit for bit); max |EMA - single's EMA| = " << max_diff << "; single's EMA lags its weights by up to "
              << max_lag << std::endl;
    // (measured 1.3e-7: the parameters themselves differ by float rounding of the gradient reduction and norm)
    WCHECK(max_diff <= 1e-6, "the sharded EMA differs from the single-process run's by ", max_diff);
    WCHECK(max_lag > 20 * 1e-6, "the EMA barely differs from the weights (", max_lag, "): the test would not notice");
  }
  group->barrier();
  return 0;
}

// The Trainer on 2 ranks with the EMA on (decay 0.9, no clipping): zero3 and gemini (optimizer blocks, EMA included, on
// disk) checkpoint the same "ema" file and export the same EMA weights as zero2 on the same per-rank batches.
int scenario_ema_trainer() {
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(60)});
  zerodiff::log::init({.level = zerodiff::log::Level::warn, .rank = group->rank()});
  const fs::path root = fs::path(std::getenv("ZD_DIST_DIR"));
  auto run = [&](const std::string& strategy) {
    zerodiff::train::TrainerConfig c;
    c.output_dir = (root / strategy).string();
    c.max_steps = 6;
    c.accelerator = zerodiff::train::Accelerator::cpu;
    c.strategy = zerodiff::parse_enum<zerodiff::parallel::StrategyKind>(strategy, "strategy");
    c.optimizer.lr = 1e-2;
    c.lr_schedule.type = zerodiff::optim::LRScheduleType::cosine;
    c.ema.enabled = true;
    c.ema.decay = 0.9;
    c.max_grad_norm = 0;
    c.gradient_accumulation_steps = 2;
    c.zero3_chunk_size_mb = 0.001;  // several chunks
    if (strategy == "gemini") {
      c.gemini.placement_policy = zerodiff::memory::PlacementPolicyKind::fixed_fractions;
      c.gemini.offload_optim_frac = 1;
      c.gemini.offload_dir = (root / "offload").string();
    }
    zerodiff::data::DataLoaderOptions o;
    o.batch_size = 2;
    o.num_workers = 1;
    o.seed = 5;
    o.image.resolution = 16;
    o.rank = group->rank();
    o.world_size = group->size();
    zerodiff::data::DataLoader loader(std::make_shared<zerodiff::data::SyntheticShapesDataset>(
                                          zerodiff::data::SyntheticShapesOptions{.size = 12, .image_size = 16, .seed = 3}),
                                      o);
    ToyModule m;
    zerodiff::train::Trainer(c, group).fit(m, loader);
  };
  for (const char* s : {"zero2", "zero3", "gemini"}) run(s);
  if (group->rank() == 0) {
    auto load = [&](const std::string& s, const std::string& file) {
      return zerodiff::io::load_safetensors((root / s / file).string());
    };
    const auto ref_ema = load("zero2", "checkpoints/checkpoint-6/ema.safetensors");
    const auto ref_final = load("zero2", "final/model.safetensors");
    const auto ref_model = load("zero2", "checkpoints/checkpoint-6/model.safetensors");
    double lag = 0;
    for (const auto& [name, t] : ref_ema) lag = std::max(lag, (t - ref_model.at(name)).abs().max().item<double>());
    WCHECK(lag > 1e-4, "zero2's EMA barely differs from its weights (", lag, ")");
    for (const std::string s : {"zero3", "gemini"}) {
      const auto ema = load(s, "checkpoints/checkpoint-6/ema.safetensors");
      const auto fin = load(s, "final/model.safetensors");
      WCHECK(ema.size() == ref_ema.size() && fin.size() == ref_final.size(), s, ": entries differ from zero2's");
      double d_ema = 0, d_final = 0;
      for (const auto& [name, t] : ref_ema) {
        WCHECK(ema.count(name) && ema.at(name).sizes() == t.sizes() && ema.at(name).scalar_type() == t.scalar_type(), s,
               ": checkpointed EMA entry ", name, " missing or of another shape/dtype");
        d_ema = std::max(d_ema, (ema.at(name) - t).abs().max().item<double>());
      }
      for (const auto& [name, t] : ref_final) d_final = std::max(d_final, (fin.at(name) - t).abs().max().item<double>());
      std::cout << s << " world " << group->size() << ": max |EMA - zero2's| checkpointed " << d_ema << ", exported "
                << d_final << " (zero2's EMA lags its weights by up to " << lag << ")" << std::endl;
      WCHECK(d_ema <= 1e-6 && d_final <= 1e-6, s, ": EMA differs from zero2's by ", d_ema, " / ", d_final);
    }
  }
  group->barrier();
  return 0;
}

// Rank 1 dies (or hangs) after two steps; rank 0 must stop with a clear error within the timeout: exit 42.
int scenario_dead_peer(bool hang) {
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(5)});
  auto strategy = zp::make_strategy("zero2", group);
  torch::manual_seed(0);
  torch::nn::Linear net(64, 64);
  strategy->setup({zp::ParamGroupSpec{"all", {{"weight", net->weight}, {"bias", net->bias}}, 1e-3}},
                  {net->weight, net->bias}, {});
  const auto t0 = std::chrono::steady_clock::now();
  try {
    for (int s = 0; s < 100; ++s) {
      if (s == 2 && group->rank() == 1) {
        if (hang) std::this_thread::sleep_for(std::chrono::hours(1));
        std::_Exit(3);
      }
      strategy->zero_grad();
      strategy->begin_backward(true);
      net->forward(torch::randn({4, 64})).pow(2).mean().backward();
      strategy->end_backward(true);
      strategy->step();
    }
  } catch (const zdist::CommError& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "rank " << group->rank() << " stopped after " << s << " s: " << e.what() << std::endl;
    return 42;
  }
  std::cout << "rank " << group->rank() << " finished without noticing the dead peer" << std::endl;
  return 1;
}

// GradScaler under zero2: an inf in one rank's gradient shard (rank 1 only) skips the step on every rank.
// (also under gemini: one unit, its chunk gathered around the forward and for reading the weight)
int scenario_inf_one_rank(const std::string& strategy_name) {
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(60)});
  zp::StrategyOptions options;
  options.placement.device_budget_bytes = int64_t{1} << 30;
  auto strategy = zp::make_strategy(strategy_name, group, options);
  torch::manual_seed(0);
  torch::nn::Linear net(16, 16);
  strategy->set_units({zp::UnitSpec{"linear", {{"weight", net->weight}, {"bias", net->bias}}}});
  auto weight = [&] {  // the whole weight, on every strategy
    strategy->gather_full_parameters();
    at::Tensor w = net->weight.detach().clone();
    strategy->release_full_parameters(false);
    return w;
  };
  strategy->setup({zp::ParamGroupSpec{"all", {{"weight", net->weight}, {"bias", net->bias}}, 1e-2}},
                  {net->weight, net->bias}, {});
  zerodiff::optim::GradScaler scaler(zerodiff::optim::GradScalerOptions{1024.0, 2.0, 0.5, 100});
  for (int s = 0; s < 3; ++s) {
    const at::Tensor before = weight();
    strategy->zero_grad();
    strategy->begin_backward(true);
    const auto y = zp::run_unit(strategy->unit_hooks(), 0, [&] { return net->forward(torch::randn({4, 16})); });
    scaler.scale(y.pow(2).mean()).backward();
    strategy->end_backward(true);
    auto grads = strategy->gradient_tensors();
    if (s == 1 && group->rank() == 1) {
      WCHECK(!grads.empty() && grads[0].grad().defined(), "rank 1 owns no gradient segment");
      grads[0].mutable_grad().view(-1)[0] = std::numeric_limits<float>::infinity();
    }
    const bool local = scaler.unscale(grads);
    const bool found = group->any_true(local, "found_inf");
    WCHECK(found == (s == 1), "step ", s, ": found_inf ", found, " (local ", local, ") on rank ", group->rank());
    if (!found) strategy->step();
    scaler.update(found);
    const bool same = torch::equal(before, weight());
    WCHECK(same == found, "step ", s, ": parameters ", same ? "unchanged" : "changed", " on rank ", group->rank());
  }
  WCHECK(scaler.get_scale() == 512.0, "scale ", scaler.get_scale(), " after one skipped step");
  std::cout << "rank " << group->rank() << ": the inf on rank 1 skipped step 2 here too; scale 512" << std::endl;
  return 0;
}

// gemini under a small device budget trains exactly as zero3 does (zero3 with HybridAdam: the AdamW kernel gemini
// runs on the CPU), with the placement's model data never above the budget; then again with every optimizer
// state on disk and half the parameter shards in host memory (static policy).
int scenario_gemini() {
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(60)});
  zp::StrategyOptions options;
  options.chunk_numel = 80000;  // about ten chunks
  options.hybrid_adam = true;
  constexpr int kSteps = 5;
  auto zero3 = zp::make_strategy("zero3", group, options);
  const auto ref = train_tiny(*zero3, kSteps, 1, /*perturb=*/true);
  auto same_as_zero3 = [&](const TrainResult& r, const std::string& what) {
    for (const auto& [name, t] : ref.params) {
      WCHECK(torch::equal(r.params.at(name), t), what, ": ", name, " differs from zero3 by ",
             (r.params.at(name) - t).abs().max().item<double>());
    }
    for (int s = 0; s < kSteps; ++s) WCHECK(r.norms[s] == ref.norms[s], what, ": gradient norm of step ", s + 1);
    std::cout << what << ": " << ref.params.size() << " tensors bit-identical to zero3 after " << kSteps << " steps; "
              << r.gemini_summary << std::endl;
  };
  // Activation checkpointing under gemini: the recomputation in backward gathers again (by the placement's rules).
  {
    auto z3 = zp::make_strategy("zero3", group, options);
    const auto ref_ckpt = train_tiny(*z3, 3, 1, true, /*checkpointing=*/true);
    zp::StrategyOptions o = options;
    o.placement.device_budget_bytes = int64_t{1} << 32;
    auto g = zp::make_strategy("gemini", group, o);
    const auto ckpt = train_tiny(*g, 3, 1, true, /*checkpointing=*/true);
    for (const auto& [name, t] : ref_ckpt.params) {
      WCHECK(torch::equal(ckpt.params.at(name), t), "gemini + checkpointing: ", name, " differs from zero3");
    }
    std::cout << "gemini + activation checkpointing: bit-identical to zero3 + checkpointing after 3 steps" << std::endl;
  }
  // A probe run with room for everything measures the step's non-model peak; the budget then holds that, four
  // gathered chunks and nothing else: shards must be evicted and the optimizer states stay in host memory.
  options.placement.policy = zerodiff::memory::PlacementPolicyKind::automatic;
  options.placement.device_budget_bytes = int64_t{1} << 32;
  auto probe = zp::make_strategy("gemini", group, options);
  const auto roomy = train_tiny(*probe, kSteps, 1, true);
  same_as_zero3(roomy, "gemini, 4 GiB budget");
  WCHECK(roomy.gemini_evictions == 0, "evictions with a 4 GiB budget: ", roomy.gemini_evictions);
  const auto* chunks = chunks_of(*probe);
  const int64_t chunk_bytes = chunks->chunk_numel() * 4;
  const int64_t budget = roomy.gemini_non_model + 4 * chunk_bytes;
  options.placement.device_budget_bytes = budget;
  auto tight = zp::make_strategy("gemini", group, options);
  const auto small = train_tiny(*tight, kSteps, 1, true);
  same_as_zero3(small, zerodiff::str("gemini, budget ", budget, " B (non-model peak ", roomy.gemini_non_model,
                                     " B + 4 chunks of ", chunk_bytes, " B)"));
  WCHECK(small.gemini_peak <= budget, "peak model data on the device ", small.gemini_peak, " B > budget ", budget);
  WCHECK(small.gemini_total <= budget, "after the warm-up, peak model data + measured non-model peak ", small.gemini_total,
         " B > budget ", budget);
  WCHECK(small.gemini_evictions > 0, "no shard was evicted under the small budget");
  int64_t shards_on_host = 0;
  for (size_t c = 0; c < chunks->num_chunks(); ++c) shards_on_host += placement_of(*tight)->shard_tier(c) == zerodiff::memory::Tier::host;
  std::cout << "  small budget: peak model data " << small.gemini_peak << " B <= " << budget << " B, with the "
            << "non-model peak " << small.gemini_total << " B <= " << budget << " B; "
            << small.gemini_evictions << " evictions; " << shards_on_host << " of " << chunks->num_chunks()
            << " shards in host memory after the run" << std::endl;
  // Disk: every optimizer block in files (read ahead, written behind), half the parameter shards on the host.
  const fs::path dir = fs::path(std::getenv("ZD_DIST_DIR")) / "offload";
  options.placement.policy = zerodiff::memory::PlacementPolicyKind::fixed_fractions;
  options.placement.device_budget_bytes = budget;
  options.placement.offload_optim_frac = 1.0;
  options.placement.offload_param_frac = 0.5;
  options.placement.disk = true;
  options.offload_dir = dir.string();
  {
    auto disk = zp::make_strategy("gemini", group, options);
    const auto on_disk = train_tiny(*disk, kSteps, 1, true);
    same_as_zero3(on_disk, "gemini, optimizer states on disk");
    for (size_t c = 0; c < chunks_of(*disk)->num_chunks(); ++c) {
      WCHECK(placement_of(*disk)->optim_tier(c) == zerodiff::memory::Tier::disk, "chunk ", c,
             "'s optimizer states are on ", zerodiff::memory::tier_name(placement_of(*disk)->optim_tier(c)));
    }
    WCHECK(on_disk.memory.optimizer_states == 0 && on_disk.memory.master_weights == 0,
           "optimizer states in memory between steps: ", on_disk.memory.optimizer_states, " B, masters ",
           on_disk.memory.master_weights, " B");
    const fs::path rank_dir = dir / zerodiff::str("rank-", group->rank());
    WCHECK(fs::exists(rank_dir / "chunk-0.bin"), "no state file in ", rank_dir.string());
    // The optimizer state saved from disk equals zero3's, entry by entry.
    const auto a = zero3->optimizer_state(), b = disk->optimizer_state();
    WCHECK(a.size() == b.size(), "optimizer state entries: zero3 ", a.size(), ", gemini ", b.size());
    for (const auto& [k, t] : a) WCHECK(b.count(k) && torch::equal(b.at(k), t), "optimizer state '", k, "' differs");
  }
  WCHECK(!fs::exists(dir / zerodiff::str("rank-", group->rank(), "/chunk-0.bin")), "state files left behind");
  return 0;
}

// bf16-true under every strategy: no float32 copy anywhere in the model states (AdamW's master, moments in
// bfloat16: 2 + 4 bytes per element on the rank that owns it), and the run trains (parameters move) and agrees
// with the single-process bf16-true run to bfloat16 rounding.
int scenario_bf16_true(const std::string& strategy_name) {
  torch::set_num_threads(1);
  auto group = zdist::ProcessGroup::create(zdist::LaunchEnv::from_environment(), torch::kCPU,
                                           zdist::ProcessGroupOptions{std::chrono::seconds(60)});
  zp::StrategyOptions options;
  options.chunk_numel = 80000;
  options.bucket_numel = 20000;
  options.master_dtype = at::kBFloat16;
  options.placement.device_budget_bytes = int64_t{1} << 32;
  auto strategy = zp::make_strategy(strategy_name, group, options);
  const auto r = train_tiny(*strategy, 5, 1, /*perturb=*/true, false, /*bf16_true=*/true);
  auto single = zp::make_strategy("single", zdist::ProcessGroup::single(), options);
  const auto ref = train_tiny(*single, 5, 1, false, false, true);
  torch::manual_seed(0);
  TinyNet init;
  double moved = 0, diff = 0;
  for (const auto& [name, t] : ref.params) {
    WCHECK(r.params.at(name).scalar_type() == at::kBFloat16, name, " is ", r.params.at(name).scalar_type());
    moved = std::max(moved, (t.to(at::kFloat) - init.named_parameters(true)[name].to(at::kBFloat16).to(at::kFloat))
                                .abs().max().item<double>());
    diff = std::max(diff, (r.params.at(name).to(at::kFloat) - t.to(at::kFloat)).abs().max().item<double>());
  }
  const auto& m = r.memory;
  const int64_t owned = strategy_name == "ddp" ? m.numel : (m.padded_numel + group->size() - 1) / group->size();
  std::cout << strategy_name << " bf16-true: parameters moved up to " << moved << ", max |param - single| " << diff
            << "; master weights " << m.master_weights << " B, AdamW states " << m.optimizer_states << " B for "
            << owned << " owned elements" << std::endl;
  WCHECK(moved >= 2e-4, "bf16-true barely trained: ", moved);
  WCHECK(diff <= 2e-2, "bf16-true parameters differ from the single-process run by ", diff);
  // Moments: 2 bytes each per updated element (bfloat16), never 4; masters bf16 (or the shard itself).
  // (a rank's shard may be largely chunk padding, which has no state: only the upper bound is tight)
  WCHECK(m.optimizer_states > 0 && m.optimizer_states <= 4 * owned, "AdamW state bytes ", m.optimizer_states, " for ",
         owned, " elements: not bfloat16");
  WCHECK(m.master_weights <= 2 * owned, "master weight bytes ", m.master_weights, " for ", owned,
         " elements: a float32 copy exists");
  return 0;
}

int run_scenario(const std::string& s) {
  try {
    if (s.rfind("parity_", 0) == 0) {
      // parity_<strategy>_<accum>
      const auto rest = s.substr(7);
      const auto cut = rest.rfind('_');
      return scenario_parity(rest.substr(0, cut), std::stoi(rest.substr(cut + 1)));
    }
    if (s.rfind("resume_", 0) == 0) return scenario_resume(s.substr(7));
    if (s == "ema_trainer") return scenario_ema_trainer();
    if (s.rfind("ema_", 0) == 0) return scenario_ema(s.substr(4));
    if (s == "dead_peer") return scenario_dead_peer(false);
    if (s == "gemini") return scenario_gemini();
    if (s.rfind("bf16_true_", 0) == 0) return scenario_bf16_true(s.substr(10));
    if (s.rfind("inf_one_rank_", 0) == 0) return scenario_inf_one_rank(s.substr(13));
    if (s == "stuck_peer") return scenario_dead_peer(true);
    std::cerr << "unknown scenario " << s << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "scenario " << s << " threw: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace

// ------------------------------------------------------------------ tests

class StrategyParity : public testing::TestWithParam<std::tuple<std::string, int, int>> {};

TEST_P(StrategyParity, FiveAdamWStepsEqualTheSingleProcessRun) {
  const auto& [strategy, world, accum] = GetParam();
  const auto runs = launch(world, zerodiff::str("parity_", strategy, "_", accum));
  expect_all_pass(runs);
  std::cout << runs[0].output;
}

INSTANTIATE_TEST_SUITE_P(Dist, StrategyParity,
                         testing::Values(std::make_tuple("zero3", 2, 1), std::make_tuple("zero3+ckpt", 2, 1),
                                         std::make_tuple("zero3+kept", 3, 1),
                                         std::make_tuple("zero3", 3, 1),
                                         std::make_tuple("zero3", 4, 1), std::make_tuple("zero3", 2, 2),
                                         std::make_tuple("ddp", 2, 1), std::make_tuple("ddp", 3, 1),
                                         std::make_tuple("zero1", 2, 1), std::make_tuple("zero1", 3, 1),
                                         std::make_tuple("zero2", 2, 1), std::make_tuple("zero2", 3, 1),
                                         std::make_tuple("zero2", 3, 2), std::make_tuple("ddp", 3, 2)),
                         [](const auto& info) {
                           std::string name = std::get<0>(info.param);
                           if (name.find('+') != std::string::npos) name.replace(name.find('+'), 1, "_");
                           return zerodiff::str(name, "_world", std::get<1>(info.param), "_accum",
                                                std::get<2>(info.param));
                         });

TEST(Gemini, ASmallBudgetAndDiskOffloadTrainExactlyAsZero3) {
  const fs::path dir = fs::path(testing::TempDir()) / "zd_dist_gemini";
  fs::remove_all(dir);
  const auto runs = launch(2, "gemini", 300, {{"ZD_DIST_DIR", dir.string()}});
  expect_all_pass(runs);
  std::cout << runs[0].output;
}

class Bf16True : public testing::TestWithParam<std::string> {};

TEST_P(Bf16True, NoFloat32CopyAndTheRunTrains) {
  const auto runs = launch(2, "bf16_true_" + GetParam());
  expect_all_pass(runs);
  std::cout << runs[0].output;
}

INSTANTIATE_TEST_SUITE_P(Dist, Bf16True, testing::Values("ddp", "zero1", "zero2", "zero3", "gemini"));

class ShardedResume : public testing::TestWithParam<std::string> {};

TEST_P(ShardedResume, ResumeEqualsAnUninterruptedRun) {
  const fs::path dir = fs::path(testing::TempDir()) / ("zd_dist_resume_" + GetParam());
  fs::remove_all(dir);
  const auto runs = launch(2, "resume_" + GetParam(), 240, {{"ZD_DIST_DIR", dir.string()}});
  expect_all_pass(runs);
  std::cout << runs[0].output;
}

INSTANTIATE_TEST_SUITE_P(Dist, ShardedResume, testing::Values("ddp", "zero1", "zero2", "zero3", "gemini"));

class ShardedEma : public testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ShardedEma, EqualsTheWholeWeightEmaAndTheSingleProcessRun) {
  const auto& [strategy, world] = GetParam();
  const auto runs = launch(world, "ema_" + strategy);
  expect_all_pass(runs);
  std::cout << runs[0].output;
}

INSTANTIATE_TEST_SUITE_P(Dist, ShardedEma,
                         testing::Values(std::make_tuple("zero3", 2), std::make_tuple("zero3", 3),
                                         std::make_tuple("gemini", 2)),
                         [](const auto& info) {
                           return zerodiff::str(std::get<0>(info.param), "_world", std::get<1>(info.param));
                         });

TEST(ShardedEmaTrainer, Zero3AndGeminiCheckpointAndExportTheEmaOfZero2) {
  const fs::path dir = fs::path(testing::TempDir()) / "zd_dist_ema_trainer";
  fs::remove_all(dir);
  const auto runs = launch(2, "ema_trainer", 300, {{"ZD_DIST_DIR", dir.string()}});
  expect_all_pass(runs);
  std::cout << runs[0].output;
}

TEST(DistGradScaler, AnInfOnOneRankSkipsTheStepOnEveryRank) {
  for (const char* strategy : {"zero2", "gemini"}) {
    const auto runs = launch(2, zerodiff::str("inf_one_rank_", strategy));
    expect_all_pass(runs);
    std::cout << strategy << ":\n" << runs[0].output << runs[1].output;
  }
}

TEST(DistFailure, ADeadRankStopsTheOthersWithAClearError) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto runs = launch(2, "dead_peer", 60);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(runs[1].exit_code, 3);
  EXPECT_EQ(runs[0].exit_code, 42) << runs[0].output;
  EXPECT_NE(runs[0].output.find("peer"), std::string::npos) << runs[0].output;
  EXPECT_LT(s, 30.0);
  std::cout << runs[0].output;
}

TEST(DistFailure, AStuckRankFailsTheOthersAfterTheTimeout) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto runs = launch(2, "stuck_peer", 40, {}, /*stop_others=*/true);  // the stuck rank is killed then
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(runs[0].exit_code, 42) << runs[0].output;
  EXPECT_NE(runs[0].output.find("timeout 5 s"), std::string::npos) << runs[0].output;
  EXPECT_GT(s, 4.5);  // it waited for the timeout ...
  EXPECT_LT(s, 20.0);  // ... and not much longer
  std::cout << runs[0].output;
}

TEST(LaunchEnv, ReadsTorchrunAndSlurmAndNamesWhatIsMissing) {
  auto clear = [] {
    for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                          "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE",
                          "SLURM_TASKS_PER_NODE", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}) {
      ::unsetenv(v);
    }
  };
  clear();
  auto single = zdist::LaunchEnv::from_environment();
  EXPECT_EQ(single.world_size, 1);
  EXPECT_EQ(single.source, "single");

  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_PORT", "29501", 1);
  try {
    zdist::LaunchEnv::from_environment();
    ADD_FAILURE() << "no error without MASTER_ADDR";
  } catch (const zdist::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("MASTER_ADDR"), std::string::npos) << e.what();
  }
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  auto tr = zdist::LaunchEnv::from_environment();
  EXPECT_EQ(tr.source, "torchrun");
  EXPECT_EQ(tr.rank, 1);
  EXPECT_EQ(tr.world_size, 4);
  EXPECT_EQ(tr.master_addr, "10.0.0.1");
  EXPECT_EQ(tr.master_port, 29501);
  ::setenv("WORLD_SIZE", "four", 1);
  EXPECT_THROW(zdist::LaunchEnv::from_environment(), zdist::CommError);
  clear();
  ::setenv("RANK", "0", 1);  // a one-process world without LOCAL_RANK or a store
  ::setenv("WORLD_SIZE", "1", 1);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", "29500", 1);
  EXPECT_EQ(zdist::LaunchEnv::from_environment().world_size, 1);
  clear();

  ::setenv("SLURM_PROCID", "0", 1);
  ::setenv("SLURM_NTASKS", "8", 1);  // an sbatch script without srun: one process
  EXPECT_EQ(zdist::LaunchEnv::from_environment().world_size, 1);
  ::setenv("SLURM_PROCID", "5", 1);
  ::setenv("SLURM_STEP_NUM_TASKS", "8", 1);
  ::setenv("SLURM_LOCALID", "1", 1);
  ::setenv("SLURM_TASKS_PER_NODE", "4(x2)", 1);
  ::setenv("SLURM_JOB_NODELIST", "gpu[07-08,12],login1", 1);
  auto sl = zdist::LaunchEnv::from_environment();
  EXPECT_EQ(sl.source, "slurm");
  EXPECT_EQ(sl.rank, 5);
  EXPECT_EQ(sl.world_size, 8);
  EXPECT_EQ(sl.local_rank, 1);
  EXPECT_EQ(sl.local_world_size, 4);
  EXPECT_EQ(sl.master_addr, "gpu07");
  EXPECT_EQ(sl.master_port, 29500);
  clear();
  EXPECT_EQ(zdist::first_slurm_host("a,b"), "a");
  EXPECT_EQ(zdist::first_slurm_host("node[3-5]"), "node3");
  EXPECT_THROW(zdist::first_slurm_host("node[]"), zdist::CommError);
}

TEST(LaunchEnv, AnUnreachableStoreIsNamedWithinTheTimeout) {
  zdist::LaunchEnv env;
  env.rank = 1;
  env.world_size = 2;
  env.master_addr = "127.0.0.1";
  env.master_port = free_port();  // nobody serves it
  env.source = "torchrun";
  const auto t0 = std::chrono::steady_clock::now();
  try {
    zdist::ProcessGroup::create(env, torch::kCPU, zdist::ProcessGroupOptions{std::chrono::seconds(2)});
    ADD_FAILURE() << "connected to nothing";
  } catch (const zdist::CommError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(zerodiff::str("127.0.0.1:", env.master_port)), std::string::npos) << msg;
    EXPECT_NE(msg.find("MASTER_ADDR:MASTER_PORT"), std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
}

TEST(FlatLayout, BucketsPadOnlyTheEndAndShardsTileTheSpace) {
  const zp::FlatLayout layout({5, 7, 3, 11}, 3, 8);  // Ψ = 26, buckets of 9 (multiple of 3)
  EXPECT_EQ(layout.numel(), 26);
  EXPECT_EQ(layout.padded_numel(), 27);
  EXPECT_EQ(layout.shard_numel(), 9);
  ASSERT_EQ(layout.buckets().size(), 3u);
  EXPECT_EQ(layout.buckets()[2].numel, 9);
  // Every element of every parameter is owned by exactly one rank.
  std::vector<int> owner(26, 0);
  for (int r = 0; r < 3; ++r) {
    int64_t covered = 0;
    for (const auto& piece : layout.shard_pieces(r)) {
      for (int64_t i = 0; i < piece.numel; ++i) owner[layout.param_offset(piece.param) + piece.param_offset + i] += 1;
      covered += piece.numel;
      EXPECT_LE(piece.offset + piece.numel, layout.shard_numel());
    }
    EXPECT_LE(covered, 9);
  }
  for (int i = 0; i < 26; ++i) EXPECT_EQ(owner[i], 1) << "element " << i;
  // Parameter 1 (elements 5..11) straddles buckets 0 and 1.
  EXPECT_EQ(layout.buckets_of(1), (std::vector<size_t>{0, 1}));
  EXPECT_THROW(zp::FlatLayout({}, 2, 4), zerodiff::Error);
  EXPECT_THROW(zp::make_strategy("zero4", zdist::ProcessGroup::single()), zerodiff::Error);
  EXPECT_THROW(zp::make_strategy("single", zdist::ProcessGroup::single())->setup(
                   {zp::ParamGroupSpec{"g", {{"a", torch::ones({2}, torch::requires_grad())},
                                             {"a", torch::ones({2}, torch::requires_grad())}}, 1e-3}},
                   {}, {}),
               zerodiff::Error);
}

// Mixed-precision readiness: bf16 compute parameters, fp32 master shards (one process, both stages).
TEST(ZeroMasterWeights, Bf16ParametersFollowAnFp32Master) {
  for (const std::string name : {"zero1", "zero2"}) {
    auto strategy = zp::make_strategy(name, zdist::ProcessGroup::single());
    torch::manual_seed(0);
    torch::nn::Linear net(8, 8);
    net->to(at::kBFloat16);
    strategy->setup({zp::ParamGroupSpec{"all", {{"weight", net->weight}, {"bias", net->bias}}, 1e-4}},
                    {net->weight, net->bias}, {});
    const at::Tensor w0 = net->weight.detach().to(at::kFloat);
    for (int s = 0; s < 3; ++s) {
      strategy->zero_grad();
      strategy->begin_backward(true);
      net->forward(torch::randn({4, 8}).to(at::kBFloat16)).to(at::kFloat).pow(2).mean().backward();
      strategy->end_backward(true);
      strategy->clip_grad_norm(std::numeric_limits<double>::infinity());
      strategy->step();
    }
    const auto state = strategy->optimizer_state();
    const at::Tensor master = state.at("weight@0.master").view({8, 8});
    EXPECT_EQ(master.scalar_type(), at::kFloat) << name;
    // The parameters are the master rounded to bf16 ...
    EXPECT_TRUE(torch::equal(net->weight.detach(), master.to(at::kBFloat16))) << name;
    // ... and the master kept the 1e-4 steps that bf16 (8 bits of mantissa) would have rounded away.
    EXPECT_GT((master - w0).abs().max().item<double>(), 1e-4) << name;
    EXPECT_FALSE(torch::equal(master, master.to(at::kBFloat16).to(at::kFloat))) << name;
    const auto mem = strategy->memory();
    EXPECT_EQ(mem.master_weights, 4 * 72) << name;
    EXPECT_EQ(mem.parameters, 2 * 72) << name;
  }
}

int main(int argc, char** argv) {
  if (const char* scenario = std::getenv("ZD_DIST_SCENARIO")) return run_scenario(scenario);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
