// zerodiff/nn/Autocast.h — scoped autocast (torch.autocast in C++): ops in the scope run in a lower precision
// where autocast's op lists say so (matmul/conv in float16 or bfloat16; reductions, norms, softmax in float32).
#pragma once

#include <ATen/autocast_mode.h>

#include <optional>

namespace zerodiff::nn {

/// Enables autocast to `dtype` on `device` for its lifetime, or disables it when `dtype` is nullopt (a region
/// that must stay float32 inside a mixed-precision step, e.g. the VAE). float32 as dtype leaves the state
/// unchanged. Restores the previous state on exit and clears the cast cache when the outermost scope ends.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, std::optional<at::ScalarType> dtype) : device_(device) {
    if (dtype && *dtype == at::kFloat) return;
    active_ = true;
    prev_enabled_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, dtype.has_value());
    if (dtype) at::autocast::set_autocast_dtype(device_, *dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool active_ = false;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

}  // namespace zerodiff::nn
