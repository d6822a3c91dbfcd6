// HybridAdam's CPU step against torch::optim::AdamW (single-tensor path), ATen's fused CPU AdamW
// (at::_fused_adamw_) and a STREAM-style triad (a = b + s*c), all measured in this process on the same machine.
//
//   bench_hybrid_adam [--sizes 10,50,200] [--iters 5] [--threads 0]
//
// Sizes are millions of fp32 parameters in one tensor. Bytes moved per parameter and step: 28 (read p, g, m, v;
// write p, m, v), 30 with the bf16 compute copy; the triad moves 12 per element. Figures: median step time,
// parameters/s and GB/s (1e9 bytes/s).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <torch/torch.h>
#include <hwy/targets.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <sstream>
#include <vector>

#include "zerodiff/kernels/Adam.h"
#include "zerodiff/optim/HybridAdam.h"

namespace zerodiff_bench::bench_hybrid_adam {

double median_seconds(int iters, const std::function<void()>& fn) {
  fn();  // warm-up (first-touch, state allocation)
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void report(const char* what, int64_t n, double seconds, double bytes_per_elem, double triad_gbs, double fused_s) {
  const double gbs = static_cast<double>(n) * bytes_per_elem / seconds / 1e9;
  std::printf("  %-34s %9.2f ms  %8.1f Mparam/s  %7.2f GB/s  %5.0f %% of triad  %5.2fx fused AdamW\n", what,
              seconds * 1e3, static_cast<double>(n) / seconds / 1e6, gbs, 100.0 * gbs / triad_gbs,
              fused_s > 0 ? fused_s / seconds : 0.0);
}


int run(int argc, char** argv) {
  CLI::App app{"bench_hybrid_adam: HybridAdam CPU step vs torch AdamW, ATen fused AdamW and a STREAM triad"};
  std::string sizes_arg = "10";
  int iters = 5, threads = 0;
  app.add_option("--sizes", sizes_arg, "Comma-separated sizes in millions of parameters");
  app.add_option("--iters", iters, "Timed steps per method (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "Intra-op threads (0 = LibTorch's default)");
  bool no_avx512 = false;
  app.add_flag("--no-avx512", no_avx512, "Keep Highway from choosing its AVX-512 targets (compare 256-bit code)");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) at::set_num_threads(threads);
  if (no_avx512) hwy::DisableTargets(HWY_AVX3 | HWY_AVX3_DL);
  std::vector<int64_t> sizes;
  std::stringstream ss(sizes_arg);
  for (std::string item; std::getline(ss, item, ',');) sizes.push_back(std::stoll(item) * 1'000'000);
  std::printf("SIMD target %s, %d threads\n", zerodiff::kernels::adam_simd_target(), at::get_num_threads());
  torch::NoGradGuard no_grad;
  for (const int64_t n : sizes) {
    std::printf("%lld parameters (fp32, one tensor):\n", static_cast<long long>(n));
    double triad_gbs = 0, fused_s = 0;
    {
      at::Tensor a = at::zeros({n}), b = at::rand({n}), c = at::rand({n});
      float* pa = a.data_ptr<float>();
      const float* pb = b.const_data_ptr<float>();
      const float* pc = c.const_data_ptr<float>();
      (void)pa;
      (void)pb;
      (void)pc;
      // ATen's vectorized, parallel add kernel: a = b + 3 c (STREAM's triad).
      const double s = median_seconds(iters, [&] { at::add_out(a, b, c, 3.0); });
      triad_gbs = static_cast<double>(n) * 12.0 / s / 1e9;
      std::printf("  %-34s %9.2f ms  %8s           %7.2f GB/s  (reference bandwidth)\n", "STREAM triad a = b + s*c",
                  s * 1e3, "", triad_gbs);
    }
    auto make = [&] {
      at::Tensor p = at::randn({n}).requires_grad_(true);
      p.mutable_grad() = at::randn({n}) * 1e-3;
      return p;
    };
    {
      at::Tensor p = make();
      at::Tensor m = at::zeros({n}), v = at::zeros({n});
      at::Tensor step = at::zeros({}, at::kFloat);
      std::vector<at::Tensor> ps{p.detach()}, gs{p.grad()}, ms{m}, vs{v}, steps{step};
      fused_s = median_seconds(iters, [&] {
        step.add_(1);
        at::_fused_adamw_(ps, gs, ms, vs, {}, steps, 1e-3, 0.9, 0.999, 0.01, 1e-8, false, false);
      });
      report("ATen fused AdamW (_fused_adamw_)", n, fused_s, 28, triad_gbs, fused_s);
    }
    {
      at::Tensor p = make();
      torch::optim::AdamW opt({p}, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
      const double s = median_seconds(iters, [&] { opt.step(); });
      report("torch::optim::AdamW", n, s, 28, triad_gbs, fused_s);
    }
    {
      at::Tensor p = make();
      zerodiff::optim::HybridAdam opt({p}, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
      const double s = median_seconds(iters, [&] { opt.step(); });
      report("HybridAdam", n, s, 28, triad_gbs, fused_s);
      at::Tensor copy = at::empty({n}, at::kBFloat16);
      opt.set_half_copy(p, copy);
      const double sh = median_seconds(iters, [&] { opt.step(); });
      report("HybridAdam + bf16 copy", n, sh, 30, triad_gbs, fused_s);
    }
  }
  return 0;
}

}  // namespace zerodiff_bench::bench_hybrid_adam
