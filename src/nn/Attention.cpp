// Attention front door: shape checks, then the selected backend. See zerodiff/nn/Attention.h.
#include "zerodiff/nn/Attention.h"

#include <ATen/ATen.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/kernels/FlashAttention.h"

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
  if (!q.device().is_cpu()) return zerodiff::str("it runs on the CPU only (inputs on ", q.device(), "; CUDA kernels not built yet)");
  const auto dt = q.scalar_type();
  const bool upcast_half = o.upcast && is_half(q);
  if (dt != at::kFloat && dt != at::kBFloat16 && !upcast_half) {
    return zerodiff::str("it takes float32 or bfloat16 inputs (got ", dt, "; float16 only with upcast)");
  }
  if (v.size(3) != q.size(3)) return zerodiff::str("value head dim ", v.size(3), " differs from the query head dim ", q.size(3));
  if (q.size(3) < 1 || q.size(3) > 256) return zerodiff::str("head dim ", q.size(3), " is outside 1..256");
  if (k.size(2) == 0) return "there are no keys";
  if (o.mask.defined()) return "it takes no attention mask";
  if (o.causal) return "it has no causal variant";
  if (o.dropout > 0) return "it has no attention dropout";
  return {};
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
  const std::string detail =
      backend == AttentionBackend::zerodiff
          ? zerodiff::str(" (CPU flash attention, ", kernels::flash_attention_gemm_backend(), " tiles, ",
                kernels::flash_attention_simd_target(), ")")
          : std::string();
  ZD_LOG_INFO("attention: backend ", attention_backend_name(backend), detail, " for ", q.device(), " ",
              q.scalar_type(), " inputs (first call: q ", q.sizes().vec(), ", ", k.size(2), " keys)");
}

}  // namespace

AttentionBackend parse_attention_backend(std::string_view name) {
  if (name == "auto") return AttentionBackend::automatic;
  if (name == "zerodiff") return AttentionBackend::zerodiff;
  if (name == "sdpa") return AttentionBackend::sdpa;
  if (name == "math") return AttentionBackend::math;
  throw ConfigError(zerodiff::str("attention backend must be one of auto, zerodiff, sdpa, math; got '", name, "'"));
}

const char* attention_backend_name(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::automatic:
      return "auto";
    case AttentionBackend::zerodiff:
      return "zerodiff";
    case AttentionBackend::sdpa:
      return "sdpa";
    case AttentionBackend::math:
      return "math";
  }
  return "?";
}

void set_attention_policy(AttentionBackend policy) { g_policy.store(policy); }
AttentionBackend attention_policy() { return g_policy.load(); }

AttentionBackend resolve_attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const AttentionOptions& options) {
  AttentionBackend b = options.backend == AttentionBackend::automatic ? attention_policy() : options.backend;
  if (b == AttentionBackend::automatic) {
    b = zerodiff_unsupported(q, k, v, options).empty() ? AttentionBackend::zerodiff : AttentionBackend::sdpa;
  }
  return b;
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
  }
  log_first_use(backend, q, k);
  const bool up = options.upcast && is_half(q);
  switch (backend) {
    case AttentionBackend::math:
      return attention_math(q, k, v, options);
    case AttentionBackend::zerodiff: {
      const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
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
