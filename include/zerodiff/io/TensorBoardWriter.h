// zerodiff/io/TensorBoardWriter.h — TensorBoard event files (what `tensorboard --logdir` reads), without
// TensorFlow or protobuf: the few Event/Summary fields we write are encoded by hand.
//
// Format (tensorflow/core/util/events_writer.cc, tensorflow/core/lib/io/record_writer.cc): a file
// "events.out.tfevents.<unix seconds>.<host>.<unix microseconds, 17 digits>.<pid>.<n>" of records; a record is
//   uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// with masked_crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8 and CRC-32C (Castagnoli). Each record holds one
// tensorflow.Event: wall_time (1, double), step (2, int64), file_version (3, string; "brain.Event:2" in the
// first record), summary (5) or session_log (7) = {status (1): START = 1}: Summary.value (1) = {tag (1), simple_value (2, float) | image (4) =
// {height (1), width (2), colorspace (3), encoded_image_string (4)}}.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace zerodiff::io {

/// CRC-32C (Castagnoli polynomial 0x82F63B78, reflected), as TensorFlow's crc32c::Value.
uint32_t crc32c(const void* data, size_t size);

/// TensorFlow's masked CRC of a record part: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

class TensorBoardWriter {
 public:
  /// Creates `log_dir` and a new event file in it (never appends to an existing one: a resumed run writes a
  /// second file, which TensorBoard merges). Throws IoError naming the folder or file.
  explicit TensorBoardWriter(const std::string& log_dir);
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  /// One scalar point (TensorBoard "Scalars" tab). `wall_time` in seconds since the epoch; < 0 = now.
  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time = -1);
  /// One image ("Images" tab) from PNG bytes of a `width` x `height` image with `channels` (1, 3 or 4).
  void add_image_png(const std::string& tag, const std::string& png, int64_t height, int64_t width, int channels,
                     int64_t step, double wall_time = -1);
  /// A SessionLog START event at `step` (Event field 7, status 1): TensorBoard then discards the points of
  /// earlier files at steps >= `step` (what a resumed run rewrites), as tf.summary's purge_step does.
  void add_session_start(int64_t step);
  /// Pushes written records to the OS (records are also flushed after every add_*). Throws IoError.
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& event);
  std::string path_;
  std::ofstream out_;
};

}  // namespace zerodiff::io
