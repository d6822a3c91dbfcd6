#include "zerodiff/train/MetricsSink.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <system_error>

#include "zerodiff/core/Logging.h"
#include "zerodiff/io/AtomicFile.h"

namespace fs = std::filesystem;

namespace zerodiff::train {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  std::ostringstream os;
  if (s >= 3600) os << s / 3600 << "h";
  os << std::setw(s >= 3600 ? 2 : 1) << std::setfill('0') << (s % 3600) / 60 << "m" << std::setw(2) << s % 60 << "s";
  return os.str();
}

double rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return static_cast<double>(pages_resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

MetricsSink::MetricsSink(const std::string& output_dir, bool is_rank0, bool tensorboard, int64_t resumed_step)
    : is_rank0_(is_rank0), tty_(::isatty(STDERR_FILENO) && log::enabled(log::Level::info)) {
  if (!is_rank0) return;
  const fs::path out(output_dir);
  fs::create_directories(out);
  const fs::path metrics_path = out / "metrics.jsonl";
  std::string kept;
  if (resumed_step > 0 && fs::exists(metrics_path)) {
    std::ifstream in(metrics_path);
    std::string line;
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).value("step", int64_t{0}) <= resumed_step) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // a line cut by the interruption: dropped
      }
    }
  }
  io::write_file_atomic(metrics_path.string(), kept);
  metrics_.open(metrics_path, std::ios::app);
  if (!tensorboard) return;
  const fs::path tb_dir = out / "tensorboard";
  if (resumed_step == 0) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(tb_dir, ec)) {
      if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) fs::remove(entry.path(), ec);
    }
  }
  tensorboard_.emplace(tb_dir.string());
  if (resumed_step > 0) tensorboard_->add_session_start(resumed_step + 1);
}

void MetricsSink::log_step(const StepMetrics& m) {
  const bool skipped = !std::isfinite(m.grad_norm);
  if (is_rank0_) {
    nlohmann::json line = {{"step", m.step},
                           {"loss", m.loss},
                           {"lr", m.lr},
                           {"images_per_s", m.images_per_s},
                           {"elapsed_s", m.elapsed_s}};
    if (!skipped) line["grad_norm"] = m.grad_norm;
    if (m.loss_scale) line["loss_scale"] = *m.loss_scale;
    for (const auto& [k, v] : m.logs) line[k] = v;
    line["rss_mib"] = m.rss_mib;
    metrics_ << line.dump() << "\n" << std::flush;
  }
  if (tensorboard_) {
    tensorboard_->add_scalar("train/loss", m.loss, m.step);
    tensorboard_->add_scalar("train/lr", m.lr, m.step);
    if (!skipped) tensorboard_->add_scalar("train/grad_norm", m.grad_norm, m.step);
    if (m.loss_scale) tensorboard_->add_scalar("train/loss_scale", *m.loss_scale, m.step);
    tensorboard_->add_scalar("train/images_per_s", m.images_per_s, m.step);
    tensorboard_->add_scalar("memory/rss_mib", m.rss_mib, m.step);
    for (const auto& [k, v] : m.logs) tensorboard_->add_scalar("train/" + k, v, m.step);
  }
  const double eta = m.steps_per_s > 0 ? static_cast<double>(m.max_steps - m.step) / m.steps_per_s : NAN;
  std::ostringstream msg;
  msg << "step " << m.step << "/" << m.max_steps << " loss " << std::setprecision(4) << m.loss << " lr "
      << std::setprecision(3) << m.lr << " grad_norm " << std::setprecision(3) << m.grad_norm << " "
      << std::setprecision(3) << m.steps_per_s << " it/s " << std::setprecision(3) << m.images_per_s << " img/s ETA "
      << format_duration(eta);
  if (tty_ && is_rank0_) {
    const int width = 30;
    const int filled = static_cast<int>(width * m.step / m.max_steps);
    std::fprintf(stderr, "\r[%s%s] %s", std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 msg.str().c_str());
    if (m.step == m.max_steps) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  } else {
    ZD_LOG_INFO(msg.str());
  }
}

void MetricsSink::log_validation(int64_t step, const std::map<std::string, double>& means, int64_t samples,
                                 double seconds) {
  nlohmann::json line = {{"step", step}};
  std::ostringstream msg;
  msg << "validation at step " << step << ":";
  for (const auto& [k, v] : means) {
    line["val_" + k] = v;
    msg << " val_" << k << " " << std::setprecision(4) << v;
    if (tensorboard_) tensorboard_->add_scalar("val/" + k, v, step);
  }
  msg << " (" << samples << " samples, " << format_duration(seconds) << ")";
  if (is_rank0_) {
    metrics_ << line.dump() << "\n" << std::flush;
    if (tty_) std::fprintf(stderr, "\n");
  }
  ZD_LOG_INFO(msg.str());
}

void MetricsSink::add_sample_grid(const std::string& png, int64_t height, int64_t width, int64_t step) {
  if (tensorboard_) tensorboard_->add_image_png("samples", png, height, width, 3, step);
}

}  // namespace zerodiff::train
