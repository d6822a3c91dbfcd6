// zerodiff/memory/DiskStateStore.h — optimizer states of chunks kept in files on disk / NVMe, with read-ahead and
// write-behind on one I/O thread (ZeRO-Infinity's NVMe offload; DeepSpeed's optimizer swapper,
// deepspeed/runtime/swap_tensor/, following Rajbhandari et al. 2021, "ZeRO-Infinity: Breaking the GPU Memory Wall
// for Extreme Scale Deep Learning").
//
// Design rules of this file:
//  * A block is what the Gemini strategy keeps per chunk: 1..8 contiguous CPU float32 tensors (e.g. the fp32 master
//    shard, exp_avg, exp_avg_sq), stored back to back in one file `chunk-<id>.bin` under `dir/rank-<rank>/`. The
//    files are scratch: checkpoints hold the state, so nothing is fsynced and the destructor deletes them.
//  * Per optimizer step the strategy walks the chunks in order: fetch(c) (wait for its read), prefetch(c+1), Adam on
//    c's tensors, write_back(c, tensors); flush() at the end. Between steps no block is held in memory.
//  * One worker thread runs the queued reads and writes in FIFO order (pread/pwrite loops), so a read queued after a
//    write of the same block sees the written data. The caller thread only waits on a condition variable for the
//    results it needs; nothing busy-waits.
//  * Exceptions never leave the worker: a failed read is rethrown (IoError) by the fetch that waits for it; a failed
//    write is kept and rethrown by the next fetch / flush, and the block's data counts as lost until it is written
//    back successfully again.
//  * One owner per resource: the store owns its files (opened once, closed and deleted by the destructor), the
//    buffers of reads not yet handed out and of writes in flight.
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace zerodiff::memory {

/// Optimizer states of chunks kept in files, with read-ahead (prefetch) and write-behind (write_back) on one
/// background I/O thread — the disk/NVMe offload layer of the Gemini memory manager. Follows DeepSpeed
/// ZeRO-Infinity's optimizer swapper (deepspeed/runtime/swap_tensor/: one swap file per tensor group, reads for the
/// next group overlapped with the optimizer step of the current one, swap-out behind it; Rajbhandari et al. 2021,
/// "ZeRO-Infinity"), with a plain thread and pread/pwrite instead of libaio.
///
/// Usage per optimizer step (no block is in memory between steps):
///   for c in chunks: ts = store.fetch(c); store.prefetch(c + 1); adam(ts); store.write_back(c, std::move(ts));
///   store.flush();
/// Every public member is safe to call from any thread while the worker runs. Not copyable or movable.
class DiskStateStore {
 public:
  /// Creates the folder `dir`/rank-<rank>/ (and its parents) and checks that a file can be written there (a probe
  /// file, deleted again). Blocks are stored as `chunk-<id>.bin` in it; a file of that name left by an earlier run is
  /// truncated when its block is added. Starts the I/O thread.
  /// Throws IoError naming the folder and the cause (strerror) when it cannot be created or written;
  /// zerodiff::Error for a negative rank.
  DiskStateStore(std::string dir, int rank);
  /// Waits for the pending writes (reads queued and not yet started are dropped: nobody can take them any more;
  /// errors are logged as warnings, never thrown), stops the I/O thread, closes and deletes this store's files and
  /// removes its rank folder when that is then empty (the files are scratch: checkpoints hold the state).
  ~DiskStateStore();
  DiskStateStore(const DiskStateStore&) = delete;
  DiskStateStore& operator=(const DiskStateStore&) = delete;

  /// Registers block `id` (any value, each once) made of `initial` (1..8 tensors, each contiguous CPU float32 of
  /// any shape; the shapes are recorded, the numels may differ) and writes it synchronously, the tensors back to
  /// back in this order, into `chunk-<id>.bin` (block_bytes(id) = 4 · Σ numel bytes, counted in bytes_written).
  /// Throws zerodiff::Error for a repeated id, no or more than 8 tensors, a tensor that is not float32, not on the
  /// CPU or not contiguous (naming its index and the bad value); IoError (file, offset, strerror) when the file
  /// cannot be created or written (the block is then not registered).
  void add(size_t id, const std::vector<at::Tensor>& initial);

  /// Starts reading block `id` into fresh host tensors in the background (read-ahead); the buffers are allocated
  /// by the I/O thread, in pinned memory when set_pinned(true) was called and CUDA is available
  /// (at::empty(..., pinned_memory(true))). No-op when the block is resident (fetched and not written back), its
  /// read is in flight or done and not yet fetched, or its data was lost by a failed write (the next fetch
  /// reports that). Throws zerodiff::Error for an unknown id.
  void prefetch(size_t id);

  /// Block `id`'s tensors, float32 with the shapes given to add(), waiting for its read (started now when it was
  /// not prefetched). A fetch of a resident block returns the same tensors again without reading. A read queued
  /// after a write_back of the same block (still in flight or not) returns the written data: the I/O thread runs
  /// reads and writes in the order they were asked for. The store keeps a reference to the tensors (counted in
  /// resident_bytes) until write_back(id, ...).
  /// Throws zerodiff::Error for an unknown id; IoError for a failed write not yet reported (see write_back), for
  /// this block's data lost by its last write_back failing (naming the file and that error), and when the read
  /// failed (naming the file, the offset and strerror, or "short read: got X of Y bytes").
  std::vector<at::Tensor> fetch(size_t id);

  /// Writes `tensors` (as many as registered, float32 CPU with the registered shapes; made contiguous if they are
  /// not) over block `id`'s file in the background (write-behind) and drops them when done. The caller must not
  /// modify them afterwards (a fetch of the block returns the written values from the file). A read of the block
  /// that was prefetched and not fetched is discarded (it holds the old data). A failed write is reported as an
  /// IoError naming the file, the offset and strerror by the next fetch or flush call, and until a later
  /// write_back of the block succeeds a fetch of it throws IoError (its file holds neither the old nor the new data).
  /// Throws zerodiff::Error for an unknown id or tensors that do not match the registered ones (naming them).
  void write_back(size_t id, std::vector<at::Tensor> tensors);

  /// Waits until every queued read and write has finished (reads stay ready for their fetch).
  /// Throws IoError for the first failed write not yet reported (saying how many more failed), and marks them all
  /// reported.
  void flush();

  /// Whether reads started from now on allocate pinned host memory (used only when CUDA is available, so that the
  /// copy to the device can be asynchronous). Default false.
  void set_pinned(bool pinned);

  /// Number of registered blocks.
  size_t num_blocks() const;
  /// Bytes of block `id` on disk (4 · Σ numel of its tensors). Throws zerodiff::Error for an unknown id.
  int64_t block_bytes(size_t id) const;
  /// Bytes read from / written to the files since construction (add() counts in bytes_written; a failed transfer
  /// counts the bytes that did go through).
  int64_t bytes_read() const;
  int64_t bytes_written() const;
  /// Host bytes held now by this store: read buffers (in flight, ready, or fetched and not yet written back) and
  /// buffers of writes in flight. 0 after flush() once every fetched block was written back.
  int64_t resident_bytes() const;
  /// The largest resident_bytes() seen since construction.
  int64_t peak_resident_bytes() const;
  /// The folder holding the files: `dir`/rank-<rank>.
  const std::string& directory() const { return directory_; }

 private:
  struct Block;
  struct Op;

  Block& block_locked(size_t id, const char* caller);
  const Block& block_locked(size_t id, const char* caller) const;
  void enqueue_locked(std::shared_ptr<Op> op);
  size_t num_blocks_locked() const;
  void start_read_locked(Block& block);
  void drop_read_locked(Block& block, std::vector<at::Tensor>& garbage);
  void throw_unreported_locked();
  void add_resident_locked(int64_t bytes);
  void worker_loop();
  void run_op(Op& op);

  std::string directory_;
  mutable std::mutex mutex_;
  std::condition_variable work_cv_;  // the worker waits for ops (or stop_)
  std::condition_variable done_cv_;  // callers wait for ops to finish
  std::unordered_map<size_t, std::unique_ptr<Block>> blocks_;
  std::deque<std::shared_ptr<Op>> queue_;
  size_t outstanding_ = 0;             // ops queued or running
  std::vector<std::string> unreported_;  // failed writes not yet reported by fetch / flush
  bool stop_ = false;
  bool pinned_ = false;
  int64_t bytes_read_ = 0, bytes_written_ = 0;
  int64_t resident_ = 0, peak_resident_ = 0;
  std::thread worker_;
};

}  // namespace zerodiff::memory
