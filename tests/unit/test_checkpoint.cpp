// Activation checkpointing: the same values and gradients as without it (including through dropout, whose
// masks are redrawn identically in the recomputation), for one unit and for the whole UNet.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/models/unet/UNet2DConditionModel.h"
#include "zerodiff/nn/Autocast.h"
#include "zerodiff/nn/Checkpoint.h"

namespace {

// Autograd nodes of `out`'s graph whose name contains `needle` (breadth-first over next_edges).
int count_nodes(const at::Tensor& out, const std::string& needle) {
  std::vector<std::shared_ptr<torch::autograd::Node>> queue{out.grad_fn()};
  std::set<torch::autograd::Node*> seen;
  int found = 0;
  while (!queue.empty()) {
    auto node = queue.back();
    queue.pop_back();
    if (!node || !seen.insert(node.get()).second) continue;
    if (node->name().find(needle) != std::string::npos) ++found;
    for (const auto& edge : node->next_edges()) queue.push_back(edge.function);
  }
  return found;
}

// Linear -> dropout -> GELU -> Linear, with a second input mixed in: [B, 8] x [B, 8] -> [B, 8].
struct Block : torch::nn::Module {
  Block() {
    a = register_module("a", torch::nn::Linear(8, 16));
    drop = register_module("drop", torch::nn::Dropout(0.3));
    b = register_module("b", torch::nn::Linear(16, 8));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& y) { return b(torch::gelu(drop(a(x + 0.5 * y)))); }
  torch::nn::Linear a{nullptr}, b{nullptr};
  torch::nn::Dropout drop{nullptr};
};

struct Grads {
  at::Tensor out, gx, gy;
  std::map<std::string, at::Tensor> param_grads;
  double next_random = 0;  // a draw after backward: checkpointing must leave the RNG where it would be
};

Grads run(bool checkpointed, bool inputs_require_grad) {
  torch::manual_seed(3);
  auto block = std::make_shared<Block>();
  auto x = torch::randn({4, 8}).requires_grad_(inputs_require_grad);
  auto y = torch::randn({4, 8}).requires_grad_(inputs_require_grad);
  torch::manual_seed(11);  // the dropout mask comes from here
  at::Tensor out = checkpointed ? zerodiff::nn::checkpoint(
                                      [block](const std::vector<at::Tensor>& in) { return block->forward(in[0], in[1]); },
                                      {x, y})
                                : block->forward(x, y);
  (out.pow(2).sum() + out.sum()).backward();
  Grads r{out.detach(), x.grad(), y.grad(), {}, torch::rand({1}).item<double>()};
  for (const auto& p : block->named_parameters()) r.param_grads[p.key()] = p.value().grad();
  return r;
}

}  // namespace

TEST(Checkpoint, SameValuesAndGradientsThroughDropout) {
  const Grads plain = run(false, true), ckpt = run(true, true);
  EXPECT_TRUE(torch::equal(plain.out, ckpt.out));
  EXPECT_LE((plain.gx - ckpt.gx).abs().max().item<double>(), 1e-6);
  EXPECT_LE((plain.gy - ckpt.gy).abs().max().item<double>(), 1e-6);
  for (const auto& [name, g] : plain.param_grads) {
    ASSERT_TRUE(ckpt.param_grads.at(name).defined()) << name;
    EXPECT_LE((g - ckpt.param_grads.at(name)).abs().max().item<double>(), 1e-6) << name;
  }
  EXPECT_EQ(plain.next_random, ckpt.next_random);
  // Some units were dropped (the test exercises dropout) and the gradients are not trivially zero.
  EXPECT_GT((plain.gx != 0).sum().item<int64_t>(), 0);
}

TEST(Checkpoint, ParametersGetGradientsWhenNoInputRequiresGrad) {
  const Grads plain = run(false, false), ckpt = run(true, false);
  for (const auto& [name, g] : plain.param_grads) {
    ASSERT_TRUE(ckpt.param_grads.at(name).defined()) << name << " got no gradient through the checkpoint";
    EXPECT_LE((g - ckpt.param_grads.at(name)).abs().max().item<double>(), 1e-6) << name;
  }
  EXPECT_FALSE(ckpt.gx.defined());
}

TEST(Checkpoint, WithoutGradModeItIsAPlainCall) {
  torch::NoGradGuard no_grad;
  int calls = 0;
  const auto out = zerodiff::nn::checkpoint(
      [&calls](const std::vector<at::Tensor>& in) {
        ++calls;
        return in[0] * 2;
      },
      {torch::ones({2})});
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(torch::equal(out, torch::full({2}, 2.0)));
  EXPECT_THROW(zerodiff::nn::checkpoint([](const std::vector<at::Tensor>& in) { return in[0]; }, {at::Tensor()}),
               zerodiff::Error);
}

TEST(Checkpoint, UNetGradientsEqualWithAndWithoutCheckpointing) {
  torch::set_num_threads(1);
  auto config = zerodiff::io::read_config_json(std::string(ZERODIFF_TEST_DATA_DIR) + "/parity/unet_sd1_tiny");
  config["dropout"] = 0.1;  // resnet dropout, so the recomputation must redraw the same masks
  auto grads = [&](bool checkpointed) {
    torch::manual_seed(0);
    zerodiff::models::UNet2DConditionModel unet(zerodiff::models::UNet2DConditionOptions::from_json(config));
    unet->train();
    unet->enable_gradient_checkpointing(checkpointed);
    torch::manual_seed(1);
    const auto sample = torch::randn({2, unet->options.in_channels(), 16, 16});
    const auto context = torch::randn({2, 7, unet->options.cross_attention_dim()[0]}).requires_grad_(true);
    const auto out = unet->forward(sample, torch::tensor({10, 500}), context);
    // The tiny UNet has 2 down blocks (1 resnet + 1 transformer with attention in the first), a mid block
    // (2 resnets + 1 transformer) and 2 up blocks: every one of those layers is a checkpoint node.
    const int nodes = count_nodes(out, "CheckpointFunction");
    if (checkpointed) {
      EXPECT_GT(nodes, 5);
    } else {
      EXPECT_EQ(nodes, 0);
    }
    out.pow(2).mean().backward();
    std::map<std::string, at::Tensor> g;
    for (const auto& p : unet->named_parameters()) g[p.key()] = p.value().grad().clone();
    g["<encoder_hidden_states>"] = context.grad().clone();
    g["<output>"] = out.detach();
    return g;
  };
  const auto plain = grads(false), ckpt = grads(true);
  ASSERT_EQ(plain.size(), ckpt.size());
  for (const auto& [name, g] : plain) {
    EXPECT_LE((g - ckpt.at(name)).abs().max().item<double>(), 1e-6) << name;
  }
}

// Mixed precision: the recomputation in backward runs under the forward's autocast state (bf16 on the CPU),
// although backward itself runs after the autocast scope has closed, as the Trainer does it.
TEST(Checkpoint, RecomputationKeepsTheForwardsAutocastState) {
  std::vector<at::ScalarType> seen;  // dtype of the matmul in each call: forward, then the recomputation
  auto fn = [&](const std::vector<at::Tensor>& in) {
    at::Tensor y = at::matmul(in[0], in[1]);
    seen.push_back(y.scalar_type());
    return y.to(at::kFloat).sum(1);
  };
  const auto a = torch::randn({4, 8}).requires_grad_(true), b = torch::randn({8, 3}).requires_grad_(true);
  at::Tensor out;
  {
    zerodiff::nn::AutocastScope autocast(c10::DeviceType::CPU, at::kBFloat16);
    out = zerodiff::nn::checkpoint(fn, {a, b});
  }
  out.sum().backward();  // outside the autocast scope
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], at::kBFloat16);
  EXPECT_EQ(seen[1], at::kBFloat16);  // a float32 recomputation would differentiate another function
  // The gradients are those of the bf16 computation, as without checkpointing.
  const auto a2 = a.detach().clone().requires_grad_(true), b2 = b.detach().clone().requires_grad_(true);
  {
    zerodiff::nn::AutocastScope autocast(c10::DeviceType::CPU, at::kBFloat16);
    out = at::matmul(a2, b2).to(at::kFloat).sum(1);
  }
  out.sum().backward();
  EXPECT_TRUE(torch::equal(a.grad(), a2.grad()));
  EXPECT_TRUE(torch::equal(b.grad(), b2.grad()));
}
