// libFuzzer target: the safetensors reader (zerodiff::io::SafetensorsFile::parse) on arbitrary bytes.
// Every input must either parse — and then every tensor it lists can be read and has the size its header says —
// or throw zerodiff::IoError. Anything else (a crash, a sanitizer report, another exception type) is a finding.
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "zerodiff/core/Error.h"
#include "zerodiff/io/Safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = zerodiff::io::SafetensorsFile::parse(std::string(reinterpret_cast<const char*>(data), size),
                                                           "<fuzz>");
    for (const auto& name : file.names()) {
      const auto& e = file.entry(name);
      const at::Tensor t = file.get(name);
      if (static_cast<uint64_t>(t.nbytes()) != e.end - e.begin) __builtin_trap();
      // Touch every byte (reads past the data section would be caught), as bytes: not every dtype has a sum.
      if (t.numel() > 0) (void)at::from_blob(t.data_ptr(), {static_cast<int64_t>(t.nbytes())}, at::kByte).sum();
    }
  } catch (const zerodiff::IoError&) {
  }
  return 0;
}
