// Attention at Stable Diffusion shapes, our fused flash-attention kernels (zerodiff/kernels/FlashAttention.h) against
// ATen's, all in this process, side by side.
//
//   bench_attention [--device auto|cpu|cuda] [--reps N] [--warmup 3] [--threads 0]
//                   [--dtype float32|bfloat16|float16] [--shapes sd|small] [--no-math] [--gemm auto|brgemm|blas|aten]
//
// --device auto (the default) is cuda when this build has the CUDA kernels and a GPU is present, else cpu
// (tools/gpu/run_gpu.sh runs every bench_* without arguments: on the GPU host that is the CUDA table).
//
// CPU: our kernels against ATen's CPU flash kernel (at::scaled_dot_product_attention, which dispatches to it for
// float32 CPU inputs; the backend ATen chose is printed) and the math path (matmul, softmax, matmul with autograd).
// Time: median wall time over --reps runs (default 5) after one warm-up, forward only (no autograd) and forward +
// backward (inputs require grad, out.backward(dout), gradients of q, k, v). Memory: a counting c10 CPU allocator is
// installed in place of LibTorch's default one (c10::SetCPUAllocator; the same c10::alloc_cpu underneath) and
// sees every ATen CPU allocation, including each kernel's scratch; "MiB" is the highest live total during one
// call minus the total before it (inputs and dout excluded; outputs, saved activations, gradients and scratch
// included). Allocations inside the BLAS / oneDNN (their own buffers) are not counted, for any of the three.
// Ratios: "sdpa/ours" and "math/ours" are time(other) / time(ours) (> 1: ours is faster); "ours/math" is
// mem(ours) / mem(math).
//
// CUDA: float16 and bfloat16 (or --dtype), q, k, v and dout transposed from [B, N, H, D] as the UNet passes them.
// Ours (flash_attention_forward_cuda; flash_attention_cuda + backward) against at::scaled_dot_product_attention
// with exactly one SDPA backend enabled (at::globalContext().setSDPUseFlash / setSDPUseCuDNN, the others off):
// SDPA's flash kernel and its cuDNN kernel ("n/a" when that backend rejects the shape). Time: CUDA events around
// --reps runs (default 20) after --warmup runs, mean per run. TFLOP/s with FLOPs = 4·B·H·Nq·Nkv·D forward and
// 3.5 times that forward + backward (the FlashAttention papers' count). Ratios: time(other) / time(ours) (> 1:
// ours is faster). max|ours-flash| compares the forward outputs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/kernels/FlashAttention.h"

#if ZERODIFF_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAEvent.h>
#endif

namespace zerodiff_bench::bench_attention {

// Counts live bytes of every CPU allocation made through c10's allocator, and their peak. Memory comes from
// c10::alloc_cpu as with the default allocator; data pointer and context are the same (some ATen kernels use
// raw_allocate, which requires that), so the sizes live in a map.
class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    void* p = c10::alloc_cpu(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[p] = n;
      live_ += static_cast<int64_t>(n);
      peak_ = std::max(peak_, live_);
    }
    return {p, p, &CountingAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingAllocator::release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t live() {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = live_;
  }
  int64_t peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    return peak_;
  }
  static CountingAllocator& instance() {
    static CountingAllocator a;
    return a;
  }

 private:
  static void release(void* p) {
    if (p == nullptr) return;
    CountingAllocator& a = instance();
    {
      std::lock_guard<std::mutex> lock(a.mutex_);
      auto it = a.sizes_.find(p);
      if (it != a.sizes_.end()) {
        a.live_ -= static_cast<int64_t>(it->second);
        a.sizes_.erase(it);
      }
    }
    c10::free_cpu(p);
  }
  std::mutex mutex_;
  std::unordered_map<void*, size_t> sizes_;
  int64_t live_ = 0, peak_ = 0;
};

CountingAllocator* g_counter = nullptr;

struct Measure {
  double ms = 0;
  double mib = 0;
};

// Median time over `reps` runs after a warm-up, and the peak bytes above the starting total of one run.
Measure measure(int reps, const std::function<void()>& fn) {
  fn();
  Measure m;
  {
    const int64_t base = g_counter->live();
    g_counter->reset_peak();
    fn();
    m.mib = static_cast<double>(g_counter->peak() - base) / (1 << 20);
  }
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  m.ms = t[t.size() / 2];
  return m;
}

struct Shape {
  const char* name;
  int64_t B, H, Nq, Nkv, D;
};

at::Tensor math_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  return at::matmul((at::matmul(q, k.transpose(-2, -1)) * scale).softmax(-1), v);
}

const char* sdp_backend_name(int64_t b) {
  switch (b) {
    case 0: return "math";  // at::SDPBackend
    case 1: return "flash";
    case 2: return "efficient";
    default: return "other";
  }
}

// The CPU table (see the file comment).
int run_cpu(int reps, int threads, const std::string& dtype_name, const std::string& shapes_name, bool no_math,
            const std::string& gemm) {
  zerodiff::kernels::flash_attention_use_gemm_backend(gemm);
  if (threads > 0) at::set_num_threads(threads);
  g_counter = &CountingAllocator::instance();
  c10::SetCPUAllocator(g_counter, /*priority=*/100);
  const at::ScalarType dtype = dtype_name == "bfloat16" ? at::kBFloat16 : at::kFloat;

  std::vector<Shape> shapes;
  if (shapes_name == "sd") {
    shapes = {{"self  N=4096 D=40", 2, 8, 4096, 4096, 40},
              {"self  N=1024 D=80", 2, 8, 1024, 1024, 80},
              {"self  N=256  D=160", 2, 8, 256, 256, 160},
              {"cross Nq=4096 Nkv=77 D=40", 2, 8, 4096, 77, 40}};
  } else {
    shapes = {{"self  N=512 D=40", 1, 4, 512, 512, 40}, {"cross Nq=512 Nkv=77 D=64", 1, 4, 512, 77, 64}};
  }
  std::printf("bench_attention: %d threads, %s, B x H = 2 x 8 (sd), GEMM %s, SIMD %s, %d reps (median)\n",
              at::get_num_threads(), dtype_name.c_str(), zerodiff::kernels::flash_attention_gemm_backend(),
              zerodiff::kernels::flash_attention_simd_target(), reps);
  std::printf("%-26s %-8s | %9s %9s %9s | %9s %9s | %9s %9s %9s | %9s | %s\n", "shape", "pass", "ours ms", "sdpa ms",
              "math ms", "sdpa/ours", "math/ours", "ours MiB", "sdpa MiB", "math MiB", "ours/math", "max|ours-sdpa|");
  for (const Shape& s : shapes) {
    torch::manual_seed(0);
    const at::Tensor q = at::randn({s.B, s.H, s.Nq, s.D}).to(dtype);
    const at::Tensor k = at::randn({s.B, s.H, s.Nkv, s.D}).to(dtype);
    const at::Tensor v = at::randn({s.B, s.H, s.Nkv, s.D}).to(dtype);
    const at::Tensor dout = at::randn({s.B, s.H, s.Nq, s.D}).to(dtype);
    const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
    const int64_t choice = at::_fused_sdp_choice(q, k, v);

    Measure fwd[3], both[3];
    double diff = 0;
    {
      at::NoGradGuard no_grad;
      fwd[0] = measure(reps, [&] { zerodiff::kernels::flash_attention_forward_cpu(q, k, v, scale); });
      fwd[1] = measure(reps, [&] { at::scaled_dot_product_attention(q, k, v); });
      if (!no_math) fwd[2] = measure(reps, [&] { math_attention(q, k, v, scale); });
      const at::Tensor o_ours = std::get<0>(zerodiff::kernels::flash_attention_forward_cpu(q, k, v, scale));
      const at::Tensor o_sdpa = at::scaled_dot_product_attention(q, k, v);
      diff = (o_ours.to(at::kFloat) - o_sdpa.to(at::kFloat)).abs().max().item<double>();
    }
    using Fn = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>;
    const Fn fns[3] = {
        [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
          return zerodiff::kernels::flash_attention_cpu(a, b, c, scale);
        },
        [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
          return at::scaled_dot_product_attention(a, b, c);
        },
        [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) { return math_attention(a, b, c, scale); }};
    for (int i = 0; i < 3; ++i) {
      if (i == 2 && no_math) continue;
      at::Tensor qg = q.detach().requires_grad_(true), kg = k.detach().requires_grad_(true);
      at::Tensor vg = v.detach().requires_grad_(true);
      both[i] = measure(reps, [&] {
        fns[i](qg, kg, vg).backward(dout);
        for (at::Tensor* t : {&qg, &kg, &vg}) t->mutable_grad().reset();
      });
    }
    auto row = [&](const char* pass, const Measure* m) {
      std::printf("%-26s %-8s | %9.2f %9.2f %9.2f | %9.2f %9.2f | %9.1f %9.1f %9.1f | %9.4f |", s.name, pass, m[0].ms,
                  m[1].ms, m[2].ms, m[1].ms / m[0].ms, m[2].ms / m[0].ms, m[0].mib, m[1].mib, m[2].mib,
                  m[2].mib > 0 ? m[0].mib / m[2].mib : 0.0);
    };
    row("fwd", fwd);
    std::printf(" %.2e (ATen chose %s)\n", diff, sdp_backend_name(choice));
    row("fwd+bwd", both);
    std::printf("\n");
  }
  return 0;
}

#if ZERODIFF_WITH_CUDA

// Enables exactly one SDPA backend for its lifetime; restores the previous flags.
class SdpaOnly {
 public:
  explicit SdpaOnly(at::SDPBackend backend) {
    at::Context& c = at::globalContext();
    saved_[0] = c.userEnabledFlashSDP();
    saved_[1] = c.userEnabledMemEfficientSDP();
    saved_[2] = c.userEnabledMathSDP();
    saved_[3] = c.userEnabledCuDNNSDP();
    c.setSDPUseFlash(backend == at::SDPBackend::flash_attention);
    c.setSDPUseMemEfficient(backend == at::SDPBackend::efficient_attention);
    c.setSDPUseMath(backend == at::SDPBackend::math);
    c.setSDPUseCuDNN(backend == at::SDPBackend::cudnn_attention);
  }
  ~SdpaOnly() {
    at::Context& c = at::globalContext();
    c.setSDPUseFlash(saved_[0]);
    c.setSDPUseMemEfficient(saved_[1]);
    c.setSDPUseMath(saved_[2]);
    c.setSDPUseCuDNN(saved_[3]);
  }
  SdpaOnly(const SdpaOnly&) = delete;
  SdpaOnly& operator=(const SdpaOnly&) = delete;

 private:
  bool saved_[4] = {};
};

// Mean milliseconds per run of `fn` over `reps` runs after `warmup`, between CUDA events on the current stream;
// NaN (and the reason in `note`) when fn throws, e.g. an SDPA backend that rejects the shape.
double cuda_ms(int warmup, int reps, const std::function<void()>& fn, std::string& note) {
  try {
    for (int i = 0; i < warmup; ++i) fn();
    c10::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    for (int i = 0; i < reps; ++i) fn();
    stop.record();
    stop.synchronize();
    return static_cast<double>(start.elapsed_time(stop)) / reps;
  } catch (const std::exception& e) {
    std::string what = e.what();
    note = what.substr(0, what.find('\n'));
    return std::nan("");
  }
}

// The CUDA table (see the file comment).
int run_cuda(int reps, int warmup, const std::vector<at::ScalarType>& dtypes, const std::string& shapes_name) {
  std::vector<Shape> shapes;
  if (shapes_name == "sd") {
    shapes = {{"self  N=4096 D=40", 2, 8, 4096, 4096, 40},     {"self  N=1024 D=80", 2, 8, 1024, 1024, 80},
              {"self  N=256  D=160", 2, 8, 256, 256, 160},     {"cross Nq=4096 Nkv=77 D=40", 2, 8, 4096, 77, 40},
              {"cross Nq=1024 Nkv=77 D=80", 2, 8, 1024, 77, 80}, {"cross Nq=256 Nkv=77 D=160", 2, 8, 256, 77, 160}};
  } else {
    shapes = {{"self  N=512 D=40", 1, 4, 512, 512, 40}, {"cross Nq=512 Nkv=77 D=64", 1, 4, 512, 77, 64}};
  }
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  std::printf("bench_attention --device cuda: %s (sm_%d%d, %d SMs), torch %s, %d runs after %d warm-up (CUDA events, "
              "mean), B x H = 2 x 8 (sd), inputs transposed from [B, N, H, D]\n",
              props->name, props->major, props->minor, props->multiProcessorCount, TORCH_VERSION, reps, warmup);
  std::printf("%-26s %-8s %-7s | %8s %7s | %8s %7s | %8s %7s | %10s %10s | %s\n", "shape", "dtype", "pass", "ours ms",
              "TFLOP/s", "flash ms", "TFLOP/s", "cudnn ms", "TFLOP/s", "flash/ours", "cudnn/ours", "max|ours-flash|");
  const auto tflops = [](double flops, double ms) { return flops / (ms * 1e9); };
  for (const at::ScalarType dtype : dtypes) {
    for (const Shape& s : shapes) {
      torch::manual_seed(0);
      const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
      const auto make = [&](int64_t n) { return at::randn({s.B, n, s.H, s.D}, opts).transpose(1, 2); };
      const at::Tensor q = make(s.Nq), k = make(s.Nkv), v = make(s.Nkv), dout = make(s.Nq);
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
      const double fwd_flops = 4.0 * s.B * s.H * s.Nq * s.Nkv * s.D;
      const char* dtype_str = dtype == at::kHalf ? "float16" : "bfloat16";
      const at::SDPBackend sdpa_backends[2] = {at::SDPBackend::flash_attention, at::SDPBackend::cudnn_attention};

      // Forward: [0] ours, [1] SDPA flash, [2] SDPA cuDNN.
      double fwd[3], both[3];
      std::string note[3];
      double diff = std::nan("");
      {
        at::NoGradGuard no_grad;
        fwd[0] = cuda_ms(warmup, reps, [&] { zerodiff::kernels::flash_attention_forward_cuda(q, k, v, scale); },
                         note[0]);
        for (int i = 0; i < 2; ++i) {
          const SdpaOnly only(sdpa_backends[i]);
          fwd[i + 1] = cuda_ms(warmup, reps, [&] { at::scaled_dot_product_attention(q, k, v); }, note[i + 1]);
        }
        if (!std::isnan(fwd[0]) && !std::isnan(fwd[1])) {
          const SdpaOnly only(at::SDPBackend::flash_attention);
          const at::Tensor o_ours = std::get<0>(zerodiff::kernels::flash_attention_forward_cuda(q, k, v, scale));
          diff = (o_ours.to(at::kFloat) - at::scaled_dot_product_attention(q, k, v).to(at::kFloat))
                     .abs()
                     .max()
                     .item<double>();
        }
      }
      // Forward + backward through autograd, the same way for all three.
      at::Tensor qg = q.detach().requires_grad_(true), kg = k.detach().requires_grad_(true);
      at::Tensor vg = v.detach().requires_grad_(true);
      const auto step = [&](const std::function<at::Tensor()>& f) {
        f().backward(dout);
        for (at::Tensor* t : {&qg, &kg, &vg}) t->mutable_grad().reset();
      };
      both[0] = cuda_ms(warmup, reps, [&] { step([&] { return zerodiff::kernels::flash_attention_cuda(qg, kg, vg, scale); }); },
                        note[0]);
      for (int i = 0; i < 2; ++i) {
        const SdpaOnly only(sdpa_backends[i]);
        both[i + 1] =
            cuda_ms(warmup, reps, [&] { step([&] { return at::scaled_dot_product_attention(qg, kg, vg); }); }, note[i + 1]);
      }
      const auto row = [&](const char* pass, const double* ms, double flops) {
        std::printf("%-26s %-8s %-7s | %8.3f %7.1f | %8.3f %7.1f | %8.3f %7.1f | %10.2f %10.2f |", s.name, dtype_str,
                    pass, ms[0], tflops(flops, ms[0]), ms[1], tflops(flops, ms[1]), ms[2], tflops(flops, ms[2]),
                    ms[1] / ms[0], ms[2] / ms[0]);
      };
      row("fwd", fwd, fwd_flops);
      std::printf(" %.2e\n", diff);
      row("fwd+bwd", both, 3.5 * fwd_flops);
      std::printf("\n");
      for (int i = 0; i < 3; ++i) {
        if (!note[i].empty()) {
          std::printf("  %s n/a: %s\n", i == 0 ? "ours" : i == 1 ? "SDPA flash" : "SDPA cuDNN", note[i].c_str());
        }
      }
    }
  }
  return 0;
}

#endif  // ZERODIFF_WITH_CUDA


int run(int argc, char** argv) {
  CLI::App app{"bench_attention: fused flash attention (ours) vs ATen's SDPA kernels, on the CPU or on CUDA"};
  int reps = 0, warmup = 3, threads = 0;
  std::string device = "auto", dtype_name, shapes_name = "sd";
  bool no_math = false;
  std::string gemm = "auto";
  app.add_option("--device", device, "auto (cuda with CUDA kernels and a GPU, else cpu), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--reps", reps, "Timed runs per method and pass (default: 5 on the CPU, median; 20 on CUDA, mean)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", warmup, "CUDA: untimed runs before the timed ones")->check(CLI::NonNegativeNumber);
  app.add_option("--threads", threads, "CPU: intra-op threads (0 = LibTorch's default, i.e. OMP_NUM_THREADS)");
  app.add_option("--dtype", dtype_name, "cpu: float32 (default) or bfloat16; cuda: float16 or bfloat16 (default both)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  app.add_option("--shapes", shapes_name, "sd (Stable Diffusion shapes) or small (a quick smoke run)")
      ->check(CLI::IsMember({"sd", "small"}));
  app.add_flag("--no-math", no_math, "CPU: skip the math path (its N=4096 step needs ~5 GiB)");
  app.add_option("--gemm", gemm, "CPU: our tile GEMM: auto, brgemm, blas or aten")
      ->check(CLI::IsMember({"auto", "brgemm", "blas", "aten"}));
  CLI11_PARSE(app, argc, argv);

  const bool cuda_usable = zerodiff::built_with_cuda() && torch::cuda::is_available();
  if (device == "auto") device = cuda_usable ? "cuda" : "cpu";
  if (device == "cuda") {
#if ZERODIFF_WITH_CUDA
    if (!cuda_usable) {
      std::fprintf(stderr, "bench_attention: --device cuda needs a GPU (torch::cuda::is_available() is false)\n");
      return 2;
    }
    if (dtype_name == "float32") {
      std::fprintf(stderr, "bench_attention: the CUDA kernels take float16 or bfloat16, not float32\n");
      return 2;
    }
    std::vector<at::ScalarType> dtypes = {at::kHalf, at::kBFloat16};
    if (!dtype_name.empty()) dtypes = {dtype_name == "float16" ? at::kHalf : at::kBFloat16};
    return run_cuda(reps > 0 ? reps : 20, warmup, dtypes, shapes_name);
#else
    std::fprintf(stderr, "bench_attention: --device cuda: this build has no CUDA kernels\n");
    return 2;
#endif
  }
  if (dtype_name == "float16") {
    std::fprintf(stderr, "bench_attention: the CPU kernels take float32 or bfloat16, not float16\n");
    return 2;
  }
  return run_cpu(reps > 0 ? reps : 5, threads, dtype_name.empty() ? "float32" : dtype_name, shapes_name, no_math, gemm);
}

}  // namespace zerodiff_bench::bench_attention
