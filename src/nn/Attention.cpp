// Attention front door: shape checks, then the selected backend. See zerodiff/nn/Attention.h.
#include "zerodiff/nn/Attention.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/kernels/FlashAttention.h"
#include "zerodiff/nn/Autocast.h"

namespace zerodiff::nn {
namespace {

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  ZD_CHECK(q.defined() && k.defined() && v.defined(), "attention: q, k and v must be defined");
  ZD_CHECK(q.dim() == 4, "attention: q must be [B, H, Nq, D], got shape ", q.sizes().vec());
  ZD_CHECK(k.dim() == 4, "attention: k must be [B, H, Nk, D], got shape ", k.sizes().vec());
  ZD_CHECK(v.dim() == 4, "attention: v must be [B, H, Nk, Dv], got shape ", v.sizes().vec());
  ZD_CHECK(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
               q.size(1) == v.size(1),
           "attention: batch and head counts differ: q ", q.sizes().vec(), ", k ", k.sizes().vec(),
           ", v ", v.sizes().vec());
  ZD_CHECK(q.size(3) == k.size(3), "attention: q and k head dims differ: q ", q.sizes().vec(), ", k ",
           k.sizes().vec());
  ZD_CHECK(k.size(2) == v.size(2), "attention: k and v sequence lengths differ: k ", k.sizes().vec(),
           ", v ", v.sizes().vec());
  ZD_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
           "attention: dtypes differ: q ", q.scalar_type(), ", k ", k.scalar_type(), ", v ",
           v.scalar_type());
  ZD_CHECK(q.device() == k.device() && q.device() == v.device(), "attention: devices differ: q ",
           q.device(), ", k ", k.device(), ", v ", v.device());
}

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// Why our kernel cannot run this call ("" when it can).
std::string zerodiff_unsupported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const AttentionOptions& o) {
  const auto no_extras = [&o]() -> std::string {
    if (o.mask.defined()) return "it takes no attention mask";
    if (o.causal) return "it has no causal variant";
    if (o.dropout > 0) return "it has no attention dropout";
    return {};
  };
  if (q.device().is_cuda()) {
    // Built without CUDA kernels, dtype, head dims, no keys, compute capability (kernels/FlashAttention.h).
    if (std::string why = kernels::flash_attention_cuda_unsupported(q, k, v); !why.empty()) return why;
    if (o.upcast) {
      return "upcast asks for float32 attention, and the CUDA kernel rounds P and dS to the inputs' precision "
             "(it accumulates in float32)";
    }
    return no_extras();
  }
  if (!q.device().is_cpu()) {
    return zerodiff::str("it runs on CPU and CUDA devices only (inputs on ", q.device(), ")");
  }
  const auto dt = q.scalar_type();
  const bool upcast_half = o.upcast && is_half(q);
  if (dt != at::kFloat && dt != at::kBFloat16 && !upcast_half) {
    return zerodiff::str("it takes float32 or bfloat16 inputs (got ", dt, "; float16 only with upcast)");
  }
  if (v.size(3) != q.size(3)) return zerodiff::str("value head dim ", v.size(3), " differs from the query head dim ", q.size(3));
  if (q.size(3) < 1 || q.size(3) > 256) return zerodiff::str("head dim ", q.size(3), " is outside 1..256");
  if (k.size(2) == 0) return "there are no keys";
  return no_extras();
}

std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1e", x);
  return buf;
}

// max |ours − ref| / max |ref| in float32; NaN when ours has a NaN (a failed comparison).
double rel_err(const at::Tensor& ours, const at::Tensor& ref) {
  const double scale = ref.abs().max().item<double>();
  const double err = (ours.to(at::kFloat) - ref).abs().max().item<double>();
  return err / (scale > 0 ? scale : 1.0);
}

// The self-check of cuda_kernel_self_check (documented in Attention.h).
CudaKernelSelfCheck run_cuda_self_check(c10::Device device, at::ScalarType dtype, int64_t head_dim) {
  CudaKernelSelfCheck r;
  const std::string what = zerodiff::str(dtype, " head dim ", head_dim, " (bucket ",
                                         kernels::flash_attention_cuda_head_dim_bucket(head_dim), ") on ", device);
  try {
    const at::NoGradGuard no_grad;
    const AutocastScope no_autocast(c10::DeviceType::CUDA, std::nullopt);
    at::Generator gen = at::detail::createCPUGenerator(0x5eedULL + static_cast<uint64_t>(head_dim));
    const int64_t B = 1, H = 2, Nq = 96, Nkv = 77, D = head_dim;
    const auto rnd = [&](int64_t n) {
      return at::randn({B, n, H, D}, gen, at::TensorOptions().dtype(at::kFloat)).to(device, dtype).transpose(1, 2);
    };
    const at::Tensor q = rnd(Nq), k = rnd(Nkv), v = rnd(Nkv), dout = rnd(Nq);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    const auto [out, lse] = kernels::flash_attention_forward_cuda(q, k, v, scale);
    const auto [dq, dk, dv] = kernels::flash_attention_backward_cuda(dout, q, k, v, out, lse, scale);
    // float32 reference on the same rounded values: S = scale q kᵀ, P = softmax(S), dP = dO vᵀ,
    // dS = P ∘ (dP − rowsum(P ∘ dP)), dq = scale dS k, dk = scale dSᵀ q, dv = Pᵀ dO.
    const at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat), vf = v.to(at::kFloat), dof = dout.to(at::kFloat);
    const at::Tensor s = at::matmul(qf, kf.transpose(-2, -1)) * scale;
    const at::Tensor p = s.softmax(-1);
    const at::Tensor dp = at::matmul(dof, vf.transpose(-2, -1));
    const at::Tensor ds = p * (dp - (dp * p).sum(-1, /*keepdim=*/true));
    const double e_out = rel_err(out, attention_math(qf, kf, vf)), e_lse = rel_err(lse, s.logsumexp(-1));
    const double e_dq = rel_err(dq, at::matmul(ds, kf) * scale);
    const double e_dk = rel_err(dk, at::matmul(ds.transpose(-2, -1), qf) * scale);
    const double e_dv = rel_err(dv, at::matmul(p.transpose(-2, -1), dof));
    constexpr double kTol = 2e-2, kTolLse = 1e-3;
    // Written so that a NaN error fails.
    r.passed = e_out < kTol && e_lse < kTolLse && e_dq < kTol && e_dk < kTol && e_dv < kTol;
    r.report = zerodiff::str(what, ": max |ours - ref| / max |ref|: out ", sci(e_out), ", lse ", sci(e_lse), ", dq ",
                             sci(e_dq), ", dk ", sci(e_dk), ", dv ", sci(e_dv), " (tolerances ", sci(kTol), ", lse ",
                             sci(kTolLse), "; B=1, H=2, Nq=96, Nkv=77)");
  } catch (const std::exception& e) {
    r.passed = false;
    r.report = zerodiff::str(what, ": the kernel threw: ", e.what());
  }
  return r;
}

std::atomic<AttentionBackend> g_policy{AttentionBackend::automatic};

void log_first_use(AttentionBackend backend, const at::Tensor& q, const at::Tensor& k) {
  static std::mutex mu;
  static std::set<std::string> seen;
  const std::string key = zerodiff::str(attention_backend_name(backend), " ", q.device(), " ", q.scalar_type());
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!seen.insert(key).second) return;
  }
  std::string detail;
  if (backend == AttentionBackend::zerodiff) {
    detail = q.device().is_cuda()
                 ? zerodiff::str(" (CUDA flash attention, head-dim bucket ",
                                 kernels::flash_attention_cuda_head_dim_bucket(q.size(3)), ")")
                 : zerodiff::str(" (CPU flash attention, ", kernels::flash_attention_gemm_backend(), " tiles, ",
                                 kernels::flash_attention_simd_target(), ")");
  }
  ZD_LOG_INFO("attention: backend ", attention_backend_name(backend), detail, " for ", q.device(), " ",
              q.scalar_type(), " inputs (first call: q ", q.sizes().vec(), ", ", k.size(2), " keys)");
}

}  // namespace

AttentionBackend parse_attention_backend(std::string_view name) {
  return parse_enum<AttentionBackend>(name, "attention backend");
}

const char* attention_backend_name(AttentionBackend backend) { return name_of(backend).data(); }

AttentionBackend attention_policy() { return g_policy.load(); }

AttentionPolicyScope::AttentionPolicyScope(AttentionBackend policy) : saved_(g_policy.exchange(policy)) {}
AttentionPolicyScope::~AttentionPolicyScope() { g_policy.store(saved_); }

bool cpu_kernel_preferred() {
  // Highway's 512-bit x86 targets: AVX3, AVX3_DL, AVX3_ZEN4, AVX3_SPR, and AVX10_2 in newer releases.
  static const bool preferred = [] {
    const std::string_view target = kernels::flash_attention_simd_target();
    return target.rfind("AVX3", 0) == 0 || target.rfind("AVX10", 0) == 0;
  }();
  return preferred;
}

AttentionBackend resolve_attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const AttentionOptions& options) {
  AttentionBackend b = options.backend == AttentionBackend::automatic ? attention_policy() : options.backend;
  if (b == AttentionBackend::automatic) {
    // On CUDA, ours only once its self-check passed for this (device, dtype, head-dim bucket); on the CPU, only
    // where it is the faster one.
    const bool ours = zerodiff_unsupported(q, k, v, options).empty() &&
                      (q.device().is_cuda() ? cuda_kernel_self_check(q.device(), q.scalar_type(), q.size(3)).passed
                                            : cpu_kernel_preferred());
    b = ours ? AttentionBackend::zerodiff : AttentionBackend::sdpa;
  }
  return b;
}

CudaKernelSelfCheck cuda_kernel_self_check(c10::Device device, at::ScalarType dtype, int64_t head_dim) {
  ZD_CHECK(device.is_cuda(), "cuda_kernel_self_check: device must be a CUDA device, got ", device);
  static std::mutex mu;
  static std::map<std::tuple<int, int, int64_t>, CudaKernelSelfCheck> results;
  const auto key = std::make_tuple(static_cast<int>(device.index()), static_cast<int>(dtype),
                                   kernels::flash_attention_cuda_head_dim_bucket(head_dim));
  std::lock_guard<std::mutex> lock(mu);
  if (const auto it = results.find(key); it != results.end()) return it->second;
  CudaKernelSelfCheck r = run_cuda_self_check(device, dtype, head_dim);
  if (r.passed) {
    ZD_LOG_INFO("attention: CUDA flash-attention self-check passed for ", r.report);
  } else {
    ZD_LOG_ERROR("attention: CUDA flash-attention self-check FAILED for ", r.report,
                 "; attention: auto runs sdpa for this dtype and head-dim bucket, backend zerodiff throws");
  }
  results.emplace(key, r);
  return r;
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options) {
  check_qkv(q, k, v);
  ZD_CHECK(!options.causal || q.size(2) == k.size(2), "attention: causal needs Nq == Nk, got q ", q.sizes().vec(),
           ", k ", k.sizes().vec());
  ZD_CHECK(!options.causal || !options.mask.defined(),
           "attention: pass either causal or a mask (fold the causal part into the mask), not both");
  const AttentionBackend backend = resolve_attention_backend(q, k, v, options);
  if (backend == AttentionBackend::zerodiff) {
    if (const std::string why = zerodiff_unsupported(q, k, v, options); !why.empty()) {
      throw NotImplementedError(zerodiff::str("attention backend zerodiff cannot run this call: ", why, " (q ",
                                              q.sizes().vec(), " ", q.scalar_type(), "); use attention: auto or sdpa"));
    }
    if (q.device().is_cuda()) {
      // Never a silent fallback: a failed self-check is an error here (automatic resolution already skipped ours).
      const CudaKernelSelfCheck check = cuda_kernel_self_check(q.device(), q.scalar_type(), q.size(3));
      ZD_CHECK(check.passed, "attention backend zerodiff: our CUDA kernel failed its self-check (", check.report,
               "); use attention: auto (which then runs sdpa) or sdpa");
    }
  }
  log_first_use(backend, q, k);
  const bool up = options.upcast && is_half(q);
  switch (backend) {
    case AttentionBackend::math:
      return attention_math(q, k, v, options);
    case AttentionBackend::zerodiff: {
      const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
      if (q.device().is_cuda()) return kernels::flash_attention_cuda(q, k, v, scale);  // never with upcast
      if (up) {
        return kernels::flash_attention_cpu(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), scale)
            .to(q.scalar_type());
      }
      return kernels::flash_attention_cpu(q, k, v, scale);
    }
    case AttentionBackend::sdpa:
    case AttentionBackend::automatic:
      break;
  }
  // An undefined tensor inside the optional is not "no mask" to SDPA.
  std::optional<at::Tensor> mask;
  if (options.mask.defined()) mask = up && is_half(options.mask) ? options.mask.to(at::kFloat) : options.mask;
  if (up) {
    return at::scaled_dot_product_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), mask,
                                            options.dropout, options.causal)
        .to(q.scalar_type());
  }
  return at::scaled_dot_product_attention(q, k, v, mask, options.dropout, options.causal);
}

at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool upcast) {
  AttentionOptions options;
  options.upcast = upcast;
  return attention_math(q, k, v, options);
}

at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const AttentionOptions& options) {
  check_qkv(q, k, v);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const bool up = options.upcast && is_half(q);
  const at::Tensor qf = up ? q.to(at::kFloat) : q;
  const at::Tensor kf = up ? k.to(at::kFloat) : k;
  const at::Tensor vf = up ? v.to(at::kFloat) : v;
  at::Tensor scores = at::matmul(qf * scale, kf.transpose(-2, -1));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (options.causal) {
    scores = scores.masked_fill(at::ones({q.size(2), k.size(2)}, q.options().dtype(at::kBool)).triu(1), neg_inf);
  }
  if (options.mask.defined()) {
    scores = options.mask.scalar_type() == at::kBool ? scores.masked_fill(options.mask.logical_not(), neg_inf)
                                                     : scores + options.mask.to(scores.scalar_type());
  }
  at::Tensor probs = scores.softmax(-1);
  if (options.dropout > 0) probs = at::dropout(probs, options.dropout, /*train=*/true);
  return at::matmul(probs, vf).to(q.scalar_type());
}

}  // namespace zerodiff::nn
