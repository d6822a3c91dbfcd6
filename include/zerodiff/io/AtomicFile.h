// zerodiff/io/AtomicFile.h — write a file so that readers see either the old or the complete new one.
//
// Bytes go to "<path>.tmp.<pid>.<n>" in the same folder; commit() fsyncs it, renames it over `path` and
// fsyncs the folder. Destroying an AtomicFile that was not committed removes the temporary file and
// leaves `path` untouched (a failed or interrupted save never damages the previous file).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace zerodiff::io {

class AtomicFile {
 public:
  /// Creates the temporary file next to `path` (the folder must exist). Throws IoError naming `path`.
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends `size` bytes. Throws IoError naming `path` on a short write (e.g. a full disk: ENOSPC).
  void write(const void* data, size_t size);
  /// fsync + rename over the target + fsync of the folder. Throws IoError on failure.
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, temp_;
  int fd_ = -1;
  bool committed_ = false;
  bool started_ = false;  // a first write() happened (the fault point "atomic_file.mid_write" is in the first)
};

/// Writes `contents` to `path` atomically (AtomicFile in one call).
void write_file_atomic(const std::string& path, const std::string& contents);

/// Builds the folder `dir` so that it is either absent/old or complete: `fill` writes into a hidden sibling
/// ("<parent>/.<name>.tmp-<pid>", created empty; leftovers of interrupted writes of `dir`, any pid, are
/// removed first — one writer per folder — except a moved-aside previous folder with no `dir`, which is put back);
/// every file and folder in it is fsynced, then it replaces `dir` in one renameat2(RENAME_EXCHANGE) (or, where the
/// filesystem lacks it, by moving `dir` aside and renaming, the old folder put back if the rename fails); the
/// previous folder is removed afterwards. When `fill` throws, the sibling is removed, `dir` is untouched and the
/// exception propagates. Throws IoError naming the folder when it cannot be created or renamed.
void write_directory_atomic(const std::string& dir, const std::function<void(const std::string& temp)>& fill);

/// Puts back, in folder `parent`, every ".<name>.old-<pid>" whose "<name>" is missing: the previous folder of a
/// write_directory_atomic that was killed between its two renames (the fallback without RENAME_EXCHANGE). Best
/// effort, never throws; CheckpointManager calls it before listing or writing checkpoints.
void restore_interrupted_replacements(const std::string& parent);

}  // namespace zerodiff::io
