#include "zerodiff/io/AtomicFile.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "zerodiff/core/Error.h"

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
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw IoError(zerodiff::str(path_, ": write failed: ", n < 0 ? std::strerror(errno) : "no progress",
                        " (previous file left untouched)"));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
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

}  // namespace zerodiff::io
