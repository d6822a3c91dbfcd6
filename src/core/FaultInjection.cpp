#include "zerodiff/core/FaultInjection.h"

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <string>

#include "zerodiff/core/Error.h"

namespace zerodiff {

namespace {
struct Armed {
  std::string name;   // empty: no fault armed
  long long when = 0;  // the hit that kills
  long long hits = 0;
  std::mutex mu;
};

// Parses ZERODIFF_FAULT before allocating, so a malformed value throws (again at every call) without leaking.
Armed* parse_environment() {
  const char* env = std::getenv("ZERODIFF_FAULT");
  std::string spec = env == nullptr ? std::string() : std::string(env);
  long long when = 1;
  if (const auto at = spec.find('@'); at != std::string::npos) {
    const std::string count = spec.substr(at + 1);
    char* end = nullptr;
    when = std::strtoll(count.c_str(), &end, 10);
    if (count.empty() || *end != '\0' || when < 1) {
      throw ConfigError(zerodiff::str("ZERODIFF_FAULT='", spec, "': expected <point> or <point>@<n> with n >= 1"));
    }
    spec.resize(at);
  }
  if (!spec.empty() && spec != "atomic_file.mid_write" && spec != "atomic_dir.before_rename") {
    throw ConfigError(zerodiff::str("ZERODIFF_FAULT='", env, "': unknown point '", spec,
                                    "' (points: atomic_file.mid_write, atomic_dir.before_rename)"));
  }
  auto* p = new Armed();  // leaked on purpose: usable during static destruction
  p->name = spec;
  p->when = when;
  return p;
}

Armed& armed() {
  static Armed* a = parse_environment();
  return *a;
}
}  // namespace

void check_fault_injection() { (void)armed(); }

void fault_point(const char* name) {
  Armed& a = armed();
  if (a.name.empty() || a.name != name) return;
  std::lock_guard<std::mutex> lock(a.mu);
  if (++a.hits == a.when) {
    std::raise(SIGKILL);
  }
}

}  // namespace zerodiff
