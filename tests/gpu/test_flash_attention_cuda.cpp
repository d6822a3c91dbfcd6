// The CUDA flash-attention kernels (kernels/cuda/flash_attn/, zerodiff/kernels/FlashAttention.h) against a plain
// float32 reference computed beside them on the same GPU: softmax(scale · q kᵀ) v with ATen ops on the same
// (rounded) float16 / bfloat16 values, gradients by autograd. Every test skips without CUDA kernels, without a
// CUDA device, or on a device older than compute capability 8.0 — except BuiltWithoutCudaThrowsClearly, which
// checks the stub of a build without CUDA kernels.
//
// Metric for every tensor: max |ours − ref| / max |ref|. Tolerances: out, dq, dk, dv 2e-2 (float16 and bfloat16
// outputs, as the CPU bfloat16 test), lse 1e-4 (float32).
// Matrix: D ∈ {40, 64, 80, 160} × Nq ∈ {1, 77, 390, 1024, 4096} × Nkv ∈ {77, 390, 4096} × {float16, bfloat16},
// with several B × H and q, k, v and dout each in a different layout (contiguous, transposed from [B, N, H, D],
// rows padded to D + 3 — the element-wise load path —, or a strided last dim, which the API copies); then
// B × H = 65,536 (tiny, every head checked; and Nq = 390, Nkv = 77, D = 160 with a transposed dout, sampled heads),
// odd head dims, empty inputs, autograd, error messages, the front door and its self-check.
#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "support/attention_reference.h"
#include "zerodiff/core/BuildInfo.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/FlashAttention.h"
#include "zerodiff/nn/Attention.h"

namespace {

using zerodiff::kernels::flash_attention_backward_cuda;
using zerodiff::kernels::flash_attention_cuda;
using zerodiff::kernels::flash_attention_forward_cuda;

// Why this machine cannot run the CUDA kernels ("" when it can).
std::string cannot_run() {
  if (!zerodiff::built_with_cuda()) return "built without CUDA kernels";
  if (!torch::cuda::is_available()) return "no CUDA device";
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  if (props->major < 8) return "the kernels need compute capability 8.0 or newer";
  return {};
}

#define ZD_REQUIRE_CUDA_KERNELS()                          \
  do {                                                     \
    const std::string why_ = cannot_run();                 \
    if (!why_.empty()) GTEST_SKIP() << why_;               \
  } while (0)

using zerodiff::testing::error_of;
using zerodiff::testing::Layout;
using zerodiff::testing::name;
using zerodiff::testing::rel_err;

const auto kCuda = torch::TensorOptions().device(torch::kCUDA);

// A [B, H, N, D] tensor of N(0, 1) values rounded to dtype, on the GPU, in the given memory layout.
at::Tensor make(int64_t B, int64_t H, int64_t N, int64_t D, at::ScalarType dtype, Layout layout) {
  return zerodiff::testing::make_input(B, H, N, D, dtype, layout, torch::kCUDA);
}

struct Case {
  int64_t B, H, Nq, Nkv, D;
  at::ScalarType dtype;
  Layout lq, lk, lv, ldo;
};

std::string describe(const Case& c) {
  return "B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) + " Nq=" + std::to_string(c.Nq) +
         " Nkv=" + std::to_string(c.Nkv) + " D=" + std::to_string(c.D) +
         (c.dtype == at::kHalf ? " float16" : " bfloat16") + " q " + name(c.lq) + " k " + name(c.lk) + " v " +
         name(c.lv) + " dout " + name(c.ldo);
}

using Reference = zerodiff::testing::AttentionReference;

// float32 matmul-softmax-matmul on the same values, gradients by autograd (autocast off, TF32 off by default).
Reference reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
                    double scale) {
  return zerodiff::testing::attention_reference(q, k, v, dout, scale, at::kFloat);
}

// Runs both kernels on one case and checks every tensor against the float32 reference; `autograd` also checks
// the differentiable wrapper.
void check_case(const Case& c, bool autograd = false) {
  SCOPED_TRACE(describe(c));
  torch::manual_seed(c.B * 1000003 + c.Nq * 1009 + c.Nkv * 31 + c.D);
  const at::Tensor q = make(c.B, c.H, c.Nq, c.D, c.dtype, c.lq);
  const at::Tensor k = make(c.B, c.H, c.Nkv, c.D, c.dtype, c.lk);
  const at::Tensor v = make(c.B, c.H, c.Nkv, c.D, c.dtype, c.lv);
  const at::Tensor dout = make(c.B, c.H, c.Nq, c.D, c.dtype, c.ldo);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));

  const auto [out, lse] = flash_attention_forward_cuda(q, k, v, scale);
  ASSERT_EQ(out.sizes(), q.sizes());
  ASSERT_EQ(out.scalar_type(), c.dtype);
  ASSERT_TRUE(out.is_contiguous());
  ASSERT_EQ(lse.sizes(), q.sizes().slice(0, 3));
  ASSERT_EQ(lse.scalar_type(), at::kFloat);
  const auto [dq, dk, dv] = flash_attention_backward_cuda(dout, q, k, v, out, lse, scale);
  ASSERT_EQ(dq.sizes(), q.sizes());
  ASSERT_EQ(dk.sizes(), k.sizes());
  ASSERT_EQ(dv.sizes(), v.sizes());
  ASSERT_EQ(dq.scalar_type(), c.dtype);
  ASSERT_EQ(dk.scalar_type(), c.dtype);
  ASSERT_EQ(dv.scalar_type(), c.dtype);

  const Reference ref = reference(q, k, v, dout, scale);
  const double e_out = rel_err(out, ref.out), e_lse = rel_err(lse, ref.lse);
  const double e_dq = rel_err(dq, ref.dq), e_dk = rel_err(dk, ref.dk), e_dv = rel_err(dv, ref.dv);
  EXPECT_LT(e_out, 2e-2);
  EXPECT_LT(e_lse, 1e-4);
  EXPECT_LT(e_dq, 2e-2);
  EXPECT_LT(e_dk, 2e-2);
  EXPECT_LT(e_dv, 2e-2);
  std::printf("[flash-cuda] %-96s out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", describe(c).c_str(), e_out, e_lse,
              e_dq, e_dk, e_dv);

  if (autograd) {
    // The autograd wrapper: the same forward (deterministic: bitwise), gradients as the kernels (dq's float32
    // atomics may add in another order).
    at::Tensor qa = q.detach().clone().requires_grad_(true);
    at::Tensor ka = k.detach().clone().requires_grad_(true);
    at::Tensor va = v.detach().clone().requires_grad_(true);
    const at::Tensor outa = flash_attention_cuda(qa, ka, va, scale);
    outa.backward(dout);
    EXPECT_TRUE(outa.equal(out));
    EXPECT_LT(rel_err(qa.grad(), dq.to(at::kFloat)), 1e-2);
    EXPECT_LT(rel_err(ka.grad(), dk.to(at::kFloat)), 1e-2);
    EXPECT_LT(rel_err(va.grad(), dv.to(at::kFloat)), 1e-2);
  }
}

// The acceptance matrix for one head dim: Nq × Nkv × dtype, B × H and layouts rotating over the cases.
void check_matrix(int64_t D) {
  const Layout layouts[4] = {Layout::transposed, Layout::padded_rows, Layout::strided_d, Layout::contiguous};
  const int64_t bh[4][2] = {{2, 3}, {1, 4}, {3, 2}, {2, 1}};
  int i = 0;
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    for (const int64_t nq : {1, 77, 390, 1024, 4096}) {
      for (const int64_t nkv : {77, 390, 4096}) {
        // Keep the float32 reference's B·H·Nq·Nkv score matrix (plus autograd's copies) near 0.5 GiB.
        int64_t B = bh[i % 4][0], H = bh[i % 4][1];
        if (nq * nkv >= 1024 * 4096) B = 1, H = 2;
        check_case({B, H, nq, nkv, D, dtype, layouts[i % 4], layouts[(i + 1) % 4], layouts[(i + 2) % 4],
                    layouts[(i + 3) % 4]},
                   /*autograd=*/i % 7 == 0);
        ++i;
      }
    }
  }
}

}  // namespace

TEST(FlashAttentionCuda, MatrixHeadDim40) {
  ZD_REQUIRE_CUDA_KERNELS();
  check_matrix(40);
}

TEST(FlashAttentionCuda, MatrixHeadDim64) {
  ZD_REQUIRE_CUDA_KERNELS();
  check_matrix(64);
}

TEST(FlashAttentionCuda, MatrixHeadDim80) {
  ZD_REQUIRE_CUDA_KERNELS();
  check_matrix(80);
}

TEST(FlashAttentionCuda, MatrixHeadDim160) {
  ZD_REQUIRE_CUDA_KERNELS();
  check_matrix(160);
}

// Head dims off the buckets' edges and the smallest and largest allowed (element-wise loads where D % 8 != 0).
TEST(FlashAttentionCuda, OddHeadDims) {
  ZD_REQUIRE_CUDA_KERNELS();
  for (const int64_t d : {1, 17, 63, 65, 100, 129, 200, 256}) {
    check_case({1, 2, 33, 45, d, at::kHalf, Layout::transposed, Layout::contiguous, Layout::padded_rows,
                Layout::contiguous});
    check_case({2, 1, 70, 130, d, at::kBFloat16, Layout::contiguous, Layout::transposed, Layout::transposed,
                Layout::padded_rows});
  }
}

// B × H = 65,536 (more than gridDim.y / z allow): tiny problems, every head against the reference.
TEST(FlashAttentionCuda, SixtyFiveThousandHeadsTiny) {
  ZD_REQUIRE_CUDA_KERNELS();
  check_case({4096, 16, 7, 5, 40, at::kHalf, Layout::transposed, Layout::contiguous, Layout::contiguous,
              Layout::transposed});
  check_case({8192, 8, 70, 77, 64, at::kBFloat16, Layout::contiguous, Layout::transposed, Layout::transposed,
              Layout::padded_rows});
}

// The acceptance case: B × H = 65,536, Nq = 390, Nkv = 77, D = 160, a transposed (non-contiguous) dout. About
// 56 GB of device memory (q, dout, out, dq 8.2 GB each in float16, dq's float32 buffer 16.4 GB): skipped on smaller
// GPUs. The reference is computed for a sample of heads (heads are independent).
TEST(FlashAttentionCuda, SixtyFiveThousandHeadsSdShape) {
  ZD_REQUIRE_CUDA_KERNELS();
  const int64_t B = 8192, H = 8, Nq = 390, Nkv = 77, D = 160;
  const double need = (4.0 * B * H * Nq * D * 2 + 4.0 * B * H * Nkv * D * 2 + 4.0 * B * H * Nq * D) * 1.1;
  const double total = static_cast<double>(at::cuda::getCurrentDeviceProperties()->totalGlobalMem);
  if (total < need) GTEST_SKIP() << "needs ~" << need / 1e9 << " GB of device memory, the GPU has " << total / 1e9;
  torch::manual_seed(11);
  const auto half = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kHalf);
  const at::Tensor q = torch::randn({B, H, Nq, D}, half);
  const at::Tensor k = torch::randn({B, H, Nkv, D}, half);
  const at::Tensor v = torch::randn({B, H, Nkv, D}, half);
  const at::Tensor dout = torch::randn({B, Nq, H, D}, half).transpose(1, 2);
  ASSERT_FALSE(dout.is_contiguous());
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  at::Tensor out, lse, dq, dk, dv;
  std::tie(out, lse) = flash_attention_forward_cuda(q, k, v, scale);
  std::tie(dq, dk, dv) = flash_attention_backward_cuda(dout, q, k, v, out, lse, scale);
  torch::cuda::synchronize();
  for (const int64_t bh : {int64_t{0}, int64_t{1}, int64_t{12345}, int64_t{32768}, int64_t{65534}, int64_t{65535}}) {
    const int64_t b = bh / H, h = bh % H;
    SCOPED_TRACE("head " + std::to_string(bh));
    const auto sel = [b, h](const at::Tensor& t) { return t.select(0, b).select(0, h).unsqueeze(0).unsqueeze(0); };
    const Reference ref = reference(sel(q), sel(k), sel(v), sel(dout), scale);
    EXPECT_LT(rel_err(sel(out), ref.out), 2e-2);
    EXPECT_LT(rel_err(lse.select(0, b).select(0, h), ref.lse.flatten()), 1e-4);
    EXPECT_LT(rel_err(sel(dq), ref.dq), 2e-2);
    EXPECT_LT(rel_err(sel(dk), ref.dk), 2e-2);
    EXPECT_LT(rel_err(sel(dv), ref.dv), 2e-2);
  }
}

TEST(FlashAttentionCuda, EmptyQueriesAndBatches) {
  ZD_REQUIRE_CUDA_KERNELS();
  const auto half = kCuda.dtype(torch::kHalf);
  const at::Tensor k = torch::randn({2, 2, 5, 8}, half), v = torch::randn({2, 2, 5, 8}, half);
  const auto [out, lse] = flash_attention_forward_cuda(torch::randn({2, 2, 0, 8}, half), k, v, 0.5);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 2, 0, 8}));
  EXPECT_EQ(lse.sizes(), (std::vector<int64_t>{2, 2, 0}));
  const auto [dq, dk, dv] = flash_attention_backward_cuda(torch::randn({2, 2, 0, 8}, half),
                                                          torch::randn({2, 2, 0, 8}, half), k, v, out, lse, 0.5);
  EXPECT_EQ(dq.numel(), 0);
  EXPECT_TRUE(dk.equal(torch::zeros_like(k)));
  EXPECT_TRUE(dv.equal(torch::zeros_like(v)));
  const auto [out0, lse0] = flash_attention_forward_cuda(torch::randn({0, 2, 4, 8}, half),
                                                         torch::randn({0, 2, 5, 8}, half),
                                                         torch::randn({0, 2, 5, 8}, half), 0.5);
  EXPECT_EQ(out0.numel(), 0);
}

// Only the inputs that require grad get one; an expanded gradient (stride 0 everywhere) is accepted.
TEST(FlashAttentionCuda, AutogradPartialRequiresGradAndExpandedGradient) {
  ZD_REQUIRE_CUDA_KERNELS();
  torch::manual_seed(3);
  const auto half = kCuda.dtype(torch::kHalf);
  const at::Tensor q = torch::randn({1, 2, 10, 16}, half).requires_grad_(true);
  const at::Tensor k = torch::randn({1, 2, 12, 16}, half);
  const at::Tensor v = torch::randn({1, 2, 12, 16}, half).requires_grad_(true);
  const at::Tensor out = flash_attention_cuda(q, k, v, 0.25);
  EXPECT_TRUE(out.requires_grad());
  out.sum().backward();  // dout = ones, expanded: every stride 0
  ASSERT_TRUE(q.grad().defined());
  ASSERT_TRUE(v.grad().defined());
  EXPECT_FALSE(k.grad().defined());
  const Reference ref = reference(q.detach(), k, v.detach(), torch::ones({1, 2, 10, 16}, kCuda), 0.25);
  EXPECT_LT(rel_err(q.grad(), ref.dq), 2e-2);
  EXPECT_LT(rel_err(v.grad(), ref.dv), 2e-2);
}

TEST(FlashAttentionCuda, ErrorsNameTheTensor) {
  ZD_REQUIRE_CUDA_KERNELS();
  const auto half = kCuda.dtype(torch::kHalf);
  const at::Tensor q = torch::randn({2, 3, 10, 16}, half), k = torch::randn({2, 3, 12, 16}, half);
  const at::Tensor v = torch::randn({2, 3, 12, 16}, half);
  auto fwd = [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    return [a, b, c] { flash_attention_forward_cuda(a, b, c, 0.25); };
  };
  EXPECT_EQ(error_of(fwd(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat))),
            "flash_attention_forward_cuda: q must be float16 or bfloat16, got Float");
  EXPECT_EQ(error_of(fwd(q, k.to(at::kBFloat16), v)),
            "flash_attention_forward_cuda: q, k and v must have one dtype, got q Half, k BFloat16, v Half");
  EXPECT_EQ(error_of(fwd(q, torch::randn({2, 4, 12, 16}, half), v)),
            "flash_attention_forward_cuda: k must be [B, H, Nkv, D] with B, H, D of q; q [2, 3, 10, 16], k [2, 4, 12, 16]");
  EXPECT_EQ(error_of(fwd(q, k, torch::randn({2, 3, 11, 16}, half))),
            "flash_attention_forward_cuda: v must have the shape of k; k [2, 3, 12, 16], v [2, 3, 11, 16]");
  EXPECT_EQ(error_of(fwd(q[0], k, v)), "flash_attention_forward_cuda: q must be 4-d [B, H, N, D], got shape [3, 10, 16]");
  EXPECT_EQ(error_of(fwd(q, k.cpu(), v)), "flash_attention_forward_cuda: k must be a CUDA tensor, got device cpu");
  EXPECT_EQ(error_of(fwd(q, k, at::Tensor())), "flash_attention_forward_cuda: v is undefined");
  const at::Tensor big = torch::randn({1, 1, 4, 257}, half);
  EXPECT_EQ(error_of(fwd(big, big, big)),
            "flash_attention_forward_cuda: head dim D must be in 1..256, got 257 (q [1, 1, 4, 257])");
  EXPECT_EQ(error_of(fwd(q, torch::randn({2, 3, 0, 16}, half), torch::randn({2, 3, 0, 16}, half))),
            "flash_attention_forward_cuda: k and v need at least one key (Nkv >= 1), got k [2, 3, 0, 16]");
  EXPECT_EQ(error_of([&] { flash_attention_forward_cuda(q, k, v, std::nan("")); }),
            "flash_attention_forward_cuda: scale must be finite, got nan");

  const auto [out, lse] = flash_attention_forward_cuda(q, k, v, 0.25);
  auto bwd = [&](const at::Tensor& dout, const at::Tensor& o, const at::Tensor& l) {
    return [&, dout, o, l] { flash_attention_backward_cuda(dout, q, k, v, o, l, 0.25); };
  };
  EXPECT_EQ(error_of(bwd(torch::randn({2, 3, 10, 8}, half), out, lse)),
            "flash_attention_backward_cuda: dout must have the shape of q; q [2, 3, 10, 16], dout [2, 3, 10, 8]");
  EXPECT_EQ(error_of(bwd(out.to(at::kBFloat16), out, lse)),
            "flash_attention_backward_cuda: dout and out must have q's dtype Half, got dout BFloat16, out Half");
  EXPECT_EQ(error_of(bwd(out, out.slice(2, 0, 9), lse)),
            "flash_attention_backward_cuda: out must have the shape of q; q [2, 3, 10, 16], out [2, 3, 9, 16]");
  EXPECT_EQ(error_of(bwd(out, out, lse.slice(2, 0, 9))),
            "flash_attention_backward_cuda: lse must be [B, H, Nq] = [2, 3, 10], got [2, 3, 9]");
  EXPECT_EQ(error_of(bwd(out, out, lse.to(at::kDouble))), "flash_attention_backward_cuda: lse must be float32, got Double");
  EXPECT_EQ(error_of(bwd(out, out, lse.cpu())), "flash_attention_backward_cuda: lse is on cpu but q is on cuda:0");
  EXPECT_EQ(error_of(bwd(out.cpu(), out, lse)),
            "flash_attention_backward_cuda: dout must be a CUDA tensor, got device cpu");
}

// A build without CUDA kernels keeps the functions; they say why they cannot run. Needs no GPU.
TEST(FlashAttentionCuda, BuiltWithoutCudaThrowsClearly) {
  if (zerodiff::built_with_cuda()) GTEST_SKIP() << "this build has the CUDA kernels";
  const at::Tensor q = torch::randn({1, 1, 4, 8});
  const std::string msg = error_of([&] { flash_attention_forward_cuda(q, q, q, 0.5); });
  EXPECT_NE(msg.find("flash_attention_forward_cuda: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("built without CUDA kernels"), std::string::npos) << msg;
  EXPECT_NE(zerodiff::kernels::flash_attention_cuda_unsupported(q, q, q).find("built without CUDA kernels"),
            std::string::npos);
}

// ------------------------------------------------------------------ the front door on CUDA

namespace {
namespace znn = zerodiff::nn;
}  // namespace

// The self-check that guards `auto` passes for every dtype and Stable Diffusion head dim (its figures printed).
TEST(FlashAttentionCuda, SelfCheckPasses) {
  ZD_REQUIRE_CUDA_KERNELS();
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    for (const int64_t d : {40, 64, 80, 160}) {
      const znn::CudaKernelSelfCheck r = znn::cuda_kernel_self_check(torch::Device(torch::kCUDA, 0), dtype, d);
      std::printf("[flash-cuda] self-check: %s\n", r.report.c_str());
      EXPECT_TRUE(r.passed) << r.report;
    }
  }
}

TEST(FlashAttentionCuda, FrontDoorPicksOurKernelForHalfPrecisionOnly) {
  ZD_REQUIRE_CUDA_KERNELS();
  const znn::AttentionPolicyScope policy(znn::AttentionBackend::automatic);
  using B = znn::AttentionBackend;
  const at::Tensor q = torch::randn({2, 3, 20, 40}, kCuda), k = torch::randn({2, 3, 77, 40}, kCuda);
  const at::Tensor v = torch::randn({2, 3, 77, 40}, kCuda);
  const auto run = [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, znn::AttentionOptions o = {}) {
    return znn::resolve_attention_backend(a, b, c, o);
  };
  EXPECT_EQ(run(q.to(at::kHalf), k.to(at::kHalf), v.to(at::kHalf)), B::zerodiff);
  EXPECT_EQ(run(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16)), B::zerodiff);
  EXPECT_EQ(run(q, k, v), B::sdpa);  // float32 on CUDA: SDPA
  znn::AttentionOptions upcast;
  upcast.upcast = true;
  EXPECT_EQ(run(q.to(at::kHalf), k.to(at::kHalf), v.to(at::kHalf), upcast), B::sdpa);
  const at::Tensor wide = torch::randn({1, 1, 8, 300}, kCuda).to(at::kHalf);
  EXPECT_EQ(run(wide, wide, wide), B::sdpa);
  znn::AttentionOptions causal;
  causal.causal = true;
  EXPECT_EQ(run(q.to(at::kHalf), q.to(at::kHalf), q.to(at::kHalf), causal), B::sdpa);
  // Ours explicitly, on a call it cannot run: a clear error naming the reason, never a silent fallback.
  znn::AttentionOptions ours;
  ours.backend = B::zerodiff;
  try {
    znn::attention(q, k, v, ours);
    FAIL() << "float32 on CUDA ran";
  } catch (const zerodiff::NotImplementedError& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention backend zerodiff cannot run this call: on CUDA it takes float16 or bfloat16 inputs (got "
              "Float) (q [2, 3, 20, 40] Float); use attention: auto or sdpa");
  }
  try {
    znn::attention(wide, wide, wide, ours);
    FAIL() << "D = 300 ran";
  } catch (const zerodiff::NotImplementedError& e) {
    EXPECT_NE(std::string(e.what()).find("head dim 300 is outside 1..256"), std::string::npos) << e.what();
  }
}

// Through zerodiff::nn::attention with the models' layout (a transposed [B, N, H, D] projection): every backend
// gives the float32 reference's output and gradients within the half-precision tolerance.
TEST(FlashAttentionCuda, FrontDoorMatchesTheReferenceWithGradients) {
  ZD_REQUIRE_CUDA_KERNELS();
  const znn::AttentionPolicyScope policy(znn::AttentionBackend::automatic);
  torch::manual_seed(0);
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    const auto make_in = [dtype](int64_t n) {
      return torch::randn({2, n, 8, 40}, kCuda).to(dtype).transpose(1, 2).requires_grad_(true);
    };
    const at::Tensor q = make_in(256), k = make_in(77), v = make_in(77);
    const at::Tensor dout = torch::randn({2, 8, 256, 40}, kCuda).to(dtype);
    const Reference ref = reference(q.detach(), k.detach(), v.detach(), dout, 1.0 / std::sqrt(40.0));
    for (const auto b : {znn::AttentionBackend::zerodiff, znn::AttentionBackend::automatic, znn::AttentionBackend::sdpa}) {
      znn::AttentionOptions o;
      o.backend = b;
      const at::Tensor out = znn::attention(q, k, v, o);
      const auto g = torch::autograd::grad({out}, {q, k, v}, {dout});
      SCOPED_TRACE(znn::attention_backend_name(b));
      EXPECT_LT(rel_err(out, ref.out), 2e-2);
      EXPECT_LT(rel_err(g[0], ref.dq), 2e-2);
      EXPECT_LT(rel_err(g[1], ref.dk), 2e-2);
      EXPECT_LT(rel_err(g[2], ref.dv), 2e-2);
    }
  }
}
