// Builds without CUDA or without nccl.h: CUDA process groups fail loudly.
#include "Backends.h"

#include "zerodiff/core/Error.h"

namespace zerodiff::dist::detail {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>&, int, int,
                                                    std::chrono::milliseconds) {
  throw NotImplementedError(
      "this zerodiff build has no NCCL (built without CUDA or without nccl.h): multi-process CUDA runs need a "
      "build with ZERODIFF_WITH_CUDA and the nvidia-nccl headers; use trainer.accelerator: cpu for Gloo");
}

}  // namespace zerodiff::dist::detail
