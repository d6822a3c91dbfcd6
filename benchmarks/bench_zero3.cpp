// Per-rank memory of one training step of a UNet under zero3 on N processes versus one process (strategy
// single), on the CPU with Gloo. The reference (one process) runs first in the same session, then N ranks.
//
//   bench_zero3 [--model tiny|sd15] [--ranks 2] [--latent 32] [--chunk-mb 0]   (docs/performance.md: --model sd15)
//
// Each run builds the UNet from its config (random weights), takes one AdamW step on a batch of 1 at
// --latent x --latent latents with 77 context tokens, and prints per rank: model-state bytes held after the
// step (parameters resident, gradients, master weights, AdamW states; from Strategy::memory()), zero3's peak
// resident parameter bytes, the process's peak RSS (VmHWM) and the step time. The launcher re-runs this
// binary (ZD_BENCH_WORKER=1) with torchrun's variables for each rank.
#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/dist/ProcessGroup.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/parallel/Strategy.h"

namespace fs = std::filesystem;

namespace zerodiff_bench::bench_zero3 {

double gib(double bytes) { return bytes / (1024.0 * 1024 * 1024); }

double peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0;  // kB
  }
  return 0;
}

int worker(const std::string& model_dir, const std::string& strategy_name, int latent, double chunk_mb) {
  torch::NoGradGuard no_grad_setup;
  auto env = zerodiff::dist::LaunchEnv::from_environment();
  auto group = zerodiff::dist::ProcessGroup::create(env, torch::kCPU);
  torch::manual_seed(0);
  zerodiff::models::UNet2DConditionModel unet(
      zerodiff::models::UNet2DConditionOptions::from_json(zerodiff::io::read_config_json(model_dir)));
  unet->train();
  zerodiff::parallel::StrategyOptions options;
  options.chunk_numel = static_cast<int64_t>(chunk_mb * 1024 * 1024 / 4);
  auto strategy = zerodiff::parallel::make_strategy(strategy_name, group, options);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& p : unet->named_parameters(true)) params.emplace_back(p.key(), p.value());
  std::vector<zerodiff::parallel::UnitSpec> units;
  for (const auto& u : unet->units()) {
    zerodiff::parallel::UnitSpec spec{u.name, {}};
    for (auto& p : u.module->named_parameters(true)) spec.params.emplace_back(p.key(), p.value());
    units.push_back(std::move(spec));
  }
  strategy->set_units(std::move(units));
  std::vector<at::Tensor> all;
  for (auto& p : unet->parameters()) all.push_back(p);
  strategy->setup({zerodiff::parallel::ParamGroupSpec{"unet", params, 1e-5}}, all, {});
  unet->set_unit_hooks(strategy->unit_hooks());
  params.clear();
  all.clear();

  const int64_t cross = unet->options.cross_attention_dim()[0];
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto x = at::randn({1, 4, latent, latent}, gen), ctx = at::randn({1, 77, cross}, gen);
  const auto target = at::randn({1, 4, latent, latent}, gen);
  const auto t0 = std::chrono::steady_clock::now();
  {
    torch::AutoGradMode grad(true);
    strategy->zero_grad();
    const auto loss = torch::mse_loss(unet->forward(x, torch::tensor({500}), ctx), target);
    strategy->begin_backward(true);
    loss.backward();
    strategy->end_backward(true);
  }
  strategy->clip_grad_norm(1.0);
  strategy->step();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto m = strategy->memory();
  const double states = static_cast<double>(m.parameters + m.gradients + m.master_weights + m.optimizer_states);
  std::printf(
      "RESULT strategy=%s rank=%d world=%d params=%lld model_states_gib=%.3f parameters_gib=%.3f gradients_gib=%.3f "
      "master_gib=%.3f adam_gib=%.3f peak_parameters_gib=%.3f peak_rss_gib=%.3f step_s=%.1f\n",
      strategy_name.c_str(), group->rank(), group->size(), static_cast<long long>(m.numel), gib(states),
      gib(static_cast<double>(m.parameters)), gib(static_cast<double>(m.gradients)),
      gib(static_cast<double>(m.master_weights)), gib(static_cast<double>(m.optimizer_states)),
      gib(static_cast<double>(m.peak_parameters)), gib(peak_rss_bytes()), seconds);
  std::fflush(stdout);
  group->barrier();
  return 0;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

// Runs `ranks` copies of this binary as workers; returns their RESULT lines.
std::vector<std::string> run_ranks(const std::vector<std::string>& args, const std::string& strategy, int ranks,
                                   int threads) {
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (int r = 0; r < ranks; ++r) {
    const std::string log = (fs::temp_directory_path() / ("bench_zero3." + strategy + "." + std::to_string(r))).string();
    logs.push_back(log);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("ZD_BENCH_WORKER", strategy.c_str(), 1);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(ranks).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
      FILE* out = std::fopen(log.c_str(), "w");
      if (out) ::dup2(fileno(out), STDOUT_FILENO);
      std::vector<char*> argv;
      const std::string self = fs::read_symlink("/proc/self/exe").string();
      std::string name = "bench_zero3";  // argv[0]: zerodiff-bench runs the benchmark its argv[0] names
      argv.push_back(name.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(self.c_str(), argv.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<std::string> results;
  for (int r = 0; r < ranks; ++r) {
    int status = 0;
    ::waitpid(pids[r], &status, 0);
    std::ifstream in(logs[r]);
    std::string line;
    bool found = false;
    while (std::getline(in, line)) {
      if (line.rfind("RESULT ", 0) == 0) {
        results.push_back(line.substr(7));
        found = true;
      }
    }
    if (!found) results.push_back("FAILED (exit " + std::to_string(WEXITSTATUS(status)) + ", log " + logs[r] + ")");
  }
  return results;
}

double field(const std::string& result, const std::string& key) {
  const auto at = result.find(key + "=");
  return at == std::string::npos ? 0 : std::stod(result.substr(at + key.size() + 1));
}


int run(int argc, char** argv) {
  CLI::App app{"bench_zero3: per-rank memory of a UNet training step, zero3 on N ranks vs one process"};
  std::string model = "tiny";  // tools/gpu/run_gpu.sh runs benchmarks without arguments: cheap by default
  int ranks = 2, latent = 32;
  double chunk_mb = 0;
  app.add_option("--model", model, "sd15 (configs/models/sd15/unet) or tiny (configs/models/tiny/unet_sd1)")
      ->check(CLI::IsMember({"sd15", "tiny"}));
  app.add_option("--ranks", ranks, "zero3 processes")->check(CLI::Range(2, 8));
  app.add_option("--latent", latent, "latent size (pixels / 8)");
  app.add_option("--chunk-mb", chunk_mb, "zero3 chunk size in MiB (0 = search)");
  CLI11_PARSE(app, argc, argv);
  const std::string model_dir =
      std::string(ZERODIFF_SOURCE_DIR) + (model == "sd15" ? "/configs/models/sd15/unet" : "/configs/models/tiny/unet_sd1");
  try {
    if (const char* w = std::getenv("ZD_BENCH_WORKER")) return worker(model_dir, w, latent, chunk_mb);
    const std::vector<std::string> args{"--model", model, "--latent", std::to_string(latent), "--chunk-mb",
                                        std::to_string(chunk_mb)};
    const int cores = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    std::cout << "model " << model << " (" << model_dir << "), latent " << latent << "x" << latent
              << ", batch 1, one AdamW step, CPU" << std::endl;
    const auto single = run_ranks(args, "single", 1, cores);
    const auto sharded = run_ranks(args, "zero3", ranks, std::max(1, cores / ranks));
    std::cout << "single (1 process):  " << single[0] << std::endl;
    for (const auto& r : sharded) std::cout << "zero3 (" << ranks << " ranks):    " << r << std::endl;
    const double ref_states = field(single[0], "model_states_gib"), ref_rss = field(single[0], "peak_rss_gib");
    double worst_states = 0, worst_rss = 0;
    for (const auto& r : sharded) {
      worst_states = std::max(worst_states, field(r, "model_states_gib"));
      worst_rss = std::max(worst_rss, field(r, "peak_rss_gib"));
    }
    std::printf("per-rank model states: zero3 %.2f GiB vs single %.2f GiB = %.0f %%\n", worst_states, ref_states,
                ref_states > 0 ? 100.0 * worst_states / ref_states : 0.0);
    std::printf("per-rank peak RSS:     zero3 %.2f GiB vs single %.2f GiB = %.0f %%\n", worst_rss, ref_rss,
                ref_rss > 0 ? 100.0 * worst_rss / ref_rss : 0.0);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_zero3: error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace zerodiff_bench::bench_zero3
