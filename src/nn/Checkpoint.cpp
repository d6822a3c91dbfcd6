// Activation checkpointing as a reentrant autograd Function (torch.utils.checkpoint, use_reentrant=True).
#include "zerodiff/nn/Checkpoint.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include <mutex>
#include <optional>

#include "zerodiff/core/Error.h"
#include "zerodiff/nn/Autocast.h"

namespace zerodiff::nn {

namespace {

// The unit, carried from forward to backward inside the autograd context.
struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(CheckpointFn f) : fn(std::move(f)) {}
  CheckpointFn fn;
};

// Generator states that a recomputation must reproduce: the CPU default generator and, when the inputs live on a
// CUDA device, that device's default generator.
struct RngStates {
  at::Tensor cpu;
  std::optional<at::Device> device;
  at::Tensor device_state;

  static RngStates capture(const std::vector<at::Tensor>& inputs) {
    RngStates s;
    {
      at::Generator cpu_gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(cpu_gen.mutex());
      s.cpu = cpu_gen.get_state();
    }
    for (const auto& t : inputs) {
      if (t.is_cuda()) {
        s.device = t.device();
        at::Generator g = at::globalContext().defaultGenerator(t.device());
        std::lock_guard<std::mutex> lock(g.mutex());
        s.device_state = g.get_state();
        break;
      }
    }
    return s;
  }
  void restore() const {
    {
      at::Generator cpu_gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(cpu_gen.mutex());
      cpu_gen.set_state(cpu);
    }
    if (device) {
      at::Generator g = at::globalContext().defaultGenerator(*device);
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(device_state);
    }
  }
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // `anchor` is a zero-size tensor that requires grad: the output then always requires grad, so backward runs
  // (and parameter gradients are computed) even when no real input requires grad (e.g. the first unit).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, c10::intrusive_ptr<FnHolder> fn,
                                                const at::Tensor& anchor, at::TensorList input_list) {
    (void)anchor;
    const std::vector<at::Tensor> inputs = input_list.vec();
    const RngStates rng = RngStates::capture(inputs);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(fn);
    ctx->saved_data["rng_cpu"] = rng.cpu;
    ctx->saved_data["rng_device"] = rng.device ? rng.device_state : at::Tensor();
    ctx->saved_data["rng_device_index"] = rng.device ? static_cast<int64_t>(rng.device->index()) : int64_t{-1};
    ctx->save_for_backward(inputs);
    // The recomputation must run under the forward's autocast state: backward runs after the caller's
    // autocast scope has closed (torch.utils.checkpoint records it the same way).
    for (const auto& [key, type] : {std::pair{"cpu", c10::DeviceType::CPU}, std::pair{"cuda", c10::DeviceType::CUDA}}) {
      const bool on = at::autocast::is_autocast_enabled(type);
      ctx->saved_data[std::string("autocast_") + key] =
          on ? static_cast<int64_t>(at::autocast::get_autocast_dtype(type)) : int64_t{-1};
    }
    at::Tensor out;
    {
      torch::NoGradGuard no_grad;
      out = fn->fn(inputs);
    }
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto fn = ctx->saved_data["fn"].toCapsule();
    auto* holder = static_cast<FnHolder*>(fn.get());
    RngStates rng;
    rng.cpu = ctx->saved_data["rng_cpu"].toTensor();
    const int64_t device_index = ctx->saved_data["rng_device_index"].toInt();
    if (device_index >= 0) {
      rng.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index));
      rng.device_state = ctx->saved_data["rng_device"].toTensor();
    }
    // Recompute with the forward's RNG state; put the caller's state back afterwards.
    std::vector<at::Tensor> detached;
    detached.reserve(saved.size());
    for (const auto& t : saved) detached.push_back(t.detach().requires_grad_(t.requires_grad()));
    const RngStates current = RngStates::capture(detached);
    rng.restore();
    at::Tensor out;
    {
      torch::AutoGradMode enable(true);
      auto dtype_of = [&](const char* key) -> std::optional<at::ScalarType> {
        const int64_t d = ctx->saved_data[key].toInt();
        return d < 0 ? std::nullopt : std::optional<at::ScalarType>(static_cast<at::ScalarType>(d));
      };
      AutocastScope cpu_autocast(c10::DeviceType::CPU, dtype_of("autocast_cpu"));
      AutocastScope cuda_autocast(c10::DeviceType::CUDA, dtype_of("autocast_cuda"));
      out = holder->fn(detached);
    }
    current.restore();
    if (out.requires_grad()) torch::autograd::backward({out}, {grad_outputs[0]});
    torch::autograd::variable_list grads;
    grads.reserve(2 + detached.size());
    grads.emplace_back();  // fn
    grads.emplace_back();  // anchor
    for (const auto& t : detached) grads.push_back(t.requires_grad() ? t.grad() : at::Tensor());
    return grads;
  }
};

}  // namespace

at::Tensor checkpoint(const CheckpointFn& fn, const std::vector<at::Tensor>& inputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    ZD_CHECK(inputs[i].defined(), "checkpoint: input ", i, " is an undefined tensor");
  }
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  static thread_local at::Tensor anchor = at::empty({0}).requires_grad_(true);
  // A TensorList (not the vector) so that autograd records every input as a differentiable argument.
  return CheckpointFunction::apply(c10::make_intrusive<FnHolder>(fn), anchor, at::TensorList(inputs))[0];
}

}  // namespace zerodiff::nn
