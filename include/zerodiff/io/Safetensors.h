// zerodiff/io/Safetensors.h — the safetensors format (https://github.com/huggingface/safetensors):
//   [8-byte little-endian u64 N][N bytes of JSON header][data section]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to
// the data section) plus an optional "__metadata__" object of string -> string.
//
// Design rules: reads are memory-mapped (MAP_PRIVATE, so tensors are writable copy-on-write and the file
// is never modified) and bounds-checked before any tensor is touched; every problem throws IoError naming
// the file and, where there is one, the tensor. Writes go to a temporary file in the same folder, are
// fsync'ed and renamed over the target, so a crash never leaves a half-written file under the real name.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace zerodiff::io {

/// Largest JSON header accepted (the reference implementation's limit).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1000 * 1000;

/// Maps a safetensors dtype name ("F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8",
/// "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2") to an ATen dtype. Throws IoError otherwise.
at::ScalarType dtype_from_safetensors(const std::string& name);

/// The safetensors name of an ATen dtype. Throws IoError for dtypes the format cannot store.
std::string dtype_to_safetensors(at::ScalarType dtype);

/// One tensor of a safetensors header.
struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;   // [d0, d1, ...]; [] is a scalar
  uint64_t begin = 0, end = 0;  // byte range [begin, end) within the data section
};

/// A validated, memory-mapped safetensors file. Cheap to copy (shares the mapping); tensors returned by
/// get() keep the mapping alive.
class SafetensorsFile {
 public:
  /// Maps and validates `path`. Throws IoError ("<path>: ...") when the file cannot be opened, is shorter
  /// than 8 bytes, its header length is past the end of the file or over 100 MB, the header is not valid
  /// JSON or not an object, a dtype is unknown, a shape is not a list of non-negative integers, offsets are
  /// out of range, overlap, leave gaps or do not match shape x dtype size, or a name appears twice.
  /// A PyTorch pickle (torch.save's zip archive or a bare pickle: .bin/.ckpt/.pt/.pth) is refused before
  /// parsing, with the Python line that converts it: zerodiff never executes code from a file.
  static SafetensorsFile open(const std::string& path);
  /// The same checks over bytes in memory (`name` stands for the path in messages); the file keeps `bytes`.
  /// Used by the fuzz target (tests/fuzz/) and for weights that do not come from a file.
  static SafetensorsFile parse(std::string bytes, const std::string& name);

  struct Impl;  // implementation detail (mapping + parsed header), defined in src/io/Safetensors.cpp

  const std::string& path() const;
  /// Tensor names in header order.
  const std::vector<std::string>& names() const;
  bool contains(const std::string& name) const;
  /// Header entry of `name`; throws IoError "<path>: no tensor 'name'".
  const SafetensorsEntry& entry(const std::string& name) const;
  /// CPU tensor viewing the mapped bytes (zero-copy when aligned, else copied). Writable (copy-on-write).
  at::Tensor get(const std::string& name) const;
  /// The "__metadata__" object (empty when absent).
  const std::map<std::string, std::string>& metadata() const;

 private:
  static void validate(Impl& f, const uint8_t* bytes, uint64_t size);
  std::shared_ptr<const Impl> impl_;
};

/// The message tail of every pickle refusal: why, and the Python line that converts a pickle to safetensors.
std::string pickle_refusal_advice();

/// True when the file at `path` starts like a PyTorch pickle (torch.save's zip archive or a bare pickle of
/// protocol 2-5). False for unreadable or short files.
bool looks_like_pickle(const std::string& path);

/// Name -> tensor, in a stable (sorted) order.
using TensorMap = std::map<std::string, at::Tensor>;

/// Reads every tensor of a safetensors file (views on the mapping; see SafetensorsFile::get).
TensorMap load_safetensors(const std::string& path);

/// Writes `tensors` (any device; copied to CPU, made contiguous) in the given order, with `metadata`,
/// atomically (temp file + fsync + rename). Throws IoError naming the file on any write failure (the
/// previous file under `path`, if any, is left untouched) and for duplicate names or unsupported dtypes.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// save_safetensors over a TensorMap (names in sorted order). A template only so that a braced list
/// `{{"name", t}, ...}` picks the ordered overload above unambiguously.
template <class Map, class = std::enable_if_t<std::is_same_v<Map, TensorMap>>>
void save_safetensors(const std::string& path, const Map& tensors,
                      const std::map<std::string, std::string>& metadata = {}) {
  save_safetensors(path, std::vector<std::pair<std::string, at::Tensor>>(tensors.begin(), tensors.end()), metadata);
}

}  // namespace zerodiff::io
