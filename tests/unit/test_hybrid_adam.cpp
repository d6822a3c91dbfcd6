// HybridAdam: the SIMD CPU Adam/AdamW against torch's own optimizers, the half copy, un-scaling, serialization.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/kernels/Adam.h"
#include "zerodiff/optim/HybridAdam.h"

namespace {

// Parameters of awkward sizes (not multiples of any SIMD width; one larger than a kernel block of 16 Ki).
std::vector<at::Tensor> make_params(int64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({37}).requires_grad_(true), torch::randn({129, 3}).requires_grad_(true),
          torch::randn({20011}).requires_grad_(true)};
}

void fake_grads(const std::vector<at::Tensor>& params, int64_t step, double scale = 1.0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + step);
  for (const auto& p : params) {
    at::Tensor q = p;
    q.mutable_grad() = at::randn(p.sizes(), gen) * scale;
  }
}

double max_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (a[i] - b[i]).abs().max().item<double>());
  return d;
}

}  // namespace

TEST(HybridAdam, MatchesTorchAdamWAndAdamOver100Steps) {
  torch::set_num_threads(2);
  for (const bool adamw : {true, false}) {
    auto ours = make_params(0), ref = make_params(0);
    // Two groups: different lr and weight decay.
    auto opts = torch::optim::AdamWOptions(1e-3).betas({0.9, 0.99}).eps(1e-8).weight_decay(0.05);
    std::vector<torch::optim::OptimizerParamGroup> g1{
        torch::optim::OptimizerParamGroup({ours[0], ours[1]}),
        torch::optim::OptimizerParamGroup({ours[2]}, std::make_unique<torch::optim::AdamWOptions>(
                                                         torch::optim::AdamWOptions(3e-4).betas({0.9, 0.99}).weight_decay(0.0)))};
    zerodiff::optim::HybridAdam hybrid(g1, opts, adamw);
    std::unique_ptr<torch::optim::Optimizer> torch_opt;
    if (adamw) {
      std::vector<torch::optim::OptimizerParamGroup> g2{
          torch::optim::OptimizerParamGroup({ref[0], ref[1]}),
          torch::optim::OptimizerParamGroup({ref[2]}, std::make_unique<torch::optim::AdamWOptions>(
                                                          torch::optim::AdamWOptions(3e-4).betas({0.9, 0.99}).weight_decay(0.0)))};
      torch_opt = std::make_unique<torch::optim::AdamW>(g2, opts);
    } else {
      auto aopts = torch::optim::AdamOptions(1e-3).betas({0.9, 0.99}).eps(1e-8).weight_decay(0.05);
      std::vector<torch::optim::OptimizerParamGroup> g2{
          torch::optim::OptimizerParamGroup({ref[0], ref[1]}),
          torch::optim::OptimizerParamGroup({ref[2]}, std::make_unique<torch::optim::AdamOptions>(
                                                          torch::optim::AdamOptions(3e-4).betas({0.9, 0.99}).weight_decay(0.0)))};
      torch_opt = std::make_unique<torch::optim::Adam>(g2, aopts);
    }
    for (int s = 0; s < 100; ++s) {
      fake_grads(ours, s);
      fake_grads(ref, s);
      if (s % 10 == 3) {  // a parameter without a gradient is skipped (no decay, no state change)
        ours[0].mutable_grad().reset();
        ref[0].mutable_grad().reset();
      }
      hybrid.step();
      torch_opt->step();
    }
    const double d = max_diff(ours, ref);
    EXPECT_LE(d, 1e-6) << (adamw ? "AdamW" : "Adam") << " (SIMD target " << zerodiff::kernels::adam_simd_target() << ")";
    EXPECT_GT(max_diff(ours, make_params(0)), 1e-2);  // and they did train
  }
}

TEST(HybridAdam, HalfCopyIsTheCastMasterAndUnscalingIsExact) {
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    auto a = make_params(1), b = make_params(1);
    zerodiff::optim::HybridAdam scaled(a, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
    zerodiff::optim::HybridAdam plain(b, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
    std::vector<at::Tensor> copies;
    for (const auto& p : a) {
      copies.push_back(at::empty(p.sizes(), p.options().dtype(dtype)));
      scaled.set_half_copy(p, copies.back());
    }
    scaled.set_inv_grad_scale(1.0 / 1024);  // gradients arrive multiplied by a loss scale of 1024
    for (int s = 0; s < 5; ++s) {
      fake_grads(a, s, 1024.0);
      fake_grads(b, s);
      scaled.step();
      plain.step();
    }
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(a[i], b[i])) << "un-scaling by a power of two is exact";
      EXPECT_TRUE(torch::equal(copies[i], a[i].detach().to(dtype))) << "half copy of parameter " << i;
    }
  }
}

TEST(HybridAdam, StateDictsAreInterchangeableWithTorchAdamW) {
  auto a = make_params(2), b = make_params(2);
  zerodiff::optim::HybridAdam hybrid(a, torch::optim::AdamWOptions(1e-3));
  torch::optim::AdamW adamw(b, torch::optim::AdamWOptions(1e-3));
  for (int s = 0; s < 3; ++s) {
    fake_grads(a, s);
    fake_grads(b, s);
    hybrid.step();
    adamw.step();
  }
  // HybridAdam's state into a fresh torch AdamW, and on: both continue alike.
  std::stringstream stream;
  {
    torch::serialize::OutputArchive out;
    hybrid.save(out);
    out.save_to(stream);
  }
  auto c = make_params(2);
  for (size_t i = 0; i < c.size(); ++i) c[i].detach().copy_(a[i].detach());
  torch::optim::AdamW restored(c, torch::optim::AdamWOptions(1e-3));
  {
    torch::serialize::InputArchive in;
    in.load_from(stream);
    restored.load(in);
  }
  fake_grads(a, 3);
  fake_grads(c, 3);
  hybrid.step();
  restored.step();
  EXPECT_LE(max_diff(a, c), 1e-6);
}

TEST(HybridAdam, BadInputIsRefused) {
  auto half = torch::randn({4}).to(at::kHalf).requires_grad_(true);
  EXPECT_THROW(zerodiff::optim::HybridAdam({half}), zerodiff::Error);
  auto p = torch::randn({4}).requires_grad_(true);
  EXPECT_THROW(zerodiff::optim::HybridAdam({p}, torch::optim::AdamWOptions(1e-3).amsgrad(true)),
               zerodiff::NotImplementedError);
  zerodiff::optim::HybridAdam ok({p});
  EXPECT_THROW(ok.set_half_copy(p, torch::empty({5}, at::kHalf)), zerodiff::Error);
  at::Tensor m = torch::zeros({3}), v = torch::zeros({4}), g = torch::zeros({4});
  at::Tensor q = p.detach();
  EXPECT_THROW(zerodiff::kernels::adam_step_cpu(q, g, m, v, {}), zerodiff::Error);  // exp_avg of 3 elements
}

TEST(AdamKernel, MatchesItsReferenceOnOneLargeStep) {
  torch::manual_seed(3);
  const int64_t n = 1'000'003;
  at::Tensor p = torch::randn({n}), g = torch::randn({n}), m = torch::randn({n}) * 0.1, v = torch::rand({n}) * 0.01;
  at::Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
  zerodiff::kernels::AdamStepArgs args;
  args.step = 7;
  args.weight_decay = 0.1;
  zerodiff::kernels::adam_step_cpu(p, g, m, v, args);
  zerodiff::kernels::adam_step_reference(p2, g, m2, v2, args);
  EXPECT_LE((p - p2).abs().max().item<double>(), 1e-6);
  EXPECT_LE((m - m2).abs().max().item<double>(), 1e-6);
  EXPECT_LE((v - v2).abs().max().item<double>(), 1e-6);
}
