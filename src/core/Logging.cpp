// spdlog backend of zerodiff/core/Logging.h. This translation unit must not include LibTorch
// headers (their bundled fmt differs from the fmt Debian's spdlog links); CMake compiles it in the
// torch-free object library zerodiff_logging.
#include "zerodiff/core/Logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <sstream>

namespace zerodiff::log {
namespace {

spdlog::level::level_enum to_spd(Level level) {
  switch (level) {
    case Level::trace: return spdlog::level::trace;
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
    case Level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

struct State {
  std::mutex mutex;
  std::shared_ptr<spdlog::logger> logger;
  std::atomic<int> threshold{static_cast<int>(Level::info)};
  int rank = 0;
};

State& state() {
  static State s;
  return s;
}

std::shared_ptr<spdlog::logger> make_logger(const LogOptions& options) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!options.file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file, false));
  }
  auto logger = std::make_shared<spdlog::logger>("zerodiff", sinks.begin(), sinks.end());
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(options.rank) + "] [%l] %v");
  logger->set_level(spdlog::level::trace);  // filtering happens in enabled()
  logger->flush_on(spdlog::level::warn);
  return logger;
}

// Lazily configured default: rank 0, level info (or ZERODIFF_LOG_LEVEL).
void ensure_init() {
  if (!state().logger) init(LogOptions{});
}

}  // namespace

Level parse_level(std::string_view text) {
  std::string s(text);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (auto level = lookup_enum<Level>(s)) return *level;
  std::string expected = enum_list<Level>();
  expected.replace(expected.rfind(", "), 2, " or ");
  throw ConfigError(str("unknown log level '", text, "' (expected ", expected, ")"));
}

std::string_view level_name(Level level) { return name_of(level); }

void init(const LogOptions& options) {
  Level level = options.level;
  if (const char* env = std::getenv("ZERODIFF_LOG_LEVEL"); env && *env) {
    try {
      level = parse_level(env);
    } catch (const ConfigError& e) {
      throw ConfigError(str("ZERODIFF_LOG_LEVEL: ", e.what()));
    }
  }
  if (options.rank != 0 && !options.all_ranks) level = std::max(level, Level::warn);
  auto logger = make_logger(options);
  std::lock_guard<std::mutex> lock(state().mutex);
  state().logger = std::move(logger);
  state().rank = options.rank;
  state().threshold = static_cast<int>(level);
}

Level threshold() {
  ensure_init();
  return static_cast<Level>(state().threshold.load());
}

bool enabled(Level level) {
  return level != Level::off && static_cast<int>(level) >= static_cast<int>(threshold());
}

void write(Level level, std::string_view message) {
  if (!enabled(level)) return;
  std::shared_ptr<spdlog::logger> logger;
  {
    std::lock_guard<std::mutex> lock(state().mutex);
    logger = state().logger;
  }
  logger->log(to_spd(level), "{}", std::string(message));
}

struct Capture::Impl {
  std::ostringstream stream;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink;
};

Capture::Capture() : impl_(std::make_unique<Impl>()) {
  ensure_init();
  impl_->sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(impl_->stream, true);
  impl_->sink->set_pattern("[%l] %v");
  std::lock_guard<std::mutex> lock(state().mutex);
  state().logger->sinks().push_back(impl_->sink);
}

Capture::~Capture() {
  std::lock_guard<std::mutex> lock(state().mutex);
  auto& sinks = state().logger->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), impl_->sink), sinks.end());
}

std::string Capture::text() const {
  impl_->sink->flush();
  return impl_->stream.str();
}

}  // namespace zerodiff::log
