// zerodiff/parallel/UnitHooks.h — what a model calls around each of its sharding units' forward (DESIGN.md
// §4: LibTorch modules have no forward hooks, so models that list units() call these themselves). The zero3
// strategy implements them: gather the unit's chunks before, release after, and hook the outputs so that
// the chunks are gathered again when the outputs' gradients arrive in backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <vector>

namespace zerodiff::parallel {

class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  /// Before unit `unit` (its index in the model's units(), execution order) runs its forward.
  virtual void pre_forward(size_t unit) = 0;
  /// After it ran; `outputs` are the tensors it produced that later code consumes (those requiring grad
  /// get a gradient hook).
  virtual void post_forward(size_t unit, const std::vector<at::Tensor>& outputs) = 0;
};

/// Calls pre_forward / post_forward around `fn` when `hooks` is set (fn returns the unit's outputs).
template <class Fn>
auto run_unit(UnitHooks* hooks, size_t unit, Fn&& fn) {
  if (hooks != nullptr) hooks->pre_forward(unit);
  auto out = fn();
  if (hooks != nullptr) {
    if constexpr (std::is_same_v<std::decay_t<decltype(out)>, at::Tensor>) {
      hooks->post_forward(unit, {out});
    } else {
      hooks->post_forward(unit, out.first.defined() ? [&] {
        std::vector<at::Tensor> all{out.first};
        all.insert(all.end(), out.second.begin(), out.second.end());
        return all;
      }() : out.second);
    }
  }
  return out;
}

}  // namespace zerodiff::parallel
