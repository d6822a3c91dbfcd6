#include "zerodiff/io/AtomicFile.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/FaultInjection.h"

namespace zerodiff::io {

namespace {
std::atomic<int> g_counter{0};

void fsync_dir(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const int fd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  temp_ = zerodiff::str(path_, ".tmp.", ::getpid(), ".", g_counter++);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw IoError(zerodiff::str(path_, ": cannot create temporary file ", temp_, ": ", std::strerror(errno)));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicFile::write(const void* data, size_t size) {
  const auto write_all = [this](const char* p, size_t n_left) {
    while (n_left > 0) {
      const ssize_t n = ::write(fd_, p, n_left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        throw IoError(zerodiff::str(path_, ": write failed: ", n < 0 ? std::strerror(errno) : "no progress",
                                    " (previous file left untouched)"));
      }
      p += n;
      n_left -= static_cast<size_t>(n);
    }
  };
  const auto* p = static_cast<const char*>(data);
  if (started_) {
    write_all(p, size);
    return;
  }
  // The first write of a file goes in two halves with the fault point between them: once per file, a test can
  // kill the process with the file partly written.
  started_ = true;
  write_all(p, size / 2);
  fault_point("atomic_file.mid_write");
  write_all(p + size / 2, size - size / 2);
}

void AtomicFile::commit() {
  ZD_CHECK(!committed_, path_, ": AtomicFile committed twice");
  if (::fsync(fd_) != 0) {
    throw IoError(zerodiff::str(path_, ": fsync failed: ", std::strerror(errno), " (previous file left untouched)"));
  }
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw IoError(zerodiff::str(path_, ": close failed: ", std::strerror(errno), " (previous file left untouched)"));
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    throw IoError(zerodiff::str(path_, ": rename from ", temp_, " failed: ", std::strerror(errno)));
  }
  committed_ = true;
  fsync_dir(path_);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  AtomicFile f(path);
  f.write(contents.data(), contents.size());
  f.commit();
}

namespace {
void fsync_path(const std::filesystem::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

void restore_interrupted_replacements(const std::string& parent) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (auto it = fs::directory_iterator(parent, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string n = it->path().filename().string();
    const auto at = n.rfind(".old-");
    if (n.size() < 2 || n[0] != '.' || at == std::string::npos || at <= 1) continue;
    const fs::path target = fs::path(parent) / n.substr(1, at - 1);
    std::error_code exists_ec;
    if (!fs::exists(target, exists_ec) && !exists_ec) {
      std::error_code rename_ec;
      fs::rename(it->path(), target, rename_ec);  // best effort: a failure leaves it for the caller's check
    }
  }
}

void write_directory_atomic(const std::string& dir, const std::function<void(const std::string& temp)>& fill) {
  namespace fs = std::filesystem;
  fs::path target = fs::path(dir).lexically_normal();
  if (target.filename().empty() && target.has_parent_path()) target = target.parent_path();  // "out/final/"
  ZD_CHECK(!target.filename().empty() && target.filename() != "." && target.filename() != "..",
           "write_directory_atomic: '", dir, "' does not name a folder");
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string name = target.filename().string();
  const fs::path temp = parent / zerodiff::str(".", name, ".tmp-", ::getpid());
  const fs::path old = parent / zerodiff::str(".", name, ".old-", ::getpid());
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) throw IoError(zerodiff::str(parent.string(), ": cannot create folder: ", ec.message()));
  // Leftovers of interrupted writes of this folder (any pid: one writer per folder) are never complete.
  const std::string tmp_prefix = zerodiff::str(".", name, ".tmp-"), old_prefix = zerodiff::str(".", name, ".old-");
  // A ".old-" leftover with no `dir` means a writer died between moving the previous folder aside and renaming the
  // new one in (the fallback below, on filesystems without RENAME_EXCHANGE): that is the last complete folder, so
  // it is put back rather than removed (restore_interrupted_replacements).
  restore_interrupted_replacements(parent.string());
  std::vector<fs::path> leftovers;
  for (auto it = fs::directory_iterator(parent, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.rfind(tmp_prefix, 0) == 0 || n.rfind(old_prefix, 0) == 0) leftovers.push_back(it->path());
  }
  for (const auto& p : leftovers) {
    if (p.filename().string().rfind(old_prefix, 0) == 0 && !fs::exists(target, ec)) {
      throw IoError(zerodiff::str(p.string(), ": the previous ", target.string(),
                                  " could not be put back; move it there by hand"));
    }
    fs::remove_all(p, ec);
  }
  fs::create_directories(temp, ec);
  if (ec) throw IoError(zerodiff::str(temp.string(), ": cannot create: ", ec.message()));
  try {
    fill(temp.string());
  } catch (const IoError& e) {
    fs::remove_all(temp, ec);
    // Name the files by where they were going ("<dir>/model.safetensors"), not by the hidden sibling.
    std::string message = e.what();
    const std::string from = temp.string(), to = target.string();
    for (size_t at = message.find(from); at != std::string::npos; at = message.find(from, at + to.size())) {
      message.replace(at, from.size(), to);
    }
    throw IoError(message, e.where());
  } catch (...) {
    fs::remove_all(temp, ec);
    throw;
  }
  bool moved_aside = false, exchanged = false;
  try {
    for (const auto& entry : fs::recursive_directory_iterator(temp)) fsync_path(entry.path());
    fsync_path(temp);
    fault_point("atomic_dir.before_rename");
    if (fs::exists(target)) {
      // One atomic step: `dir` becomes the new folder and `temp` the previous one (removed below).
      if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
        exchanged = true;
      } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
        // No RENAME_EXCHANGE on this filesystem: move aside, then rename (a crash in between is repaired by the
        // next write of `dir`, which puts the ".old-" folder back).
        fs::rename(target, old);
        moved_aside = true;
        fs::rename(temp, target);
      } else {
        throw fs::filesystem_error("renameat2(RENAME_EXCHANGE)", temp, target,
                                   std::error_code(errno, std::generic_category()));
      }
    } else {
      fs::rename(temp, target);
    }
    fsync_path(parent);
  } catch (const fs::filesystem_error& e) {
    if (moved_aside && !fs::exists(target)) fs::rename(old, target, ec);  // put the previous folder back
    if (!exchanged) fs::remove_all(temp, ec);
    throw IoError(zerodiff::str(dir, ": cannot replace the folder: ", e.what()));
  }
  if (exchanged) fs::remove_all(temp, ec);
  if (moved_aside) fs::remove_all(old, ec);
}

}  // namespace zerodiff::io
