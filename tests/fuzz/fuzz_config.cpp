// libFuzzer target: the YAML config loader on arbitrary text, through the full run config (RunConfig: trainer,
// model, data, optimizer sections with every validation) and one override. Every input either loads or throws
// zerodiff::ConfigError (yaml-cpp errors included, wrapped); anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "zerodiff/core/Config.h"
#include "zerodiff/core/Error.h"
#include "zerodiff/train/RunConfig.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // The last line, when it looks like one, is also tried as a command-line override ("a.b=value").
  std::vector<std::string> overrides;
  if (const auto nl = text.rfind('\n'); nl != std::string_view::npos && text.find('=', nl) != std::string_view::npos) {
    overrides.emplace_back(text.substr(nl + 1));
  }
  try {
    (void)zerodiff::config::load_string<zerodiff::train::RunConfig>(text, "<fuzz>", overrides);
  } catch (const zerodiff::ConfigError&) {
  }
  return 0;
}
