// safetensors reader (mmap, validated) and atomic writer. Follows the format spec and the checks of the
// reference Rust implementation (huggingface/safetensors, `SafeTensors::deserialize` / `validate`).
#include "zerodiff/io/Safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <unordered_map>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/AtomicFile.h"

namespace zerodiff::io {

namespace {

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble},   {"F32", at::kFloat},    {"F16", at::kHalf},          {"BF16", at::kBFloat16},
    {"I64", at::kLong},     {"I32", at::kInt},      {"I16", at::kShort},         {"I8", at::kChar},
    {"U64", at::kUInt64},   {"U32", at::kUInt32},   {"U16", at::kUInt16},        {"U8", at::kByte},
    {"BOOL", at::kBool},    {"F8_E4M3", at::kFloat8_e4m3fn}, {"F8_E5M2", at::kFloat8_e5m2},
};

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw IoError(zerodiff::str(path, ": ", message));
}

}  // namespace

at::ScalarType dtype_from_safetensors(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  throw IoError(zerodiff::str("unknown safetensors dtype '", name,
                    "' (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, "
                    "F8_E4M3, F8_E5M2)"));
}

std::string dtype_to_safetensors(at::ScalarType dtype) {
  for (const auto& d : kDtypes) {
    if (dtype == d.dtype) return d.name;
  }
  throw IoError(zerodiff::str("dtype ", dtype, " cannot be stored in safetensors"));
}

// ------------------------------------------------------------------ reading

struct SafetensorsFile::Impl {
  std::string path;
  std::string owned;  // the bytes, for SafetensorsFile::parse (no mapping)
  void* map = nullptr;
  size_t map_size = 0;
  const uint8_t* data = nullptr;  // start of the data section
  uint64_t data_size = 0;
  std::vector<std::string> names;
  std::unordered_map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;

  ~Impl() {
    if (map && map != MAP_FAILED) munmap(map, map_size);
  }
};

namespace {

uint64_t checked_numel(const std::string& path, const std::string& name, const std::vector<int64_t>& shape) {
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) {
      fail(path, zerodiff::str("tensor '", name, "': shape ", shape, " overflows"));
    }
    numel *= static_cast<uint64_t>(d);
  }
  return numel;
}

void parse_header(SafetensorsFile::Impl& f, const char* text, size_t length) {
  const std::string& path = f.path;
  // Duplicate names are invalid; nlohmann keeps the last silently, so watch the parser's key events.
  std::set<std::string> top_keys;
  std::string duplicate;
  nlohmann::json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event,
                                                   nlohmann::json& parsed) {
    // header -> tensor -> shape -> dimension is 3 levels; deeper nesting is refused before it is built (dump()
    // and the destructor recurse: a 100 MB "[[[[..." would exhaust the stack).
    if (depth > 4) fail(path, "header nests deeper than 4 levels (not a safetensors header)");
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!top_keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + length, on_event);
  } catch (const nlohmann::json::exception& e) {
    fail(path, zerodiff::str("invalid JSON header: ", e.what()));
  }
  if (!duplicate.empty()) fail(path, zerodiff::str("tensor '", duplicate, "' appears twice in the header"));
  if (!header.is_object()) fail(path, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& value = it.value();
    if (name == "__metadata__") {
      if (!value.is_object()) fail(path, "__metadata__ is not an object of strings");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) fail(path, zerodiff::str("__metadata__ value of '", m.key(), "' is not a string"));
        f.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!value.is_object()) fail(path, zerodiff::str("tensor '", name, "': entry is not an object"));
    SafetensorsEntry e;
    e.name = name;
    if (!value.contains("dtype") || !value["dtype"].is_string()) fail(path, zerodiff::str("tensor '", name, "': missing dtype"));
    try {
      e.dtype = dtype_from_safetensors(value["dtype"].get<std::string>());
    } catch (const IoError& err) {
      fail(path, zerodiff::str("tensor '", name, "': ", err.what()));
    }
    if (!value.contains("shape") || !value["shape"].is_array()) fail(path, zerodiff::str("tensor '", name, "': missing shape"));
    for (const auto& d : value["shape"]) {
      if (!d.is_number_unsigned()) fail(path, zerodiff::str("tensor '", name, "': shape ", value["shape"].dump(), " is not a list of non-negative integers"));
      if (d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(path, zerodiff::str("tensor '", name, "': shape ", value["shape"].dump(), " has a dimension over 2^63 - 1"));
      }
      e.shape.push_back(d.get<int64_t>());
    }
    const auto& offsets = value.contains("data_offsets") ? value["data_offsets"] : nlohmann::json();
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      fail(path, zerodiff::str("tensor '", name, "': data_offsets must be [begin, end]"));
    }
    e.begin = offsets[0].get<uint64_t>();
    e.end = offsets[1].get<uint64_t>();
    if (e.begin > e.end || e.end > f.data_size) {
      fail(path, zerodiff::str("tensor '", name, "': data_offsets [", e.begin, ", ", e.end, ") out of range (data section is ",
                     f.data_size, " bytes)"));
    }
    const uint64_t numel = checked_numel(path, name, e.shape);
    const uint64_t item = at::elementSize(e.dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / item) {
      fail(path, zerodiff::str("tensor '", name, "': shape ", e.shape, " overflows"));
    }
    const uint64_t expected = numel * item;
    if (e.end - e.begin != expected) {
      fail(path, zerodiff::str("tensor '", name, "': data_offsets [", e.begin, ", ", e.end, ") hold ", e.end - e.begin,
                     " bytes but shape ", e.shape, " x ", value["dtype"].get<std::string>(), " needs ", expected));
    }
    f.names.push_back(name);
    f.entries.emplace(name, std::move(e));
  }

  // Entries must tile the data section exactly: no overlap, no gap, nothing left over.
  std::vector<const SafetensorsEntry*> sorted;
  for (const auto& [_, e] : f.entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const auto* e : sorted) {
    if (e->begin < cursor) {
      fail(path, zerodiff::str("tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end, ") overlap tensor '",
                     previous->name, "' [", previous->begin, ", ", previous->end, ")"));
    }
    if (e->begin > cursor) {
      fail(path, zerodiff::str("tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end, ") leave a gap of ",
                     e->begin - cursor, " bytes after offset ", cursor));
    }
    cursor = e->end;
    previous = e;
  }
  if (cursor != f.data_size) {
    fail(path, zerodiff::str("data section is ", f.data_size, " bytes but the tensors cover only ", cursor));
  }
}

}  // namespace

namespace {

// A PyTorch pickle (torch.save's zip archive, or a bare pickle of protocol 2-5) where safetensors was expected:
// refused before anything is parsed, with the way to convert it. Pickles can run arbitrary code when loaded.
void refuse_pickle(const std::string& path, const uint8_t* bytes, uint64_t size) {
  const bool zip = size >= 4 && bytes[0] == 'P' && bytes[1] == 'K' && bytes[2] == 3 && bytes[3] == 4;
  const bool pickle = size >= 2 && bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5;
  if (!zip && !pickle) return;
  fail(path, zerodiff::str(zip ? "a PyTorch zip archive (torch.save)" : "a Python pickle", ", not safetensors: ",
                           pickle_refusal_advice()));
}

}  // namespace

std::string pickle_refusal_advice() {
  return "zerodiff never loads pickle files, which can execute arbitrary code. "
         "Convert it once in Python: `from safetensors.torch import save_file; import torch; "
         "sd = torch.load(IN, weights_only=True); sd = sd.get('state_dict', sd); "
         "save_file({k: v.contiguous() for k, v in sd.items()}, OUT)` "
         "(a full Stable Diffusion .ckpt: diffusers' convert_original_stable_diffusion_to_diffusers.py)";
}

bool looks_like_pickle(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char b[4] = {0, 0, 0, 0};
  in.read(b, 4);
  const auto u = [&](int i) { return static_cast<unsigned char>(b[i]); };
  return (in.gcount() >= 4 && b[0] == 'P' && b[1] == 'K' && u(2) == 3 && u(3) == 4) ||
         (in.gcount() >= 2 && u(0) == 0x80 && u(1) >= 2 && u(1) <= 5);
}

void SafetensorsFile::validate(Impl& f, const uint8_t* bytes, uint64_t size) {
  const std::string& path = f.path;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian u64
  // The pickle magic is only tested when the bytes are not a plausible safetensors header: a header of 640, 896,
  // 1152 or 1408 bytes also starts with 0x80 0x02..0x05.
  const bool plausible = header_len <= kMaxSafetensorsHeaderBytes && 8 + header_len <= size && header_len > 0 &&
                         bytes[8] == '{';
  if (!plausible) refuse_pickle(path, bytes, size);
  if (header_len > kMaxSafetensorsHeaderBytes) {
    fail(path, zerodiff::str("header length ", header_len, " exceeds the 100 MB limit (corrupt file?)"));
  }
  if (8 + header_len > size) {
    fail(path, zerodiff::str("header length ", header_len, " is past the end of the file (", size, " bytes; truncated?)"));
  }
  f.data = bytes + 8 + header_len;
  f.data_size = size - 8 - header_len;
  parse_header(f, reinterpret_cast<const char*>(bytes + 8), header_len);
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto f = std::make_shared<Impl>();
  f->path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, zerodiff::str("cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path, zerodiff::str("cannot stat: ", std::strerror(errno)));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(path, zerodiff::str("file is ", size, " bytes, too small for a safetensors header (truncated?)"));
  }
  f->map_size = size;
  f->map = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (f->map == MAP_FAILED) fail(path, zerodiff::str("cannot mmap: ", std::strerror(errno)));
  validate(*f, static_cast<const uint8_t*>(f->map), size);
  SafetensorsFile file;
  file.impl_ = std::move(f);
  return file;
}

SafetensorsFile SafetensorsFile::parse(std::string bytes, const std::string& name) {
  auto f = std::make_shared<Impl>();
  f->path = name;
  f->owned = std::move(bytes);
  if (f->owned.size() < 8) {
    fail(name, zerodiff::str("file is ", f->owned.size(), " bytes, too small for a safetensors header (truncated?)"));
  }
  validate(*f, reinterpret_cast<const uint8_t*>(f->owned.data()), f->owned.size());
  SafetensorsFile file;
  file.impl_ = std::move(f);
  return file;
}

const std::string& SafetensorsFile::path() const { return impl_->path; }
const std::vector<std::string>& SafetensorsFile::names() const { return impl_->names; }
bool SafetensorsFile::contains(const std::string& name) const { return impl_->entries.count(name) != 0; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->metadata; }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = impl_->entries.find(name);
  if (it == impl_->entries.end()) fail(impl_->path, zerodiff::str("no tensor '", name, "'"));
  return it->second;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const auto options = at::TensorOptions().dtype(e.dtype).device(at::kCPU);
  auto* ptr = const_cast<uint8_t*>(impl_->data + e.begin);
  const size_t item = at::elementSize(e.dtype);
  if (e.end == e.begin) return at::empty(e.shape, options);
  if (reinterpret_cast<uintptr_t>(ptr) % item != 0) {
    // Unaligned for its dtype (legal in the format): copy into an aligned tensor.
    at::Tensor t = at::empty(e.shape, options);
    std::memcpy(t.data_ptr(), ptr, e.end - e.begin);
    return t;
  }
  std::shared_ptr<const Impl> keep = impl_;
  return at::from_blob(
      ptr, e.shape, [keep](void*) mutable { keep.reset(); }, options);
}

TensorMap load_safetensors(const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  TensorMap out;
  for (const auto& name : file.names()) out.emplace(name, file.get(name));
  return out;
}

// ------------------------------------------------------------------ writing

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  data.reserve(tensors.size());
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail(path, "'__metadata__' is reserved and cannot name a tensor");
    if (!seen.insert(name).second) fail(path, zerodiff::str("tensor '", name, "' given twice"));
    if (!tensor.defined()) fail(path, zerodiff::str("tensor '", name, "' is undefined"));
    std::string dtype;
    try {
      dtype = dtype_to_safetensors(tensor.scalar_type());
    } catch (const IoError& e) {
      fail(path, zerodiff::str("tensor '", name, "': ", e.what()));
    }
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
    header[name] = {{"dtype", dtype}, {"shape", cpu.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(cpu));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data section to 8 bytes, as the reference does
  AtomicFile out(path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const auto& t : data) out.write(t.const_data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  out.commit();
}


}  // namespace zerodiff::io
