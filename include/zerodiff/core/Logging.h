// zerodiff/core/Logging.h — rank-aware logging.
//
// Design rules: the API is free of spdlog and fmt types (LibTorch ships its own fmt, a different
// major version than Debian's spdlog is built against, so spdlog lives in one translation unit that
// never sees torch headers). Messages are built with zerodiff::str(...) pieces, formatted only when
// the level is enabled. Lines look like
//   [2026-11-30 05:10:21.123] [rank 0] [info] loaded 686 tensors
// By default only rank 0 logs below `warn`; other ranks log warnings and errors.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "zerodiff/core/Error.h"

namespace zerodiff::log {

enum class Level { trace = 0, debug, info, warn, error, off };
/// Level's name table (core/Enum.h); "warning" is an alias of warn.
inline constexpr EnumName<Level> kLevelNames[] = {{Level::trace, "trace"}, {Level::debug, "debug"},
                                                  {Level::info, "info"},   {Level::warn, "warn"},
                                                  {Level::error, "error"}, {Level::off, "off"},
                                                  {Level::warn, "warning"}};
constexpr std::span<const EnumName<Level>> enum_names(Level) { return kLevelNames; }

/// Parses "trace", "debug", "info", "warn"/"warning", "error", "off" (case-insensitive).
/// Throws ConfigError naming the bad value and the accepted ones.
Level parse_level(std::string_view text);

/// Name of a level, as parse_level accepts it.
std::string_view level_name(Level level);

struct LogOptions {
  Level level = Level::info;  ///< threshold on rank 0 (and on every rank when all_ranks)
  int rank = 0;               ///< this process's rank, printed as "[rank N]"
  bool all_ranks = false;     ///< log below `warn` on every rank, not only rank 0
  std::string file;           ///< also append to this file when non-empty
};

/// (Re)configures the process-wide logger. The environment variable ZERODIFF_LOG_LEVEL, when set,
/// overrides `options.level` (throws ConfigError when it is not a level name). Thread-safe.
void init(const LogOptions& options);

/// The effective threshold of this process (after the rank rule).
Level threshold();

/// True when a message at `level` would be written.
bool enabled(Level level);

/// Writes one message at `level` (no-op when disabled). Thread-safe.
void write(Level level, std::string_view message);

/// Captures everything logged while alive (any level at or above the threshold) into a string, in
/// addition to the normal sinks. For tests that assert warnings, e.g. a truncated prompt.
class Capture {
 public:
  Capture();
  ~Capture();
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;
  /// Messages captured so far, one per line, without timestamps: "[warn] text\n".
  std::string text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zerodiff::log

#define ZD_LOG_AT(lvl, ...)                                                        \
  do {                                                                             \
    if (::zerodiff::log::enabled(lvl)) {                                           \
      ::zerodiff::log::write(lvl, ::zerodiff::str(__VA_ARGS__));                   \
    }                                                                              \
  } while (0)
#define ZD_LOG_TRACE(...) ZD_LOG_AT(::zerodiff::log::Level::trace, __VA_ARGS__)
#define ZD_LOG_DEBUG(...) ZD_LOG_AT(::zerodiff::log::Level::debug, __VA_ARGS__)
#define ZD_LOG_INFO(...) ZD_LOG_AT(::zerodiff::log::Level::info, __VA_ARGS__)
#define ZD_LOG_WARN(...) ZD_LOG_AT(::zerodiff::log::Level::warn, __VA_ARGS__)
#define ZD_LOG_ERROR(...) ZD_LOG_AT(::zerodiff::log::Level::error, __VA_ARGS__)
