// The CPU flash-attention kernels (kernels/cpu/flash_attention.cpp) against a plain float64 reference:
// softmax(scale · q kᵀ) v with ATen ops and its autograd gradients, on the same (rounded) inputs.
//
// Metric for every tensor: max |ours − ref| / max |ref| (the error relative to the tensor's largest value).
// Tolerances: float32 1e-5, bfloat16 2e-2 (the bfloat16 outputs are rounded to 8 significant bits).
// Shapes cover D ∈ {40, 64, 80, 160}, Nq ∈ {1, 77, 390, 1024, 4096}, Nkv ∈ {77, 390, 4096} in a representative
// cross product (big N with small B × H), with q, k, v and dout contiguous, transposed from [B, N, H, D] or with a
// strided last dim.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <tuple>

#include "support/attention_reference.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/FlashAttention.h"
#include "zerodiff/nn/Attention.h"

namespace {

using zerodiff::kernels::flash_attention_backward_cpu;
using zerodiff::kernels::flash_attention_cpu;
using zerodiff::kernels::flash_attention_forward_cpu;

using zerodiff::testing::error_of;
using zerodiff::testing::Layout;
using zerodiff::testing::name;
using zerodiff::testing::rel_err;

at::Tensor make(int64_t B, int64_t H, int64_t N, int64_t D, at::ScalarType dtype, Layout layout) {
  return zerodiff::testing::make_input(B, H, N, D, dtype, layout);
}

struct Case {
  int64_t B, H, Nq, Nkv, D;
  at::ScalarType dtype;
  Layout layout;
};

std::string describe(const Case& c) {
  return "B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) + " Nq=" + std::to_string(c.Nq) +
         " Nkv=" + std::to_string(c.Nkv) + " D=" + std::to_string(c.D) + " " +
         std::string(c.dtype == at::kFloat ? "float32" : "bfloat16") + " " + name(c.layout);
}

// Runs ours (forward, backward, and the autograd wrapper) and the float64 reference; checks every tensor.
void check_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  torch::manual_seed(c.B * 1000003 + c.Nq * 1009 + c.Nkv * 31 + c.D);
  const at::Tensor q = make(c.B, c.H, c.Nq, c.D, c.dtype, c.layout);
  const at::Tensor k = make(c.B, c.H, c.Nkv, c.D, c.dtype, c.layout);
  const at::Tensor v = make(c.B, c.H, c.Nkv, c.D, c.dtype, c.layout);
  // dout in a different layout than q (a transposed or last-dim-strided gradient).
  const at::Tensor dout = make(c.B, c.H, c.Nq, c.D, c.dtype, c.layout == Layout::contiguous ? Layout::transposed
                                                                                             : Layout::strided_d);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));

  // Reference: float64 matmul-softmax-matmul on the same values, gradients by autograd.
  const auto ref = zerodiff::testing::attention_reference(q, k, v, dout, scale, at::kDouble);

  const auto [out, lse] = flash_attention_forward_cpu(q, k, v, scale);
  ASSERT_EQ(out.sizes(), q.sizes());
  ASSERT_EQ(out.scalar_type(), c.dtype);
  ASSERT_EQ(lse.sizes(), q.sizes().slice(0, 3));
  ASSERT_EQ(lse.scalar_type(), at::kFloat);
  const auto [dq, dk, dv] = flash_attention_backward_cpu(dout, q, k, v, out, lse, scale);
  ASSERT_EQ(dq.sizes(), q.sizes());
  ASSERT_EQ(dk.sizes(), k.sizes());
  ASSERT_EQ(dv.sizes(), v.sizes());
  ASSERT_EQ(dq.scalar_type(), c.dtype);
  ASSERT_EQ(dk.scalar_type(), c.dtype);

  const double tol = c.dtype == at::kFloat ? 1e-5 : 2e-2;
  const double e_out = rel_err(out, ref.out);
  const double e_lse = rel_err(lse, ref.lse);
  const double e_dq = rel_err(dq, ref.dq), e_dk = rel_err(dk, ref.dk), e_dv = rel_err(dv, ref.dv);
  EXPECT_LT(e_out, tol);
  EXPECT_LT(e_lse, c.dtype == at::kFloat ? 1e-5 : 1e-4);  // lse is float32 even for bfloat16 inputs
  EXPECT_LT(e_dq, tol);
  EXPECT_LT(e_dk, tol);
  EXPECT_LT(e_dv, tol);
  std::printf("[flash] %-52s out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", describe(c).c_str(), e_out, e_lse, e_dq,
              e_dk, e_dv);

  // The autograd wrapper gives the same output and gradients as the two kernels.
  at::Tensor qa = q.detach().clone().requires_grad_(true);
  at::Tensor ka = k.detach().clone().requires_grad_(true);
  at::Tensor va = v.detach().clone().requires_grad_(true);
  const at::Tensor outa = flash_attention_cpu(qa, ka, va, scale);
  outa.backward(dout);
  EXPECT_TRUE(outa.equal(out));
  EXPECT_TRUE(qa.grad().equal(dq));
  EXPECT_TRUE(ka.grad().equal(dk));
  EXPECT_TRUE(va.grad().equal(dv));
}

}  // namespace

TEST(FlashAttention, Float32SelfAttentionSmall) {
  check_case({2, 3, 77, 77, 40, at::kFloat, Layout::contiguous});
  check_case({2, 2, 390, 390, 64, at::kFloat, Layout::transposed});
}

TEST(FlashAttention, Float32SingleQueryAndCrossAttention) {
  check_case({3, 2, 1, 77, 80, at::kFloat, Layout::transposed});
  check_case({1, 2, 1, 4096, 160, at::kFloat, Layout::strided_d});
  check_case({1, 1, 4096, 77, 40, at::kFloat, Layout::transposed});
  check_case({2, 1, 1024, 390, 160, at::kFloat, Layout::contiguous});
  check_case({1, 2, 77, 390, 64, at::kFloat, Layout::strided_d});
}

TEST(FlashAttention, Float32LongSequences) {
  check_case({1, 1, 4096, 4096, 40, at::kFloat, Layout::transposed});
  check_case({1, 1, 1024, 4096, 80, at::kFloat, Layout::contiguous});
  check_case({1, 2, 390, 4096, 64, at::kFloat, Layout::transposed});
}

TEST(FlashAttention, BFloat16) {
  check_case({2, 2, 77, 77, 40, at::kBFloat16, Layout::transposed});
  check_case({1, 2, 1024, 390, 80, at::kBFloat16, Layout::contiguous});
  check_case({1, 1, 390, 4096, 160, at::kBFloat16, Layout::strided_d});
  check_case({1, 1, 4096, 77, 64, at::kBFloat16, Layout::transposed});
  check_case({2, 1, 1, 390, 40, at::kBFloat16, Layout::contiguous});
}

// Head dims that are not multiples of any SIMD width, and the smallest and largest allowed.
TEST(FlashAttention, OddHeadDims) {
  for (const int64_t d : {1, 3, 17, 256}) {
    check_case({1, 2, 33, 45, d, at::kFloat, Layout::transposed});
  }
}

// With fewer heads than threads the backward pass splits each head's key blocks over threads and sums dq
// partials; the result must equal the single-thread one up to float32 summation order.
TEST(FlashAttention, BackwardSplitsKeyBlocksWhenHeadsAreFewerThanThreads) {
  torch::manual_seed(7);
  const at::Tensor q = torch::randn({1, 1, 300, 64}), k = torch::randn({1, 1, 1000, 64});
  const at::Tensor v = torch::randn({1, 1, 1000, 64}), dout = torch::randn({1, 1, 300, 64});
  const double scale = 0.125;
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  const auto [out, lse] = flash_attention_forward_cpu(q, k, v, scale);
  const auto [dq1, dk1, dv1] = flash_attention_backward_cpu(dout, q, k, v, out, lse, scale);
  at::set_num_threads(4);
  const auto [dq4, dk4, dv4] = flash_attention_backward_cpu(dout, q, k, v, out, lse, scale);
  at::set_num_threads(before);
  EXPECT_LT(rel_err(dq4, dq1.to(at::kDouble)), 1e-6);
  EXPECT_TRUE(dk4.equal(dk1));  // dk and dv are owned by one task per key block: bitwise equal
  EXPECT_TRUE(dv4.equal(dv1));
  EXPECT_GT(dq1.abs().max().item<double>(), 0.0);
}

// The three tile-GEMM backends (oneDNN brgemm, the bundled BLAS's sgemm_, tile-level at::addmm_) all meet the
// reference; a backend missing on this machine is reported and skipped.
TEST(FlashAttention, EveryGemmBackendMatchesTheReference) {
  for (const char* backend : {"brgemm", "blas", "aten"}) {
    try {
      zerodiff::kernels::flash_attention_use_gemm_backend(backend);
    } catch (const zerodiff::Error& e) {
      std::printf("[flash] skipping %s: %s\n", backend, e.what());
      continue;
    }
    SCOPED_TRACE(backend);
    EXPECT_STREQ(zerodiff::kernels::flash_attention_gemm_backend(),
                 std::string(backend) == "brgemm" ? "oneDNN brgemm"
                 : std::string(backend) == "blas" ? "blas sgemm"
                                                  : "at::addmm");
    check_case({1, 2, 200, 300, 40, at::kFloat, Layout::transposed});
    check_case({1, 1, 70, 130, 80, at::kBFloat16, Layout::contiguous});
  }
  zerodiff::kernels::flash_attention_use_gemm_backend("auto");
  EXPECT_THROW(zerodiff::kernels::flash_attention_use_gemm_backend("cublas"), zerodiff::Error);
}

TEST(FlashAttention, EmptyQueriesAndBatches) {
  const at::Tensor k = torch::randn({2, 2, 5, 8}), v = torch::randn({2, 2, 5, 8});
  const auto [out, lse] = flash_attention_forward_cpu(torch::randn({2, 2, 0, 8}), k, v, 0.5);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 2, 0, 8}));
  EXPECT_EQ(lse.sizes(), (std::vector<int64_t>{2, 2, 0}));
  const auto [dq, dk, dv] = flash_attention_backward_cpu(torch::randn({2, 2, 0, 8}), torch::randn({2, 2, 0, 8}), k,
                                                         v, out, lse, 0.5);
  EXPECT_EQ(dq.numel(), 0);
  EXPECT_TRUE(dk.equal(torch::zeros_like(k)));
  EXPECT_TRUE(dv.equal(torch::zeros_like(v)));
}

// Only the inputs that require grad get one; a loss that does not use the output gives none.
TEST(FlashAttention, AutogradPartialRequiresGrad) {
  torch::manual_seed(3);
  const at::Tensor q = torch::randn({1, 2, 10, 16}).requires_grad_(true);
  const at::Tensor k = torch::randn({1, 2, 12, 16});
  const at::Tensor v = torch::randn({1, 2, 12, 16}).requires_grad_(true);
  const at::Tensor out = flash_attention_cpu(q, k, v, 0.25);
  EXPECT_TRUE(out.requires_grad());
  (out * out).sum().backward();
  ASSERT_TRUE(q.grad().defined());
  ASSERT_TRUE(v.grad().defined());
  EXPECT_FALSE(k.grad().defined());
  at::Tensor qd = q.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor ref = at::matmul((at::matmul(qd, k.to(at::kDouble).transpose(-2, -1)) * 0.25).softmax(-1),
                                    v.detach().to(at::kDouble));
  (ref * ref).sum().backward();
  EXPECT_LT(rel_err(q.grad(), qd.grad()), 1e-5);
}

TEST(FlashAttention, ErrorsNameTheTensor) {
  const at::Tensor q = torch::randn({2, 3, 10, 16}), k = torch::randn({2, 3, 12, 16}), v = torch::randn({2, 3, 12, 16});
  auto fwd = [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    return [a, b, c] { flash_attention_forward_cpu(a, b, c, 0.25); };
  };
  EXPECT_EQ(error_of(fwd(q[0], k, v)),
            "flash_attention_forward_cpu: q must be 4-d [B, H, N, D], got shape [3, 10, 16]");
  EXPECT_EQ(error_of(fwd(q, k.unsqueeze(0), v)),
            "flash_attention_forward_cpu: k must be 4-d [B, H, N, D], got shape [1, 2, 3, 12, 16]");
  EXPECT_EQ(error_of(fwd(q, torch::randn({2, 4, 12, 16}), v)),
            "flash_attention_forward_cpu: k must be [B, H, Nkv, D] with B, H, D of q; q [2, 3, 10, 16], k [2, 4, 12, 16]");
  EXPECT_EQ(error_of(fwd(q, torch::randn({1, 3, 12, 16}), v)),
            "flash_attention_forward_cpu: k must be [B, H, Nkv, D] with B, H, D of q; q [2, 3, 10, 16], k [1, 3, 12, 16]");
  EXPECT_EQ(error_of(fwd(q, torch::randn({2, 3, 12, 8}), v)),
            "flash_attention_forward_cpu: k must be [B, H, Nkv, D] with B, H, D of q; q [2, 3, 10, 16], k [2, 3, 12, 8]");
  EXPECT_EQ(error_of(fwd(q, k, torch::randn({2, 3, 11, 16}))),
            "flash_attention_forward_cpu: v must have the shape of k; k [2, 3, 12, 16], v [2, 3, 11, 16]");
  EXPECT_EQ(error_of(fwd(q, k.to(at::kBFloat16), v)),
            "flash_attention_forward_cpu: q, k and v must have one dtype, got q Float, k BFloat16, v Float");
  EXPECT_EQ(error_of(fwd(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble))),
            "flash_attention_forward_cpu: q must be float32 or bfloat16, got Double");
  EXPECT_EQ(error_of(fwd(q.to(at::kHalf), k.to(at::kHalf), v.to(at::kHalf))),
            "flash_attention_forward_cpu: q must be float32 or bfloat16, got Half");
  EXPECT_EQ(error_of(fwd(q, k.to(torch::Device("meta")), v)),
            "flash_attention_forward_cpu: k must be a CPU tensor, got device meta");
  EXPECT_EQ(error_of(fwd(q, at::Tensor(), v)), "flash_attention_forward_cpu: k is undefined");
  EXPECT_EQ(error_of(fwd(torch::randn({1, 1, 4, 257}), torch::randn({1, 1, 4, 257}), torch::randn({1, 1, 4, 257}))),
            "flash_attention_forward_cpu: head dim D must be in 1..256, got 257 (q [1, 1, 4, 257])");
  EXPECT_EQ(error_of(fwd(q, torch::randn({2, 3, 0, 16}), torch::randn({2, 3, 0, 16}))),
            "flash_attention_forward_cpu: k and v need at least one key (Nkv >= 1), got k [2, 3, 0, 16]");
  EXPECT_EQ(error_of([&] { flash_attention_forward_cpu(q, k, v, std::nan("")); }),
            "flash_attention_forward_cpu: scale must be finite, got nan");

  const auto [out, lse] = flash_attention_forward_cpu(q, k, v, 0.25);
  auto bwd = [&](const at::Tensor& dout, const at::Tensor& o, const at::Tensor& l) {
    return [&, dout, o, l] { flash_attention_backward_cpu(dout, q, k, v, o, l, 0.25); };
  };
  EXPECT_EQ(error_of(bwd(torch::randn({2, 3, 10, 8}), out, lse)),
            "flash_attention_backward_cpu: dout must have the shape of q; q [2, 3, 10, 16], dout [2, 3, 10, 8]");
  EXPECT_EQ(error_of(bwd(torch::randn({2, 3, 10, 16}).to(at::kBFloat16), out, lse)),
            "flash_attention_backward_cpu: dout and out must have q's dtype Float, got dout BFloat16, out Float");
  EXPECT_EQ(error_of(bwd(torch::randn({2, 3, 10}), out, lse)),
            "flash_attention_backward_cpu: dout must be 4-d [B, H, N, D], got shape [2, 3, 10]");
  EXPECT_EQ(error_of(bwd(out, out.slice(2, 0, 9), lse)),
            "flash_attention_backward_cpu: out must have the shape of q; q [2, 3, 10, 16], out [2, 3, 9, 16]");
  EXPECT_EQ(error_of(bwd(out, out, lse.slice(2, 0, 9))),
            "flash_attention_backward_cpu: lse must be [B, H, Nq] = [2, 3, 10], got [2, 3, 9]");
  EXPECT_EQ(error_of(bwd(out, out, lse.to(at::kDouble))),
            "flash_attention_backward_cpu: lse must be float32, got Double");
}

// ------------------------------------------------------------------ the front door, zerodiff::nn::attention

namespace {
namespace znn = zerodiff::nn;

}  // namespace

TEST(AttentionFrontDoor, AutoRunsOurKernelWhereItCanAndSdpaElsewhere) {
  std::optional<znn::AttentionPolicyScope> policy(std::in_place, znn::AttentionBackend::automatic);
  const auto q = torch::randn({2, 3, 20, 40}), k = torch::randn({2, 3, 77, 40}), v = torch::randn({2, 3, 77, 40});
  const auto run = [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, znn::AttentionOptions o = {}) {
    return znn::resolve_attention_backend(a, b, c, o);
  };
  using B = znn::AttentionBackend;
  // Ours where it supports the call, on the CPUs where it is the faster one (AVX-512); SDPA elsewhere.
  const std::string target = zerodiff::kernels::flash_attention_simd_target();
  EXPECT_EQ(znn::cpu_kernel_preferred(), target.rfind("AVX3", 0) == 0 || target.rfind("AVX10", 0) == 0) << target;
  const B ours = znn::cpu_kernel_preferred() ? B::zerodiff : B::sdpa;
  EXPECT_EQ(run(q, k, v), ours);
  EXPECT_EQ(run(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16)), ours);
  EXPECT_EQ(run(q.to(torch::kHalf), k.to(torch::kHalf), v.to(torch::kHalf)), B::sdpa);  // no fp16 kernel
  znn::AttentionOptions upcast;
  upcast.upcast = true;
  EXPECT_EQ(run(q.to(torch::kHalf), k.to(torch::kHalf), v.to(torch::kHalf), upcast), ours);  // in fp32
  znn::AttentionOptions explicit_ours;  // an explicit backend runs our kernel on any CPU
  explicit_ours.backend = B::zerodiff;
  EXPECT_EQ(run(q, k, v, explicit_ours), B::zerodiff);
  EXPECT_EQ(run(q.to(torch::kDouble), k.to(torch::kDouble), v.to(torch::kDouble)), B::sdpa);
  znn::AttentionOptions causal;
  causal.causal = true;
  EXPECT_EQ(run(q, q, q, causal), B::sdpa);
  znn::AttentionOptions masked;
  masked.mask = torch::ones({20, 77}, torch::kBool);
  EXPECT_EQ(run(q, k, v, masked), B::sdpa);
  // The run's policy applies to models built with `automatic`; an explicit backend wins.
  policy.emplace(B::math);  // (the previous scope ends first, restoring the policy it found)
  EXPECT_EQ(run(q, k, v), B::math);
  EXPECT_EQ(run(q, k, v, explicit_ours), B::zerodiff);
  znn::AttentionOptions explicit_math;
  explicit_math.backend = B::math;
  EXPECT_EQ(run(q, k, v, explicit_math), B::math);
  // Ours explicitly, on a call it cannot run: a clear error, never a silent fallback.
  causal.backend = B::zerodiff;
  try {
    znn::attention(q, q, q, causal);
    FAIL();
  } catch (const zerodiff::NotImplementedError& e) {
    EXPECT_EQ(std::string(e.what()), "attention backend zerodiff cannot run this call: it has no causal variant "
                                     "(q [2, 3, 20, 40] Float); use attention: auto or sdpa");
  }
  EXPECT_EQ(znn::parse_attention_backend("auto"), B::automatic);
  EXPECT_EQ(znn::parse_attention_backend("zerodiff"), B::zerodiff);
  EXPECT_THROW(znn::parse_attention_backend("flash"), zerodiff::ConfigError);
}

TEST(AttentionFrontDoor, EveryBackendMatchesTheReferenceWithGradients) {
  const znn::AttentionPolicyScope policy(znn::AttentionBackend::automatic);
  torch::manual_seed(0);
  // Non-contiguous q/k/v as the models pass them: [B, N, H, D] projections transposed to [B, H, N, D].
  const auto make = [](int64_t n) { return torch::randn({2, n, 4, 40}).transpose(1, 2).requires_grad_(true); };
  const auto q = make(64), k = make(77), v = make(77);
  const auto dout = torch::randn({2, 4, 64, 40});
  const auto grads = [&](znn::AttentionBackend b) {
    znn::AttentionOptions o;
    o.backend = b;
    const auto out = znn::attention(q, k, v, o);
    const auto g = torch::autograd::grad({out}, {q, k, v}, {dout});
    return std::vector<at::Tensor>{out.detach(), g[0], g[1], g[2]};
  };
  const auto ref = grads(znn::AttentionBackend::math);
  for (auto b : {znn::AttentionBackend::zerodiff, znn::AttentionBackend::sdpa, znn::AttentionBackend::automatic}) {
    const auto got = grads(b);
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_LT((got[i] - ref[i]).abs().max().item<double>(), 1e-5 * ref[i].abs().max().item<double>())
          << znn::attention_backend_name(b) << " tensor " << i;
    }
  }
  // Causal and masked calls: the reference (math) against SDPA.
  const auto x = torch::randn({2, 4, 16, 40});
  znn::AttentionOptions causal;
  causal.causal = true;
  auto math_causal = causal;
  math_causal.backend = znn::AttentionBackend::math;
  EXPECT_LT((znn::attention(x, x, x, causal) - znn::attention(x, x, x, math_causal)).abs().max().item<double>(), 1e-5);
  znn::AttentionOptions masked;
  masked.mask = torch::rand({2, 1, 16, 16}) > 0.3;
  masked.mask.select(3, 0).fill_(true);  // every row attends to something
  auto math_masked = masked;
  math_masked.backend = znn::AttentionBackend::math;
  EXPECT_LT((znn::attention(x, x, x, masked) - znn::attention(x, x, x, math_masked)).abs().max().item<double>(), 1e-5);
}
