// zerodiff/nn/Checkpoint.h — activation (gradient) checkpointing: run a unit without keeping its
// intermediate activations, and recompute them during backward.
//
// Follows torch.utils.checkpoint (use_reentrant=True) and DESIGN.md §4: a torch::autograd::Function whose
// forward runs `fn` under no_grad and saves only the inputs and the RNG states (CPU and, when the inputs are on
// CUDA, that device's generator); backward restores those RNG states (so dropout draws the same masks),
// re-runs `fn` with grad enabled on detached copies of the inputs, back-propagates the incoming gradients
// through it (parameter gradients accumulate into .grad as usual) and returns the inputs' gradients. The
// caller's RNG state is put back afterwards, so checkpointing does not change later random draws either.
// Reentrant style: parameter gradients reach .grad through the inner backward (torch::autograd::grad on the
// outer graph does not return them), and a unit is recomputed even when nothing in it needs a gradient.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace zerodiff::nn {

/// A unit of computation: tensors in, one tensor out. Parameters it uses are captured (e.g. a module holder).
using CheckpointFn = std::function<at::Tensor(const std::vector<at::Tensor>& inputs)>;

/// fn(inputs), recomputed in backward instead of storing its activations. Same value as fn(inputs); the
/// gradients of inputs and of the parameters fn uses equal those without checkpointing (up to floating-point
/// reassociation: none, the same kernels run). Without grad mode, simply returns fn(inputs).
/// Every element of `inputs` must be a defined tensor. Throws zerodiff::Error otherwise.
at::Tensor checkpoint(const CheckpointFn& fn, const std::vector<at::Tensor>& inputs);

}  // namespace zerodiff::nn
