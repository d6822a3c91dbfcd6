// DiskStateStore: blocks of optimizer states in scratch files, one I/O thread (see the header's design rules).
//
// Locking: mutex_ guards the block table, every block's mutable state (read, resident, pending_writes, lost), the
// queue, the counters and every Op field the caller reads. A block's path, fd, shapes and bytes never change after
// add() finished, so the worker uses them without the lock. The worker holds the lock only to pop an op, to publish
// freshly allocated read buffers and to finish an op; the I/O itself runs unlocked. Tensors released by the store
// are destroyed after the lock is dropped.
#include "zerodiff/memory/DiskStateStore.h"

#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"

namespace zerodiff::memory {

namespace {

constexpr size_t kMaxTensorsPerBlock = 8;

enum class Direction { read, write };

/// pread/pwrite loop over [offset, offset + n) of `fd`, restarting after EINTR and partial transfers. Adds the bytes
/// moved to `moved`. Returns "" on success, else the error message (file, offset, cause). `block_offset` and
/// `block_bytes` place the range in its block for the short-read message.
std::string transfer(Direction dir, int fd, char* data, size_t n, int64_t offset, const std::string& path,
                     int64_t block_bytes, int64_t& moved) {
  size_t done = 0;
  while (done < n) {
    const off_t at = static_cast<off_t>(offset + static_cast<int64_t>(done));
    const ssize_t r = dir == Direction::read ? ::pread(fd, data + done, n - done, at)
                                             : ::pwrite(fd, data + done, n - done, at);
    if (r < 0) {
      if (errno == EINTR) continue;
      return zerodiff::str(path, ": ", dir == Direction::read ? "read" : "write", " failed at offset ",
                           static_cast<int64_t>(at), ": ", std::strerror(errno));
    }
    if (r == 0) {
      if (dir == Direction::read) {
        return zerodiff::str(path, ": short read at offset ", static_cast<int64_t>(at), ": got ",
                             static_cast<int64_t>(at), " of ", block_bytes, " bytes");
      }
      return zerodiff::str(path, ": write failed at offset ", static_cast<int64_t>(at), ": no progress");
    }
    done += static_cast<size_t>(r);
    moved += r;
  }
  return {};
}

}  // namespace

struct DiskStateStore::Block {
  size_t id = 0;
  std::string path;
  int fd = -1;
  bool ready = false;                      // add() finished (until then the id is reserved, not usable)
  std::vector<std::vector<int64_t>> shapes;  // as given to add()
  int64_t bytes = 0;                       // 4 * Σ numel
  std::shared_ptr<Op> read;                // read in flight or done, not yet taken by fetch
  std::vector<at::Tensor> resident;        // fetched, not yet written back
  bool is_resident = false;
  int64_t resident_held = 0;               // bytes of `resident` counted in resident_
  int pending_writes = 0;                  // write ops queued or running
  std::string lost;                        // the error of this block's last write when it failed
};

struct DiskStateStore::Op {
  Direction dir = Direction::read;
  Block* block = nullptr;
  std::vector<at::Tensor> tensors;  // write: the data; read: the destination (allocated by the worker)
  bool pinned = false;              // read: allocate pinned host memory
  bool stale = false;               // read superseded by a write_back: release the buffers when done
  bool done = false;
  int64_t held = 0;                 // bytes of `tensors` counted in resident_
  int64_t moved = 0;                // bytes transferred
  std::string error;                // "" on success
  std::string block_lost;           // read: the block's `lost` when the read ran
};

DiskStateStore::DiskStateStore(std::string dir, int rank) {
  ZD_CHECK(rank >= 0, "DiskStateStore: rank must be >= 0, got ", rank);
  directory_ = (std::filesystem::path(dir) / zerodiff::str("rank-", rank)).string();
  std::error_code ec;
  std::filesystem::create_directories(directory_, ec);
  if (ec) {
    throw IoError(zerodiff::str(directory_, ": cannot create the folder for optimizer states: ", ec.message()));
  }
  // Probe write: a folder we cannot write in fails here, not at the first add() deep into set-up.
  const std::string probe =
      zerodiff::str(directory_, "/.probe-", ::getpid(), "-", static_cast<const void*>(this));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw IoError(
        zerodiff::str(directory_, ": cannot write in the folder for optimizer states: ", std::strerror(errno)));
  }
  const char byte = 0;
  ssize_t r;
  do {
    r = ::write(fd, &byte, 1);
  } while (r < 0 && errno == EINTR);
  const int write_errno = r == 1 ? 0 : (r < 0 ? errno : EIO);
  ::close(fd);
  ::unlink(probe.c_str());
  if (write_errno != 0) {
    throw IoError(zerodiff::str(directory_, ": cannot write in the folder for optimizer states: ",
                                std::strerror(write_errno)));
  }
  worker_ = std::thread([this] { worker_loop(); });
}

DiskStateStore::~DiskStateStore() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  // The worker is gone: no lock needed any more.
  for (const std::string& message : unreported_) {
    ZD_LOG_WARN("DiskStateStore: a write of optimizer states failed (reported at shutdown): ", message);
  }
  for (auto& [id, block] : blocks_) {
    if (block->fd >= 0) ::close(block->fd);
    if (::unlink(block->path.c_str()) != 0 && errno != ENOENT) {
      ZD_LOG_WARN("DiskStateStore: cannot delete ", block->path, ": ", std::strerror(errno));
    }
  }
  if (::rmdir(directory_.c_str()) != 0 && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT) {
    ZD_LOG_WARN("DiskStateStore: cannot remove the folder ", directory_, ": ", std::strerror(errno));
  }
}

DiskStateStore::Block& DiskStateStore::block_locked(size_t id, const char* caller) {
  auto it = blocks_.find(id);
  ZD_CHECK(it != blocks_.end() && it->second->ready, "DiskStateStore::", caller, ": unknown block id ", id,
           " (", num_blocks_locked(), " blocks registered)");
  return *it->second;
}

const DiskStateStore::Block& DiskStateStore::block_locked(size_t id, const char* caller) const {
  return const_cast<DiskStateStore*>(this)->block_locked(id, caller);
}

size_t DiskStateStore::num_blocks_locked() const {
  return static_cast<size_t>(std::count_if(blocks_.begin(), blocks_.end(), [](const auto& kv) {
    return kv.second->ready;
  }));
}

void DiskStateStore::add_resident_locked(int64_t bytes) {
  resident_ += bytes;
  peak_resident_ = std::max(peak_resident_, resident_);
}

void DiskStateStore::enqueue_locked(std::shared_ptr<Op> op) {
  queue_.push_back(std::move(op));
  ++outstanding_;
  work_cv_.notify_one();
}

void DiskStateStore::start_read_locked(Block& block) {
  auto op = std::make_shared<Op>();
  op->dir = Direction::read;
  op->block = &block;
  op->pinned = pinned_;
  block.read = op;
  enqueue_locked(std::move(op));
}

void DiskStateStore::drop_read_locked(Block& block, std::vector<at::Tensor>& garbage) {
  std::shared_ptr<Op> op = std::move(block.read);
  block.read.reset();
  if (!op) return;
  if (op->done) {
    resident_ -= op->held;
    op->held = 0;
    for (auto& t : op->tensors) garbage.push_back(std::move(t));
    op->tensors.clear();
  } else {
    op->stale = true;  // the worker releases the buffers when the read finishes
  }
}

void DiskStateStore::throw_unreported_locked() {
  if (unreported_.empty()) return;
  std::string message = unreported_.front();
  if (unreported_.size() > 1) {
    message += zerodiff::str(" (and ", unreported_.size() - 1, " more failed writes of optimizer states)");
  }
  unreported_.clear();
  throw IoError(message);
}

void DiskStateStore::add(size_t id, const std::vector<at::Tensor>& initial) {
  ZD_CHECK(!initial.empty() && initial.size() <= kMaxTensorsPerBlock, "DiskStateStore::add: block ", id, " has ",
           initial.size(), " tensors, expected 1 to ", kMaxTensorsPerBlock);
  std::vector<std::vector<int64_t>> shapes;
  int64_t bytes = 0;
  for (size_t i = 0; i < initial.size(); ++i) {
    const at::Tensor& t = initial[i];
    ZD_CHECK(t.defined(), "DiskStateStore::add: tensor ", i, " of block ", id, " is undefined");
    ZD_CHECK(t.scalar_type() == at::kFloat, "DiskStateStore::add: tensor ", i, " of block ", id, " is ",
             t.scalar_type(), ", expected Float (float32)");
    ZD_CHECK(t.device().is_cpu(), "DiskStateStore::add: tensor ", i, " of block ", id, " is on ", t.device(),
             ", expected cpu");
    ZD_CHECK(t.is_contiguous(), "DiskStateStore::add: tensor ", i, " of block ", id, " (shape ", t.sizes(),
             ", strides ", t.strides(), ") is not contiguous");
    shapes.emplace_back(t.sizes().begin(), t.sizes().end());
    bytes += t.numel() * static_cast<int64_t>(sizeof(float));
  }
  // Reserve the id so that a concurrent add of the same id fails; the file is written without the lock.
  Block* block = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ZD_CHECK(blocks_.find(id) == blocks_.end(), "DiskStateStore::add: block id ", id, " is already registered");
    auto owned = std::make_unique<Block>();
    block = owned.get();
    block->id = id;
    block->path = zerodiff::str(directory_, "/chunk-", id, ".bin");
    block->shapes = std::move(shapes);
    block->bytes = bytes;
    blocks_.emplace(id, std::move(owned));
  }
  std::string error;
  int64_t moved = 0;
  const int fd = ::open(block->path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = zerodiff::str(block->path, ": cannot create the file for block ", id, ": ", std::strerror(errno));
  } else {
    int64_t offset = 0;
    for (const at::Tensor& t : initial) {
      const size_t n = static_cast<size_t>(t.numel()) * sizeof(float);
      error = transfer(Direction::write, fd, static_cast<char*>(const_cast<void*>(t.const_data_ptr())), n, offset,
                       block->path, bytes, moved);
      if (!error.empty()) break;
      offset += static_cast<int64_t>(n);
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  bytes_written_ += moved;
  if (!error.empty()) {
    if (fd >= 0) {
      ::close(fd);
      ::unlink(block->path.c_str());
    }
    blocks_.erase(id);
    throw IoError(error);
  }
  block->fd = fd;
  block->ready = true;
}

void DiskStateStore::prefetch(size_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Block& block = block_locked(id, "prefetch");
  if (block.is_resident || block.read) return;
  if (!block.lost.empty() && block.pending_writes == 0) return;  // fetch reports it
  start_read_locked(block);
}

std::vector<at::Tensor> DiskStateStore::fetch(size_t id) {
  std::unique_lock<std::mutex> lock(mutex_);
  Block& block = block_locked(id, "fetch");
  throw_unreported_locked();
  if (block.is_resident) return block.resident;
  const auto lost_error = [&](const std::string& cause) {
    return IoError(zerodiff::str(block.path, ": block ", id,
                                 " of optimizer states is lost, its last write_back failed: ", cause));
  };
  for (;;) {
    if (block.is_resident) return block.resident;  // e.g. another thread's fetch of the same block took the read
    if (!block.read) {
      if (!block.lost.empty() && block.pending_writes == 0) throw lost_error(block.lost);
      start_read_locked(block);
    }
    std::shared_ptr<Op> op = block.read;
    done_cv_.wait(lock, [&] { return op->done; });
    if (op->stale) continue;  // a concurrent write_back superseded it: read the new data
    if (block.read == op) block.read.reset();
    if (op->tensors.empty() && op->error.empty() && op->block_lost.empty()) continue;  // taken by another fetch
    const bool usable = op->error.empty() && op->block_lost.empty();
    if (!unreported_.empty()) {
      // Report the failed write first; a good read stays ready for the next fetch.
      if (usable && !block.read) block.read = op;
      throw_unreported_locked();
    }
    if (!op->block_lost.empty()) throw lost_error(op->block_lost);
    if (!op->error.empty()) throw IoError(op->error);
    block.resident = std::move(op->tensors);
    op->tensors.clear();
    block.resident_held = op->held;
    op->held = 0;
    block.is_resident = true;
    return block.resident;
  }
}

void DiskStateStore::write_back(size_t id, std::vector<at::Tensor> tensors) {
  Block* block = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    block = &block_locked(id, "write_back");
  }
  // shapes and bytes never change after add(): checked without the lock.
  ZD_CHECK(tensors.size() == block->shapes.size(), "DiskStateStore::write_back: block ", id, " got ",
           tensors.size(), " tensors, registered with ", block->shapes.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    at::Tensor& t = tensors[i];
    ZD_CHECK(t.defined(), "DiskStateStore::write_back: tensor ", i, " of block ", id, " is undefined");
    ZD_CHECK(t.scalar_type() == at::kFloat, "DiskStateStore::write_back: tensor ", i, " of block ", id, " is ",
             t.scalar_type(), ", expected Float (float32)");
    ZD_CHECK(t.device().is_cpu(), "DiskStateStore::write_back: tensor ", i, " of block ", id, " is on ", t.device(),
             ", expected cpu");
    ZD_CHECK(t.sizes() == at::IntArrayRef(block->shapes[i]), "DiskStateStore::write_back: tensor ", i, " of block ",
             id, " has shape ", t.sizes(), ", registered with ", block->shapes[i]);
    if (!t.is_contiguous()) t = t.contiguous();
  }
  std::vector<at::Tensor> garbage;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(mutex_);
  if (block->is_resident) {
    resident_ -= block->resident_held;
    block->resident_held = 0;
    garbage = std::move(block->resident);
    block->resident.clear();
    block->is_resident = false;
  }
  drop_read_locked(*block, garbage);  // a prefetched, unfetched read holds the old data
  auto op = std::make_shared<Op>();
  op->dir = Direction::write;
  op->block = block;
  op->tensors = std::move(tensors);
  op->held = block->bytes;
  add_resident_locked(op->held);
  ++block->pending_writes;
  enqueue_locked(std::move(op));
}

void DiskStateStore::flush() {
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return outstanding_ == 0; });
  throw_unreported_locked();
}

void DiskStateStore::set_pinned(bool pinned) {
  const bool use = pinned && at::hasCUDA();
  std::lock_guard<std::mutex> lock(mutex_);
  pinned_ = use;
}

size_t DiskStateStore::num_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return num_blocks_locked();
}

int64_t DiskStateStore::block_bytes(size_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return block_locked(id, "block_bytes").bytes;
}

int64_t DiskStateStore::bytes_read() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_read_;
}

int64_t DiskStateStore::bytes_written() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_written_;
}

int64_t DiskStateStore::resident_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return resident_;
}

int64_t DiskStateStore::peak_resident_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_resident_;
}

void DiskStateStore::run_op(Op& op) {
  const Block& block = *op.block;  // path, fd, shapes, bytes: immutable
  try {
    if (op.dir == Direction::read) {
      const auto options = at::TensorOptions().dtype(at::kFloat).pinned_memory(op.pinned);
      std::vector<at::Tensor> buffers;
      buffers.reserve(block.shapes.size());
      for (const auto& shape : block.shapes) buffers.push_back(at::empty(shape, options));
      std::lock_guard<std::mutex> lock(mutex_);
      op.tensors = std::move(buffers);
      op.held = block.bytes;
      add_resident_locked(op.held);
      if (op.stale) return;  // superseded by a write_back while allocating: the worker releases the buffers
    }
    int64_t offset = 0;
    for (const at::Tensor& t : op.tensors) {
      const size_t n = static_cast<size_t>(t.numel()) * sizeof(float);
      op.error = transfer(op.dir, block.fd, static_cast<char*>(t.data_ptr()), n, offset, block.path, block.bytes,
                          op.moved);
      if (!op.error.empty()) return;
      offset += static_cast<int64_t>(n);
    }
  } catch (const std::exception& e) {
    op.error = zerodiff::str(block.path, ": ", op.dir == Direction::read ? "read" : "write", " of block ", block.id,
                             " failed: ", e.what());
  } catch (...) {
    op.error = zerodiff::str(block.path, ": ", op.dir == Direction::read ? "read" : "write", " of block ", block.id,
                             " failed: unknown exception");
  }
}

void DiskStateStore::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stop_ and nothing left
    std::shared_ptr<Op> op = std::move(queue_.front());
    queue_.pop_front();
    // At shutdown nobody can take a read any more: skip the queued ones; writes still run.
    const bool skip = stop_ && op->dir == Direction::read;
    lock.unlock();
    if (skip) {
      op->error = "the store is shutting down";
    } else {
      run_op(*op);
    }
    std::vector<at::Tensor> garbage;
    lock.lock();
    Block& block = *op->block;
    bool release = false;
    if (op->dir == Direction::write) {
      bytes_written_ += op->moved;
      --block.pending_writes;
      release = true;
      if (op->error.empty()) {
        block.lost.clear();
      } else {
        block.lost = op->error;
        unreported_.push_back(op->error);
      }
    } else {
      bytes_read_ += op->moved;
      op->block_lost = block.lost;  // the writes queued before this read have all run
      release = op->stale || !op->error.empty() || !op->block_lost.empty();
    }
    if (release) {
      resident_ -= op->held;
      op->held = 0;
      garbage = std::move(op->tensors);
      op->tensors.clear();
    }
    op->done = true;
    --outstanding_;
    done_cv_.notify_all();
    lock.unlock();
    garbage.clear();  // free the buffers without holding the lock
    op.reset();
    lock.lock();
  }
}

}  // namespace zerodiff::memory
