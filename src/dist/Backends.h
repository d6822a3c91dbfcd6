// Internal: c10d backends that need optional toolkits (NCCL), built only when available.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace zerodiff::dist::detail {

/// ProcessGroupNCCL on the current CUDA device. Throws NotImplementedError in builds without NCCL.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout);

}  // namespace zerodiff::dist::detail
