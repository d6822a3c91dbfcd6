// TensorBoard event files: record framing with masked CRC-32C and hand-encoded Event / Summary protobufs.
#include "zerodiff/io/TensorBoardWriter.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "zerodiff/core/Error.h"

namespace zerodiff::io {

namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr auto kCrc32cTable = make_crc32c_table();

// Protobuf wire format: varint (wire type 0), fixed64 (1), length-delimited (2), fixed32 (5).
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_tag(std::string& out, int field, int wire_type) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_tag(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}
void put_double(std::string& out, int field, double v) {
  put_tag(out, field, 1);
  char b[8];
  std::memcpy(b, &v, 8);  // little endian on every platform we build for (x86_64, aarch64)
  out.append(b, 8);
}
void put_float(std::string& out, int field, float v) {
  put_tag(out, field, 5);
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}
void put_int(std::string& out, int field, int64_t v) {
  put_tag(out, field, 0);
  put_varint(out, static_cast<uint64_t>(v));
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Event{wall_time, step, summary{value{...}}} around one encoded Summary.Value.
std::string summary_event(const std::string& value, int64_t step, double wall_time) {
  std::string summary, event;
  put_bytes(summary, 1, value);
  put_double(event, 1, wall_time < 0 ? now_seconds() : wall_time);
  put_int(event, 2, step);
  put_bytes(event, 5, summary);
  return event;
}

std::atomic<int> g_file_counter{0};

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = kCrc32cTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(log_dir, ec);
  if (ec) throw IoError(zerodiff::str(log_dir, ": cannot create the TensorBoard folder: ", ec.message()));
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  host[sizeof(host) - 1] = '\0';
  // TensorBoard reads a folder's files in name order: after the seconds and host, a zero-padded microsecond
  // clock keeps that order = creation order (a resumed run's file after the first run's, whatever the pids).
  const double now = now_seconds();
  char micros[32];
  std::snprintf(micros, sizeof(micros), "%017lld", static_cast<long long>(now * 1e6));
  path_ = (fs::path(log_dir) / zerodiff::str("events.out.tfevents.", static_cast<int64_t>(now), ".", host, ".", micros,
                                              ".", ::getpid(), ".", g_file_counter++))
              .string();
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw IoError(zerodiff::str(path_, ": cannot create the event file"));
  std::string first;
  put_double(first, 1, now_seconds());
  put_bytes(first, 3, "brain.Event:2");
  write_event(first);
}

void TensorBoardWriter::write_event(const std::string& event) {
  char header[12];
  const uint64_t length = event.size();
  std::memcpy(header, &length, 8);
  const uint32_t length_crc = masked_crc32c(header, 8);
  std::memcpy(header + 8, &length_crc, 4);
  const uint32_t data_crc = masked_crc32c(event.data(), event.size());
  out_.write(header, 12);
  out_.write(event.data(), static_cast<std::streamsize>(event.size()));
  out_.write(reinterpret_cast<const char*>(&data_crc), 4);
  flush();
}

void TensorBoardWriter::flush() {
  out_.flush();
  if (!out_) throw IoError(zerodiff::str(path_, ": write failed (disk full?)"));
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  std::string v;
  put_bytes(v, 1, tag);
  put_float(v, 2, static_cast<float>(value));
  write_event(summary_event(v, step, wall_time));
}

void TensorBoardWriter::add_session_start(int64_t step) {
  std::string session_log, event;
  put_int(session_log, 1, 1);  // SessionLog.status = START
  put_double(event, 1, now_seconds());
  put_int(event, 2, step);
  put_bytes(event, 7, session_log);
  write_event(event);
}

void TensorBoardWriter::add_image_png(const std::string& tag, const std::string& png, int64_t height, int64_t width,
                                      int channels, int64_t step, double wall_time) {
  ZD_CHECK(channels == 1 || channels == 3 || channels == 4, "TensorBoard image '", tag, "': channels must be 1, 3 or 4, got ",
           channels);
  std::string image, v;
  put_int(image, 1, height);
  put_int(image, 2, width);
  put_int(image, 3, channels);
  put_bytes(image, 4, png);
  put_bytes(v, 1, tag);
  put_bytes(v, 4, image);
  write_event(summary_event(v, step, wall_time));
}

}  // namespace zerodiff::io
