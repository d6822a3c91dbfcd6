// zerodiff/kernels/NonFinite.h — count of inf/NaN elements in a tensor, the check behind the fp16
// GradScaler's "found inf" decision. Fused: one pass, no temporary boolean tensor.
#pragma once

#include <ATen/core/Tensor.h>

namespace zerodiff::kernels {

/// Number of elements of `t` that are +inf, -inf or NaN, as an int64 scalar tensor on t's device
/// (so CUDA callers need not synchronise). Any shape; float32, float64, float16 and bfloat16.
/// CPU: kernels/cpu/nonfinite.cpp (parallel over elements); CUDA: kernels/cuda/nonfinite.cu
/// (grid-stride loop, block reduction, one atomic per block). Non-contiguous inputs are made contiguous.
/// Throws zerodiff::Error for other dtypes, and for CUDA tensors in a build without CUDA kernels.
/// Reference: (~torch::isfinite(t)).sum().
at::Tensor count_nonfinite(const at::Tensor& t);

/// CPU kernel behind count_nonfinite (exposed for tests and benchmarks). `t` must be a CPU tensor.
int64_t count_nonfinite_cpu(const at::Tensor& t);

}  // namespace zerodiff::kernels
