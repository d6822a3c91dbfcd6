// CUDA kernel: count of non-finite elements (fp32, fp16, bf16, fp64).
// Reference: kernels/cpu/nonfinite.cpp and (~isfinite(t)).sum(). Design rules: plain params, no ATen
// in device code; grid-stride loop, warp-shuffle + shared-memory block reduction, one atomicAdd per block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "nonfinite.h"

namespace zerodiff::kernels::cuda {
namespace {

template <class T>
__device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ bool nonfinite(T v) { return !isfinite(to_float(v)); }
template <>
__device__ __forceinline__ bool nonfinite<double>(double v) { return !isfinite(v); }

template <class T, int kThreads>
__global__ void count_nonfinite_kernel(const T* __restrict__ data, long long n, unsigned long long* out) {
  unsigned int count = 0;
  const long long stride = static_cast<long long>(gridDim.x) * kThreads;
  for (long long i = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    count += nonfinite(data[i]) ? 1u : 0u;
  }
  for (int offset = 16; offset > 0; offset /= 2) count += __shfl_down_sync(0xffffffffu, count, offset);
  __shared__ unsigned int warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = count;
  __syncthreads();
  if (warp == 0) {
    count = lane < kThreads / 32 ? warp_sums[lane] : 0u;
    for (int offset = 16; offset > 0; offset /= 2) count += __shfl_down_sync(0xffffffffu, count, offset);
    if (lane == 0 && count) atomicAdd(out, static_cast<unsigned long long>(count));
  }
}

template <class T>
cudaError_t launch(const NonFiniteParams& p) {
  constexpr int kThreads = 256;
  long long blocks = (p.n + kThreads - 1) / kThreads;
  if (blocks > p.max_blocks) blocks = p.max_blocks;
  if (blocks < 1) blocks = 1;
  count_nonfinite_kernel<T, kThreads><<<static_cast<unsigned>(blocks), kThreads, 0, p.stream>>>(
      static_cast<const T*>(p.data), p.n, p.out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t count_nonfinite(const NonFiniteParams& p) {
  cudaError_t err = cudaMemsetAsync(p.out, 0, sizeof(unsigned long long), p.stream);
  if (err != cudaSuccess) return err;
  if (p.n == 0) return cudaSuccess;
  switch (p.dtype) {
    case NonFiniteDtype::kFloat32: return launch<float>(p);
    case NonFiniteDtype::kFloat64: return launch<double>(p);
    case NonFiniteDtype::kFloat16: return launch<__half>(p);
    case NonFiniteDtype::kBFloat16: return launch<__nv_bfloat16>(p);
  }
  return cudaErrorInvalidValue;
}

}  // namespace zerodiff::kernels::cuda
