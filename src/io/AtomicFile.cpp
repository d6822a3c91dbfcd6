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

namespace {
void fsync_path(const std::filesystem::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

void write_directory_atomic(const std::string& dir, const std::function<void(const std::string& temp)>& fill) {
  namespace fs = std::filesystem;
  const fs::path target = fs::path(dir).lexically_normal();
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string name = target.filename().string();
  const fs::path temp = parent / zerodiff::str(".", name, ".tmp-", ::getpid());
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) throw IoError(zerodiff::str(parent.string(), ": cannot create folder: ", ec.message()));
  fs::remove_all(temp, ec);
  fs::create_directories(temp, ec);
  if (ec) throw IoError(zerodiff::str(temp.string(), ": cannot create: ", ec.message()));
  try {
    fill(temp.string());
    for (const auto& entry : fs::recursive_directory_iterator(temp)) {
      if (entry.is_regular_file()) fsync_path(entry.path());
    }
    fsync_path(temp);
    if (fs::exists(target)) {
      const fs::path old = parent / zerodiff::str(".", name, ".old-", ::getpid());
      fs::remove_all(old, ec);
      fs::rename(target, old);
      fs::rename(temp, target);
      fs::remove_all(old, ec);
    } else {
      fs::rename(temp, target);
    }
    fsync_path(parent);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(temp, ec);
    throw IoError(zerodiff::str(dir, ": cannot replace the folder: ", e.what()));
  } catch (...) {
    fs::remove_all(temp, ec);
    throw;
  }
}

}  // namespace zerodiff::io
