// kernels/cuda/flash_attn/flash_bwd_launch_template.h — launches of the backward pass; included by the
// instantiation files flash_bwd_hdim{64,128,256}_{fp16,bf16}_sm80.cu only.
//
// 1. flash_bwd_dsum_kernel: 8 rows (warps) per 256-thread block over the B·H·Nq query rows.
// 2. flash_bwd_kernel: one CTA per (batch · head, split, key block), flattened into blockIdx.x with the key block
//    fastest (gridDim.y / z stay 1: B·H ≥ 65,536 is fine; the API checks the product against 2³¹ − 1).
// Both on p.stream, each followed by C10_CUDA_KERNEL_LAUNCH_CHECK(). Dynamic shared memory above 48 KiB is opted
// into with cudaFuncSetAttribute before the launch.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <climits>

#include "flash.h"
#include "flash_bwd_kernel.h"

namespace zerodiff::kernels::cuda::flash {

template <class T, int kHeadDim>
void launch_flash_bwd(const FlashParams& p) {
  using Traits = BwdTraits<T, kHeadDim>;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  if (rows == 0) return;
  const int64_t dsum_blocks = (rows + 7) / 8;
  TORCH_CHECK(dsum_blocks <= INT_MAX, "flash backward: ", rows, " query rows need more than 2^31 - 1 blocks");
  flash_bwd_dsum_kernel<Traits><<<dim3(static_cast<unsigned>(dsum_blocks)), dim3(256), 0, p.stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const int64_t n_blocks = (static_cast<int64_t>(p.seqlen_k) + Traits::kBlockN - 1) / Traits::kBlockN;
  const int64_t grid = n_blocks * p.splits * p.batch * p.heads;
  TORCH_CHECK(p.splits >= 1, "flash backward: splits must be >= 1, got ", p.splits);
  TORCH_CHECK(grid <= INT_MAX, "flash backward: grid of ", grid, " blocks exceeds 2^31 - 1");
  if (grid == 0) return;
  auto kernel = &flash_bwd_kernel<Traits>;
  constexpr int kSmem = Traits::kSmemBytes;
  if constexpr (kSmem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  }
  kernel<<<dim3(static_cast<unsigned>(grid)), dim3(Traits::kThreads), kSmem, p.stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace zerodiff::kernels::cuda::flash
