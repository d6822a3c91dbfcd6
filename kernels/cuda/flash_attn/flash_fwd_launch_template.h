// kernels/cuda/flash_attn/flash_fwd_launch_template.h — grid, block and shared-memory choice of the forward
// kernel; included by the instantiation files flash_fwd_hdim{64,128,256}_{fp16,bf16}_sm80.cu only.
//
// Grid: one CTA per (batch · head, query block), flattened into blockIdx.x (gridDim.y / z stay 1, so B·H ≥ 65,536
// is fine; the API checks the product against 2³¹ − 1). Block: FwdConfig<kHeadDim>::kNWarps warps. Dynamic shared
// memory above the 48 KiB default is opted into with cudaFuncSetAttribute before every launch (cheap, and correct
// on every device of a multi-GPU process).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <climits>

#include "flash.h"
#include "flash_fwd_kernel.h"

namespace zerodiff::kernels::cuda::flash {

template <class T, int kHeadDim>
void launch_flash_fwd(const FlashParams& p) {
  using Traits = FwdTraits<T, kHeadDim>;
  const int64_t m_blocks = (static_cast<int64_t>(p.seqlen_q) + Traits::kBlockM - 1) / Traits::kBlockM;
  const int64_t grid = m_blocks * p.batch * p.heads;
  if (grid == 0) return;
  TORCH_CHECK(grid <= INT_MAX, "flash forward: grid of ", grid, " blocks exceeds 2^31 - 1");
  auto kernel = &flash_fwd_kernel<Traits>;
  constexpr int kSmem = Traits::kSmemBytes;
  if constexpr (kSmem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  }
  kernel<<<dim3(static_cast<unsigned>(grid)), dim3(Traits::kThreads), kSmem, p.stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace zerodiff::kernels::cuda::flash
