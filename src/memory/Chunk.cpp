#include "zerodiff/memory/Chunk.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "zerodiff/core/Error.h"

namespace zerodiff::memory {

Chunk::Chunk(int64_t capacity, at::ScalarType dtype, c10::Device device, int rank, int world_size, bool keep_gathered)
    : capacity_((capacity + world_size - 1) / world_size * world_size),
      dtype_(dtype),
      device_(device),
      rank_(rank),
      world_size_(world_size),
      keep_gathered_(keep_gathered) {
  ZD_CHECK(capacity >= 1 && world_size >= 1 && rank >= 0 && rank < world_size, "Chunk: capacity ", capacity,
           ", rank ", rank, " of ", world_size);
}

size_t Chunk::append(const std::string& name, const at::Tensor& param) {
  ZD_CHECK(!closed_, "Chunk: '", name, "' appended after close()");
  ZD_CHECK(param.scalar_type() == dtype_ && param.device() == device_, "Chunk: parameter '", name, "' is ",
           param.scalar_type(), " on ", param.device(), ", the chunk holds ", dtype_, " on ", device_);
  ZD_CHECK(fits(param.numel()), "Chunk: parameter '", name, "' (", param.numel(), " elements) does not fit (",
           capacity_ - used_, " left)");
  tensors_.push_back(ChunkTensor{name, param, used_, param.numel(), TensorState::HOLD});
  used_ += param.numel();
  return tensors_.size() - 1;
}

void Chunk::close() {
  ZD_CHECK(!closed_, "Chunk: closed twice");
  torch::NoGradGuard no_grad;
  at::Tensor full = at::zeros({capacity_}, at::TensorOptions().dtype(dtype_).device(device_));
  for (auto& t : tensors_) {
    full.slice(0, t.offset, t.offset + t.numel).copy_(t.param.detach().reshape(-1));
    // The parameter keeps its identity (module registration, autograd meta, version counter) and becomes a
    // view of the chunk's storage.
    t.param.set_data(full.slice(0, t.offset, t.offset + t.numel).view(t.param.sizes()));
  }
  storage_ = full.storage();
  closed_ = true;
  gathered_ = true;
  if (keep_gathered_) return;
  const int64_t s = shard_numel();
  shard_ = full.slice(0, rank_ * s, (rank_ + 1) * s).clone();
  release();
}

at::Tensor Chunk::full() const {
  ZD_CHECK(gathered_, "Chunk: full() of a released chunk");
  at::Tensor t = at::empty({0}, at::TensorOptions().dtype(dtype_).device(device_));
  t.set_(storage_, 0, {capacity_}, {1});
  return t;
}

void Chunk::gather(dist::ProcessGroup& group, bool async) {
  ZD_CHECK(closed_, "Chunk: gather() before close()");
  if (gathered_) return;
  auto* impl = storage_.unsafeGetStorageImpl();
  const size_t nbytes = static_cast<size_t>(chunk_bytes());
  impl->set_data_ptr_noswap(impl->allocator()->allocate(nbytes));
  impl->set_nbytes(nbytes);
  gathered_ = true;
  for (size_t i = 0; i < tensors_.size(); ++i) set_state(i, TensorState::HOLD);
  at::Tensor out = full();
  // A shard kept in host memory (Gemini) goes to the device for the collective (NCCL needs device tensors).
  const at::Tensor input = shard_.device() == device_ ? shard_ : shard_.to(device_, /*non_blocking=*/true);
  pending_ = group.all_gather(out, input, "param_all_gather", async);
}

void Chunk::set_shard(at::Tensor shard) {
  ZD_CHECK(closed_ && !keep_gathered_, "Chunk: set_shard on a chunk that is not closed or is kept gathered");
  ZD_CHECK(shard.numel() == shard_numel() && shard.scalar_type() == dtype_ && shard.is_contiguous(),
           "Chunk: set_shard with ", shard.numel(), " ", shard.scalar_type(), " elements; the shard is ", shard_numel(),
           " ", dtype_);
  pending_.wait();  // an in-flight gather reads the old shard
  shard_ = std::move(shard);
}

void Chunk::wait() { pending_.wait(); }

void Chunk::release() {
  if (!gathered_ || keep_gathered_) return;
  pending_.wait();
  for (size_t i = 0; i < tensors_.size(); ++i) set_state(i, TensorState::FREE);
  storage_.unsafeGetStorageImpl()->reset();
  gathered_ = false;
}

void Chunk::update_shard_from_full() {
  if (keep_gathered_) return;  // the full buffer is the only copy
  torch::NoGradGuard no_grad;
  const int64_t s = shard_numel();
  shard_.copy_(full().slice(0, rank_ * s, (rank_ + 1) * s));
}

int64_t Chunk::resident_bytes() const {
  const int64_t shard = shard_.defined() ? shard_.numel() * static_cast<int64_t>(shard_.element_size()) : 0;
  const int64_t gathered = storage_ ? static_cast<int64_t>(storage_.nbytes()) : 0;
  return shard + gathered;
}

void Chunk::set_state(size_t tensor, TensorState to) {
  ChunkTensor& t = tensors_.at(tensor);
  ZD_INTERNAL_ASSERT(legal_transition(t.state, to), "chunk tensor '", t.name, "': illegal state transition ",
                     state_name(t.state), " -> ", state_name(to));
  t.state = to;
}

}  // namespace zerodiff::memory
