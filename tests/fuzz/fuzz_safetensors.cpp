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
      if (t.numel() > 0) (void)t.sum();  // touch every byte (reads past the data section would be caught)
    }
  } catch (const zerodiff::IoError&) {
  }
  return 0;
}
