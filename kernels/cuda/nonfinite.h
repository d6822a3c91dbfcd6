// Plain-params interface of kernels/cuda/nonfinite.cu (no ATen types cross this boundary).
#pragma once

#include <cuda_runtime_api.h>

namespace zerodiff::kernels::cuda {

enum class NonFiniteDtype { kFloat32, kFloat64, kFloat16, kBFloat16 };

struct NonFiniteParams {
  const void* data = nullptr;          // [n] contiguous elements of `dtype`
  long long n = 0;                     // element count
  NonFiniteDtype dtype = NonFiniteDtype::kFloat32;
  unsigned long long* out = nullptr;   // device pointer to one counter (zeroed by the launcher)
  long long max_blocks = 1024;         // grid cap (grid-stride loop covers the rest)
  cudaStream_t stream = nullptr;
};

/// Zeroes *out and launches the counting kernel on p.stream. Returns the CUDA error, if any.
cudaError_t count_nonfinite(const NonFiniteParams& p);

}  // namespace zerodiff::kernels::cuda
