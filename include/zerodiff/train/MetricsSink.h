// zerodiff/train/MetricsSink.h — where Trainer::fit reports: metrics.jsonl (one JSON object per logged step or
// validation), TensorBoard event files (scalars and sample grids) and the console (a progress bar on a terminal,
// plain log lines otherwise). Files are rank 0's; every rank may call, the others only log.
// A resumed run continues both files exactly: metrics.jsonl keeps the lines up to the resumed step (a line cut by
// the interruption is dropped); TensorBoard gets a new event file starting with SessionLog START at the resumed
// step, so TensorBoard drops the older files' later points. A fresh run starts both anew.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "zerodiff/io/TensorBoardWriter.h"

namespace zerodiff::train {

/// One logged training step. Losses and figures are means over the step's micro-batches and all ranks.
struct StepMetrics {
  int64_t step = 0;                      ///< optimizer steps done (1-based)
  int64_t max_steps = 0;                 ///< of the run (for the progress bar and the ETA)
  double loss = 0;
  double lr = 0;                         ///< of trainer.optimizer.lr's curve
  double grad_norm = 0;                  ///< global L2 norm before clipping; NaN for a skipped step (none logged)
  std::optional<double> loss_scale;      ///< 16-mixed: the GradScaler's scale after the step
  double images_per_s = 0;               ///< all ranks, since the run (or resume) started
  double steps_per_s = 0;                ///< since the run (or resume) started
  double elapsed_s = 0;
  double rss_mib = 0;                    ///< this process's resident memory
  std::map<std::string, double> logs;    ///< the module's extra figures (StepOutput::logs)
};

/// Where a fit reports its steps and validations (the file comment says what each output holds).
class MetricsSink {
 public:
  /// Opens output_dir/metrics.jsonl (and output_dir/tensorboard with `tensorboard`) on rank 0, continuing a run
  /// resumed at `resumed_step` (0 = fresh) as the file comment says. Throws IoError when a file cannot be written.
  MetricsSink(const std::string& output_dir, bool is_rank0, bool tensorboard, int64_t resumed_step);

  /// Appends the step's line to metrics.jsonl ("step", "loss", "lr", "images_per_s", "elapsed_s", "grad_norm"
  /// unless skipped, "loss_scale" when set, the module's figures, "rss_mib"), its TensorBoard scalars (train/…,
  /// memory/rss_mib), and the console line "step 20/100 loss 0.1234 lr 0.0001 grad_norm 0.5 3.2 it/s 12.8 img/s
  /// ETA 0m25s" (the bar on a terminal).
  void log_step(const StepMetrics& m);
  /// Appends a validation line ("step", "val_<name>" per figure) and val/<name> scalars, and logs
  /// "validation at step S: val_loss 0.1 … (N samples, 0m02s)".
  void log_validation(int64_t step, const std::map<std::string, double>& means, int64_t samples, double seconds);
  /// Adds a sample grid (PNG bytes, [height, width] pixels, RGB) to TensorBoard as "samples" at `step`.
  void add_sample_grid(const std::string& png, int64_t height, int64_t width, int64_t step);

 private:
  bool is_rank0_;
  bool tty_;
  std::ofstream metrics_;
  std::optional<io::TensorBoardWriter> tensorboard_;
};

/// "1h02m03s", "2m05s", "0m07s"; "?" for a negative or non-finite duration (seconds).
std::string format_duration(double seconds);

/// This process's resident set size in MiB (/proc/self/statm); 0 where unavailable.
double rss_mib();

}  // namespace zerodiff::train
