// ProcessGroupNCCL for CUDA runs. Compiled only when CUDA is enabled and nccl.h is found (the header of the
// nvidia-nccl wheel LibTorch runs with, so ProcessGroupNCCL::Options has LibTorch's layout).
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "Backends.h"

namespace zerodiff::dist::detail {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
}

}  // namespace zerodiff::dist::detail
