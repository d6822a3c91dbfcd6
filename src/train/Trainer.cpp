// The training loop. Reference for shape and semantics: PyTorch Lightning's Trainer (fit loop, gradient
// accumulation, checkpoint/resume) and diffusers' train_text_to_image.py (AdamW, get_scheduler, EMAModel,
// clip_grad_norm_). Exact resume: the checkpoint holds every parameter and buffer, AdamW's per-parameter
// state, the EMA shadow, the run's generator state and the loader position; the LR is a function of the step.
#include "zerodiff/train/Trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#if ZERODIFF_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <set>
#include <sstream>

#include "zerodiff/core/Error.h"
#include "zerodiff/core/Logging.h"
#include "zerodiff/io/AtomicFile.h"
#include "zerodiff/io/Checkpoint.h"
#include "zerodiff/io/Diffusers.h"
#include "zerodiff/io/TensorBoardWriter.h"
#include "zerodiff/models/Txt2ImgPipeline.h"
#include "zerodiff/nn/Autocast.h"
#include "zerodiff/optim/GradScaler.h"
#include "zerodiff/optim/LRSchedule.h"
#include "zerodiff/train/EMA.h"

namespace fs = std::filesystem;

namespace zerodiff::train {

// ------------------------------------------------------------------ TrainingModule defaults

std::vector<std::pair<std::string, at::Tensor>> TrainingModule::trainable_parameters() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<const void*> seen;  // a tied (shared) tensor is listed once, under its first name
  for (auto& p : model().named_parameters(true)) {
    if (p.value().requires_grad() && seen.insert(p.value().unsafeGetTensorImpl()).second) out.emplace_back(p.key(), p.value());
  }
  return out;
}

void TrainingModule::export_to(const std::string& dir) {
  fs::create_directories(dir);
  io::save_safetensors((fs::path(dir) / "model.safetensors").string(), io::state_dict(model()));
}

// ------------------------------------------------------------------ helpers

namespace {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  std::ostringstream os;
  if (s >= 3600) os << s / 3600 << "h";
  os << std::setw(s >= 3600 ? 2 : 1) << std::setfill('0') << (s % 3600) / 60 << "m" << std::setw(2) << s % 60 << "s";
  return os.str();
}

// Resident set size of this process in MiB (/proc/self/statm), 0 when unavailable.
double rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return static_cast<double>(pages_resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

}  // namespace

uint64_t validation_seed(int64_t seed) { return static_cast<uint64_t>(seed) ^ 0x76616c5f6c6f7373ull; }  // "val_loss"

// ------------------------------------------------------------------ Trainer

Trainer::Trainer(TrainerConfig config, std::shared_ptr<dist::ProcessGroup> group)
    : config_(std::move(config)), group_(std::move(group)) {
  // implementation auto: HybridAdam wherever it applies (one fused, multi-threaded pass per tensor instead of
  // torch::optim::AdamW's dozen ATen ops: 0.28 vs 2.3 Gparam/s on the CPU box, docs/performance.md); torch under
  // bf16-true, which has no float32 master weights for HybridAdam to update.
  if (config_.optimizer.implementation == "auto") {
    optimizer_auto_ = true;
    config_.optimizer.implementation = config_.precision == "bf16-true" ? "torch" : "hybrid_adam";
  }
  if (config_.precision == "bf16-true" && config_.optimizer.implementation == "hybrid_adam") {
    throw ConfigError(
        "trainer.optimizer.implementation hybrid_adam updates float32 master weights; trainer.precision bf16-true "
        "has none (bfloat16 weights and AdamW states): use implementation torch, or precision bf16-mixed");
  }
  if (group_) {
    env_.rank = group_->rank();
    env_.world_size = group_->size();
  } else {
    env_ = dist::LaunchEnv::from_environment();
  }
  if (config_.strategy == "single" && env_.world_size > 1) {
    throw Error(zerodiff::str("trainer.strategy is single but this run has ", env_.world_size, " processes (", env_.source,
                              "); use trainer.strategy=ddp, zero1, zero2 or zero3"));
  }
  const bool cuda = torch::cuda::is_available();
  // One device per process: LOCAL_RANK modulo the visible devices (with per-task GPU binding each task sees one).
  const int local = group_ || !cuda ? 0 : env_.local_rank % std::max<int>(1, static_cast<int>(torch::cuda::device_count()));
  if (config_.accelerator == "cuda") {
    ZD_CHECK(cuda, "trainer.accelerator is cuda but no CUDA device is available");
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local));
  } else if (config_.accelerator == "auto" && cuda) {
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local));
  }
#if ZERODIFF_WITH_CUDA
  if (device_.is_cuda()) c10::cuda::set_device(device_.index());  // NCCL and default allocations use it
#endif
}

dist::ProcessGroup& Trainer::process_group() {
  if (!group_) {
    dist::ProcessGroupOptions options;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(config_.dist_timeout_s * 1000.0));
    group_ = dist::ProcessGroup::create(env_, device_, options);
    if (group_->size() > 1) {
      ZD_LOG_INFO("process group: ", group_->backend_name(), ", ", group_->size(), " processes (", env_.source,
                  "), this is rank ", group_->rank());
    }
  }
  return *group_;
}

FitResult Trainer::fit(TrainingModule& module, data::DataLoader& loader, const std::string& resume,
                       int64_t stop_at_step) {
  return fit(module, loader, nullptr, resume, stop_at_step);
}

FitResult Trainer::fit(TrainingModule& module, data::DataLoader& loader, data::DataLoader* validation,
                       const std::string& resume, int64_t stop_at_step) {
  const TrainerConfig& c = config_;
  const fs::path out_dir(c.output_dir);
  io::CheckpointManager checkpoints((out_dir / "checkpoints").string(), c.keep_last);

  const int rank = env_.rank, world = env_.world_size;
  const bool is_rank0 = rank == 0;
  ZD_CHECK(loader.options().rank == rank && loader.options().world_size == world, "the data loader is set up for rank ",
           loader.options().rank, " of ", loader.options().world_size, " but this process is rank ", rank, " of ", world,
           " (make_run_data(config, trainer.rank(), trainer.world_size()))");
  dist::ProcessGroup& pg = process_group();
  // Work that can fail on one rank only (a missing shard file, a bad weights file on one node) is agreed on:
  // every rank stops with an error instead of the others waiting for it until the timeout.
  auto agreed = [&](const char* what, const std::function<void()>& fn) {
    std::exception_ptr failure;
    try {
      fn();
    } catch (...) {
      failure = std::current_exception();
    }
    if (!pg.all_true(failure == nullptr, "agree")) {
      if (failure) std::rethrow_exception(failure);
      throw Error(zerodiff::str("another rank failed while ", what, " (see its error); stopping"));
    }
  };

  // Resolve and read the checkpoint first: a bad --resume fails before anything is written.
  std::optional<io::Checkpoint> ckpt;
  agreed("reading the checkpoint", [&] {
    if (resume == "latest") {
      if (auto latest = checkpoints.latest()) ckpt = io::CheckpointManager::load(*latest, rank, world);
    } else if (!resume.empty()) {
      ckpt = io::CheckpointManager::load(resume, rank, world);
    }
    if (resume.empty()) {
      if (auto existing = checkpoints.latest()) {
        throw Error(zerodiff::str(c.output_dir, " already holds checkpoints of an earlier run (newest: ", *existing,
                                  "); resume it with --resume latest, or choose another trainer.output_dir"));
      }
    }
  });

  torch::manual_seed(c.seed);
  agreed("building the model", [&] { module.configure_model(device_); });
  std::vector<ParameterGroup> groups = module.parameter_groups();
  if (c.precision == "bf16-true") {
    // Lightning's bf16-true: the trained weights themselves are bfloat16 (no fp32 master), so are their gradients
    // and AdamW states. Frozen parts keep their dtype; autocast to bfloat16 joins the two.
    torch::NoGradGuard no_grad;
    int64_t cast = 0;
    for (auto& g : groups) {
      for (auto& [name, p] : g.params) {
        if (p.scalar_type() == at::kBFloat16) continue;
        at::Tensor t = p;
        t.set_data(p.detach().to(at::kBFloat16));
        ++cast;
      }
    }
    ZD_LOG_INFO("precision bf16-true: ", cast, " trained tensors in bfloat16 (weights, gradients and AdamW states)");
  }
  groups = module.parameter_groups();
  std::vector<parallel::ParamGroupSpec> specs;
  std::vector<std::optional<double>> group_peak_lr;  // none: trainer.optimizer.lr
  for (const auto& g : groups) {
    ZD_CHECK(!g.lr || *g.lr > 0, "parameter group '", g.name, "': learning rate must be > 0, got ", g.lr.value_or(0));
    const double peak = g.lr.value_or(c.optimizer.lr);
    specs.push_back(parallel::ParamGroupSpec{g.name, g.params, peak});
    group_peak_lr.push_back(g.lr);
    if (groups.size() > 1) ZD_LOG_INFO("parameter group '", g.name, "': ", g.params.size(), " tensors, peak lr ", peak);
  }
  {
    parallel::StrategyOptions options;
    options.bucket_numel = std::max<int64_t>(1, static_cast<int64_t>(c.bucket_size_mb * 1024 * 1024 / 4));
    options.chunk_numel = static_cast<int64_t>(c.zero3_chunk_size_mb * 1024 * 1024 / 4);
    options.keep_gathered_numel = static_cast<int64_t>(c.zero3_keep_gathered_below_mb * 1024 * 1024 / 4);
    // auto: HybridAdam updates float32 parameters only; a module training other dtypes gets torch's AdamW.
    bool all_float32 = true;
    for (const auto& g : groups)
      for (const auto& np : g.params) all_float32 = all_float32 && np.second.scalar_type() == at::kFloat;
    options.hybrid_adam = c.optimizer.implementation == "hybrid_adam" &&
                          (all_float32 || !optimizer_auto_ || c.precision == "bf16-true");
    options.master_dtype = c.precision == "bf16-true" ? at::kBFloat16 : at::kFloat;
    options.placement.policy =
        parse_enum<memory::PlacementPolicyKind>(c.gemini.placement_policy, "trainer.gemini.placement_policy");
    options.placement.device_budget_bytes = static_cast<int64_t>(c.gemini.device_budget_mb * 1024 * 1024);
    options.placement.offload_optim_frac = c.gemini.offload_optim_frac;
    options.placement.offload_param_frac = c.gemini.offload_param_frac;
    options.placement.disk = !c.gemini.offload_dir.empty();
    options.offload_dir = c.gemini.offload_dir;
    options.ema = c.ema.enabled;  // zero3 / gemini keep it sharded like their master weights; others ignore it
    strategy_ =
        parallel::make_strategy(parse_enum<parallel::StrategyKind>(c.strategy, "trainer.strategy"), group_, options);
  }
  parallel::Strategy& strategy = *strategy_;
  // zero3 gathers parameters unit by unit: the module's units (it calls the hooks itself), or the whole model
  // as one unit that the Trainer brackets around each step.
  std::vector<parallel::UnitSpec> units = module.sharding_units();
  const bool whole_model_unit = units.empty();
  if (whole_model_unit) {
    parallel::UnitSpec all{"model", {}};
    for (auto& p : module.model().named_parameters(true)) all.params.emplace_back(p.key(), p.value());
    units.push_back(std::move(all));
  }
  strategy.set_units(std::move(units));
  {
    std::vector<at::Tensor> replicated;  // rank 0's parameters and buffers become everyone's
    for (auto& p : module.model().parameters(true)) replicated.push_back(p);
    for (auto& b : module.model().buffers(true)) replicated.push_back(b);
    strategy.setup(specs, replicated,
                   parallel::AdamWSettings{c.optimizer.betas[0], c.optimizer.betas[1], c.optimizer.eps,
                                           c.optimizer.weight_decay});
  }
  parallel::UnitHooks* bracket = whole_model_unit ? strategy.unit_hooks() : nullptr;
  struct HooksGuard {  // the module never keeps hooks that die with this fit's strategy
    TrainingModule& m;
    ~HooksGuard() { m.set_unit_hooks(nullptr); }
  } hooks_guard{module};
  if (!whole_model_unit) module.set_unit_hooks(strategy.unit_hooks());
  const bool sharded_params = !strategy.replicated_parameters();
  // With zero3, whole parameters exist only between gather_full_parameters and release_full_parameters.
  auto with_full_parameters = [&](bool write_back, const std::function<void()>& fn) {
    if (!sharded_params) return fn();
    strategy.gather_full_parameters();
    fn();
    strategy.release_full_parameters(write_back);
  };
  if (world > 1) {
    ZD_LOG_INFO("strategy ", strategy.name(), " on ", world, " processes; global batch ", loader.options().batch_size,
                " x ", world, " x ", c.gradient_accumulation_steps);
  }
  optim::LRSchedule schedule{optim::parse_lr_schedule(c.lr_schedule.type), c.optimizer.lr, c.lr_schedule.warmup_steps,
                             c.max_steps, c.lr_schedule.min_lr_ratio};
  // EMA of the trained weights (diffusers' EMAModel): train::EMA over whole parameters, or under zero3 / gemini
  // the strategy's sharded EMA (an fp32 shard beside each master shard, no gather per step) fed the same decay
  // schedule. Both checkpoint the same "ema" file: whole fp32 tensors by parameter name.
  const EMAOptions ema_options{c.ema.decay,     c.ema.min_decay, c.ema.update_after_step,
                               c.ema.use_warmup, c.ema.inv_gamma, c.ema.power};
  std::optional<EMA> ema;
  parallel::ShardedEma* const sharded_ema = c.ema.enabled ? strategy.sharded_ema() : nullptr;
  if (c.ema.enabled) check_ema_options(ema_options);
  // sharded: the names train::EMA would use (trainable parameters, a tied tensor under each of its names)
  std::vector<std::pair<std::string, at::Tensor>> ema_params;
  if (sharded_ema) {
    std::set<const void*> chunked;
    for (const auto& p : sharded_ema->params()) chunked.insert(p.unsafeGetTensorImpl());
    for (const auto& p : module.model().named_parameters(true)) {
      if (!p.value().requires_grad()) continue;
      if (!chunked.count(p.value().unsafeGetTensorImpl())) {
        throw NotImplementedError(zerodiff::str(
            "trainer.ema with strategy ", c.strategy, ": parameter '", p.key(),
            "' requires a gradient but is in none of the module's parameter groups, so it is not sharded; the sharded "
            "EMA covers the trained parameters only (set requires_grad false on it, or add it to a group)"));
      }
      ema_params.emplace_back(p.key(), p.value());
    }
  } else if (c.ema.enabled) {
    ema.emplace(module.model(), ema_options);
  }
  // The "ema" checkpoint file of the sharded EMA (rank 0's; collective: every rank calls it).
  auto gather_sharded_ema = [&] {
    std::map<const void*, at::Tensor> whole;
    for (auto& [p, t] : sharded_ema->gather()) whole.emplace(p.unsafeGetTensorImpl(), std::move(t));
    io::TensorMap out;
    if (!is_rank0) return out;
    for (const auto& [name, p] : ema_params) out[name] = whole.at(p.unsafeGetTensorImpl());
    return out;
  };
  const at::ScalarType compute_dtype =
      c.precision == "16-mixed"                                   ? at::kHalf
      : c.precision == "bf16-mixed" || c.precision == "bf16-true" ? at::kBFloat16
                                                                   : at::kFloat;
  std::optional<optim::GradScaler> scaler;
  if (c.precision == "16-mixed") {
    scaler.emplace(optim::GradScalerOptions{c.grad_scaler.init_scale, c.grad_scaler.growth_factor,
                                            c.grad_scaler.backoff_factor, c.grad_scaler.growth_interval});
  }
  StepContext ctx;
  ctx.device = device_;
  // Rank 0 draws what a single-process run draws; other ranks draw their own streams (seeded from seed and rank).
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(
      rank == 0 ? static_cast<uint64_t>(c.seed) : static_cast<uint64_t>(c.seed) * 1000003ull + static_cast<uint64_t>(rank));
  int64_t step = 0;

  if (ckpt) {
    const std::string& where = ckpt->path;
    auto need = [&](const char* name) -> const io::TensorMap& {
      auto it = ckpt->tensors.find(name);
      if (it == ckpt->tensors.end()) throw IoError(zerodiff::str(where, ": no ", name, ".safetensors"));
      return it->second;
    };
    with_full_parameters(/*write_back=*/true, [&] {
      agreed("loading the checkpoint's model", [&] {
        io::load_state_dict(module.model(), need("model"), /*strict=*/true, where + "/model.safetensors");
      });
    });
    // Each rank restores its own files (optimizer shard, generators): agreed, so one bad file stops every rank.
    agreed("restoring the checkpoint", [&] {
      strategy.load_optimizer_state(need("optimizer"), where + "/optimizer" +
                                                           (strategy.sharded() && world > 1 ? zerodiff::str(".rank-", rank, "-of-", world) : "") +
                                                           ".safetensors");
      if (ema) ema->load(need("ema"));
      if (sharded_ema) {
        const io::TensorMap& saved = need("ema");
        std::vector<std::pair<at::Tensor, at::Tensor>> whole;
        for (const auto& [name, p] : ema_params) {
          auto it = saved.find(name);
          if (it == saved.end()) {
            throw IoError(zerodiff::str(where, "/ema.safetensors: no EMA weight for parameter '", name, "'"));
          }
          whole.emplace_back(p, it->second);
        }
        sharded_ema->load(whole, where + "/ema.safetensors");
      }
      const auto& rng = need("rng");
      if (!rng.count("generator") || !rng.count("torch_default")) {
        throw IoError(zerodiff::str(where, "/rng.safetensors: missing generator states"));
      }
      ctx.generator.set_state(rng.at("generator"));
      at::Generator default_gen = at::detail::getDefaultCPUGenerator();
      default_gen.set_state(rng.at("torch_default"));
      if (ckpt->tensors.count("module")) module.load_extra_state(ckpt->tensors.at("module"));
      if (scaler) {
        if (ckpt->tensors.count("scaler")) {
          const auto& saved = ckpt->tensors.at("scaler");
          scaler->load_state(std::map<std::string, at::Tensor>(saved.begin(), saved.end()));
        } else {
          ZD_LOG_WARN(where, ": no loss-scaler state (saved with another precision); starting at scale ",
                      scaler->get_scale());
        }
      }
      if (!ckpt->state.contains("loader")) throw IoError(zerodiff::str(where, ": trainer_state.json has no 'loader'"));
      loader.load_state(data::LoaderState::from_json(ckpt->state["loader"]));
    });
    step = ckpt->step;
    ZD_LOG_INFO("resumed from ", where, " at step ", step);
  }
  const int64_t resumed_step = step;
  const std::string resumed_path = ckpt ? ckpt->path : std::string();
  ckpt.reset();  // everything is copied; release the mapped checkpoint files

  if (is_rank0) fs::create_directories(out_dir);
  // Logs, metrics, TensorBoard, samples and the export are rank 0's; every rank trains and checkpoints.
  // metrics.jsonl continues exactly: a fresh run starts it anew; a resume keeps the lines up to its step.
  const fs::path metrics_path = out_dir / "metrics.jsonl";
  if (is_rank0) {
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
  }
  std::ofstream metrics;
  if (is_rank0) metrics.open(metrics_path, std::ios::app);
  // TensorBoard continues like metrics.jsonl: a fresh run starts the folder anew; a resume writes a new file
  // that begins with SessionLog START at the resumed step, so TensorBoard drops the older files' later points.
  std::optional<io::TensorBoardWriter> tensorboard;
  if (c.tensorboard && is_rank0) {
    const fs::path tb_dir = out_dir / "tensorboard";
    if (resumed_step == 0) {
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator(tb_dir, ec)) {
        if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) fs::remove(entry.path(), ec);
      }
    }
    tensorboard.emplace(tb_dir.string());
    if (resumed_step > 0) tensorboard->add_session_start(resumed_step + 1);
  }
  const bool tty = ::isatty(STDERR_FILENO) && log::enabled(log::Level::info);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t start_step = step;
  double last_loss = 0;
  int64_t images_seen = 0;
  std::string last_ckpt = resumed_path;
  int64_t last_saved_step = -1;

  auto next_batch = [&]() {
    for (int tries = 0; tries < 2; ++tries) {
      if (auto b = loader.next()) return std::move(*b);
    }
    throw Error("the data loader yields no batches");
  };
  auto save_checkpoint = [&]() {
    // Shared files come from rank 0 (every rank holds the same whole model); with several processes each rank
    // adds its generator states and, for zero1/zero2, its optimizer shard.
    std::map<std::string, io::TensorMap> files, rank_files;
    auto& per_rank = world > 1 ? rank_files : files;
    with_full_parameters(false, [&] {
      if (!is_rank0) return;
      io::TensorMap model;
      // zero3: copied to host memory while gathered (a device copy would double the model on rank 0's device).
      for (auto& [k, v] : io::state_dict(module.model())) {
        model[k] = sharded_params ? v.detach().to(at::TensorOptions().device(at::kCPU), false, /*copy=*/true) : v;
      }
      files["model"] = std::move(model);
    });
    // (Only rank 0's shared files are written: other ranks do not copy those states to host memory.)
    if (strategy.sharded()) {
      per_rank["optimizer"] = strategy.optimizer_state();
    } else if (is_rank0) {
      files["optimizer"] = strategy.optimizer_state();
    }
    if (ema && is_rank0) files["ema"] = io::TensorMap(ema->shadow().begin(), ema->shadow().end());
    if (sharded_ema) {  // gathered chunk by chunk into whole tensors: the same file as train::EMA writes
      io::TensorMap gathered = gather_sharded_ema();
      if (is_rank0) files["ema"] = std::move(gathered);
    }
    per_rank["rng"] = {{"generator", ctx.generator.get_state()},
                       {"torch_default", at::detail::getDefaultCPUGenerator().get_state()}};
    if (is_rank0) {
      if (auto extra = module.extra_state(); !extra.empty()) files["module"] = io::TensorMap(extra.begin(), extra.end());
    }
    if (scaler && is_rank0) {
      const auto st = scaler->state();
      files["scaler"] = io::TensorMap(st.begin(), st.end());
    }
    nlohmann::json state = {{"loader", loader.state().to_json()}, {"seed", c.seed}};
    io::RankSync sync{rank, world, [&](bool ok) { return pg.all_true(ok, "checkpoint"); }};
    last_ckpt = checkpoints.save(step, files, state, rank_files, sync);
    last_saved_step = step;
    ZD_LOG_INFO("checkpoint ", last_ckpt);
  };
  auto write_samples = [&](const std::string& name) {
    if (c.sample_prompts.empty()) return;
    // Sampling needs the whole model: rank 0 alone when every rank holds it, all ranks together under zero3.
    if (!is_rank0 && !sharded_params) return;
    std::optional<at::Tensor> images;
    with_full_parameters(false, [&] {
      if (is_rank0) images = module.sample(c.sample_prompts, c.sample_seed);  // whole model held: rank 0 alone
    });
    if (!images || !is_rank0) return;
    const std::string path = (out_dir / "samples" / name).string();
    ZD_CHECK(images->dim() == 4 && images->size(1) == 3, "sample(): expected images [N, 3, H, W], got ", images->sizes());
    const at::Tensor grid = models::make_image_grid(images->detach().to(torch::kCPU, torch::kFloat), 4);
    const std::string png = models::encode_png(grid);
    fs::create_directories(out_dir / "samples");
    io::write_file_atomic(path, png);
    if (tensorboard) tensorboard->add_image_png("samples", png, grid.size(1), grid.size(2), 3, step);
    ZD_LOG_INFO("sample grid ", path);
  };
  std::map<std::string, double> last_validation;
  bool validation_supported = true;
  auto validate = [&]() {
    if (!validation || !validation_supported) return;
    torch::NoGradGuard no_grad;
    StepContext vctx;
    vctx.device = device_;
    vctx.global_step = step;
    // Its own generator, seeded the same way each time: comparable figures, training RNG untouched.
    vctx.generator = at::make_generator<at::CPUGeneratorImpl>(validation_seed(c.seed));
    const int64_t batches = c.val_batches > 0 ? std::min(c.val_batches, validation->batches_per_epoch())
                                              : validation->batches_per_epoch();
    std::map<std::string, double> sums;
    double samples = 0;
    const auto tv = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < batches; ++b) {
      const data::Batch batch = validation->build_batch(/*epoch=*/0, b);
      std::optional<StepOutput> out;
      {
        nn::AutocastScope autocast(device_.type(), compute_dtype);
        if (bracket) bracket->pre_forward(0);
        out = module.validation_step(batch, vctx);
        if (bracket) bracket->post_forward(0, {});
      }
      if (!out) {
        ZD_LOG_WARN("the training module has no validation_step: validation skipped");
        validation_supported = false;
        return;
      }
      ZD_CHECK(out->loss.defined() && out->loss.numel() == 1, "validation_step must return a scalar loss");
      const double n = static_cast<double>(batch.size());
      sums["loss"] += out->loss.to(at::kDouble).item<double>() * n;
      for (auto& [k, v] : out->logs) sums[k] += v * n;
      samples += n;
    }
    if (world > 1) {
      // Each rank validated its shard of the validation set: sum over ranks (every rank has the same figures).
      std::vector<double> flat{samples};
      for (auto& [k, v] : sums) flat.push_back(v);
      at::Tensor t = at::tensor(flat, at::kDouble);
      pg.all_reduce(t, "metrics");
      samples = t[0].item<double>();
      size_t i = 1;
      for (auto& [k, v] : sums) v = t[static_cast<int64_t>(i++)].item<double>();
    }
    if (samples == 0) return;
    last_validation.clear();
    nlohmann::json line = {{"step", step}};
    std::ostringstream msg;
    msg << "validation at step " << step << ":";
    for (auto& [k, v] : sums) {
      last_validation[k] = v / samples;
      line["val_" + k] = v / samples;
      msg << " val_" << k << " " << std::setprecision(4) << v / samples;
      if (tensorboard) tensorboard->add_scalar("val/" + k, v / samples, step);
    }
    msg << " (" << static_cast<int64_t>(samples) << " samples, "
        << format_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - tv).count()) << ")";
    if (is_rank0) {
      metrics << line.dump() << "\n" << std::flush;
      if (tty) std::fprintf(stderr, "\n");
    }
    ZD_LOG_INFO(msg.str());
  };

  const int64_t last_step = stop_at_step > 0 ? std::min(stop_at_step, c.max_steps) : c.max_steps;
  int64_t consecutive_skips = 0;
  while (step < last_step) {
    const double lr = schedule.lr_at(step);  // of trainer.optimizer.lr; every group follows the same curve
    for (size_t gi = 0; gi < group_peak_lr.size(); ++gi) {
      const auto& peak = group_peak_lr[gi];
      strategy.set_lr(gi, peak ? lr / c.optimizer.lr * *peak : lr);
    }
    strategy.zero_grad();
    double loss_sum = 0;
    double bad_loss = 0;  // a non-finite loss of this step (without loss scaling), 0 if none
    std::map<std::string, double> logs;
    for (int64_t micro = 0; micro < c.gradient_accumulation_steps; ++micro) {
      data::Batch batch = next_batch();
      ctx.global_step = step;
      StepOutput out;
      {
        nn::AutocastScope autocast(device_.type(), compute_dtype);  // forward in the compute dtype (mixed modes)
        if (bracket) bracket->pre_forward(0);
        out = module.training_step(batch, ctx);
        if (bracket) bracket->post_forward(0, {out.loss});
      }
      ZD_CHECK(out.loss.defined() && out.loss.numel() == 1, "training_step must return a scalar loss");
      const at::Tensor loss = out.loss.to(at::kFloat) / static_cast<double>(c.gradient_accumulation_steps);
      const bool last_micro = micro + 1 == c.gradient_accumulation_steps;
      strategy.begin_backward(last_micro);
      (scaler ? scaler->scale(loss) : loss).backward();
      strategy.end_backward(last_micro);
      const double value = out.loss.to(at::kDouble).item<double>();
      // With loss scaling an overflow is expected now and then: the scaler skips that step. Otherwise stop
      // (after the step's micro-batches, on every rank at once).
      if (!scaler && !std::isfinite(value) && std::isfinite(bad_loss)) bad_loss = value;
      loss_sum += value;
      for (auto& [k, v] : out.logs) logs[k] += v / static_cast<double>(c.gradient_accumulation_steps);
      images_seen += batch.size();
    }
    if (pg.any_true(!std::isfinite(bad_loss), "loss_check")) {
      throw Error(zerodiff::str("non-finite loss ", std::isfinite(bad_loss) ? std::string("on another rank") : zerodiff::str(bad_loss),
                                " at step ", step, " (the last good checkpoint is kept; lower the learning rate or check the data)"));
    }
    // The overflow decision is agreed by all ranks: one rank's inf skips the step everywhere.
    const bool found_inf = scaler && pg.any_true(scaler->unscale(strategy.gradient_tensors()), "found_inf");
    const double max_norm = c.max_grad_norm > 0 ? c.max_grad_norm : std::numeric_limits<double>::infinity();
    double grad_norm = NAN;
    if (found_inf) {
      // torch.amp: the step is skipped (parameters, optimizer state and EMA untouched), the scale backs off.
      ZD_LOG_WARN("step ", step + 1, ": inf/NaN gradients at loss scale ", scaler->get_scale(),
                  "; step skipped, scale ", scaler->get_scale() * c.grad_scaler.backoff_factor);
    } else {
      grad_norm = strategy.clip_grad_norm(max_norm);
      ZD_CHECK(std::isfinite(grad_norm), "non-finite gradient norm at step ", step,
               " (the step is not applied; the last good checkpoint is kept; lower the learning rate or check the data)");
      // (the sharded EMA is updated inside step(), after AdamW, with the decay train::EMA would use after it)
      if (sharded_ema) sharded_ema->set_decay(ema_decay_at(ema_options, step + 1));
      strategy.step();
    }
    if (scaler) scaler->update(found_inf);
    consecutive_skips = found_inf ? consecutive_skips + 1 : 0;
    if (consecutive_skips >= c.grad_scaler.max_consecutive_skips) {
      throw Error(zerodiff::str(consecutive_skips, " steps in a row (up to step ", step + 1,
                                ") had inf/NaN gradients and were skipped; the loss scale is now ", scaler->get_scale(),
                                ". Stopping: check the data and the learning rate. The last good checkpoint is kept",
                                last_ckpt.empty() ? std::string(" (none was written yet)") : ": " + last_ckpt));
    }
    ++step;
    if (ema && !found_inf) ema->update(module.model(), step);
    if (world > 1) {
      // The logged loss and figures are means over all ranks' micro-batches.
      std::vector<double> flat{loss_sum};
      for (auto& [k, v] : logs) flat.push_back(v);
      at::Tensor t = at::tensor(flat, at::kDouble);
      pg.all_reduce(t, "metrics");
      t.div_(static_cast<double>(world));
      loss_sum = t[0].item<double>();
      size_t i = 1;
      for (auto& [k, v] : logs) v = t[static_cast<int64_t>(i++)].item<double>();
    }
    last_loss = loss_sum / static_cast<double>(c.gradient_accumulation_steps);

    if (step % c.log_every == 0 || step == c.max_steps) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double ips = elapsed > 0 ? static_cast<double>(images_seen * world) / elapsed : 0;  // all ranks
      const double sps = elapsed > 0 ? static_cast<double>(step - start_step) / elapsed : 0;
      const double eta = sps > 0 ? static_cast<double>(c.max_steps - step) / sps : NAN;
      nlohmann::json line = {{"step", step}, {"loss", last_loss}, {"lr", lr}, {"images_per_s", ips},
                             {"elapsed_s", elapsed}};
      if (std::isfinite(grad_norm)) line["grad_norm"] = grad_norm;  // a skipped step has none
      if (scaler) line["loss_scale"] = scaler->get_scale();
      for (auto& [k, v] : logs) line[k] = v;
      const double rss = rss_mib();
      line["rss_mib"] = rss;
      if (is_rank0) metrics << line.dump() << "\n" << std::flush;
      if (tensorboard) {
        tensorboard->add_scalar("train/loss", last_loss, step);
        tensorboard->add_scalar("train/lr", lr, step);
        if (std::isfinite(grad_norm)) tensorboard->add_scalar("train/grad_norm", grad_norm, step);
        if (scaler) tensorboard->add_scalar("train/loss_scale", scaler->get_scale(), step);
        tensorboard->add_scalar("train/images_per_s", ips, step);
        tensorboard->add_scalar("memory/rss_mib", rss, step);
        for (auto& [k, v] : logs) tensorboard->add_scalar("train/" + k, v, step);
      }
      std::ostringstream msg;
      msg << "step " << step << "/" << c.max_steps << " loss " << std::setprecision(4) << last_loss << " lr "
          << std::setprecision(3) << lr << " grad_norm " << std::setprecision(3) << grad_norm << " "
          << std::setprecision(3) << sps << " it/s " << std::setprecision(3) << ips << " img/s ETA "
          << format_duration(eta);
      if (tty && is_rank0) {
        const int width = 30;
        const int filled = static_cast<int>(width * step / c.max_steps);
        std::fprintf(stderr, "\r[%s%s] %s", std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                     msg.str().c_str());
        if (step == c.max_steps) std::fprintf(stderr, "\n");
        std::fflush(stderr);
      } else {
        ZD_LOG_INFO(msg.str());
      }
    }
    if (c.val_every > 0 && step % c.val_every == 0 && step < c.max_steps) validate();
    if (c.checkpoint_every > 0 && step % c.checkpoint_every == 0 && step < c.max_steps) save_checkpoint();
    if (c.sample_every > 0 && step % c.sample_every == 0 && step < c.max_steps) {
      write_samples(zerodiff::str("step-", step, ".png"));
    }
  }

  if (last_saved_step != step && step != resumed_step) save_checkpoint();
  FitResult result;
  result.steps = step;
  result.last_loss = last_loss;
  result.last_checkpoint = last_ckpt;
  result.validation = last_validation;
  if (step < c.max_steps) {  // stopped early: resume later
    if (sharded_params) strategy.gather_full_parameters();  // the module leaves fit with whole parameters
    return result;
  }
  result.export_dir = (out_dir / "final").string();
  // final/ is complete or absent (a re-run replaces it in one rename): a crash mid-export loses nothing.
  auto export_final = [&] {
    // Rank 0 writes the whole model (every rank holds it whole); the others wait for it to be complete.
    std::string error;
    with_full_parameters(false, [&] {
      if (!is_rank0) return;
      try {
        io::write_directory_atomic(result.export_dir, [&](const std::string& temp) { module.export_to(temp); });
      } catch (const std::exception& e) {
        if (world == 1) throw;
        error = e.what();
      }
    });
    if (!pg.all_true(error.empty(), "export")) {
      throw IoError(error.empty() ? zerodiff::str(result.export_dir, ": rank 0 failed to export") : error);
    }
  };
  if (ema) {
    // Export (and sample) with the EMA weights, then restore the raw ones.
    const io::TensorMap raw = [&] {
      io::TensorMap m;
      for (auto& [k, v] : io::state_dict(module.model())) m[k] = v.clone();
      return m;
    }();
    ema->copy_to(module.model());
    // The raw weights go back even when validation, sampling or export throws (then best effort, logged, so that
    // the first exception is the one that propagates); on success, below, with errors propagating.
    struct RestoreRaw {
      torch::nn::Module& model;
      const io::TensorMap& raw;
      bool armed = true;
      ~RestoreRaw() {
        if (!armed) return;
        try {
          io::load_state_dict(model, raw);
        } catch (const std::exception& e) {
          ZD_LOG_ERROR("could not put the trained weights back after the EMA export: ", e.what());
        }
      }
    } restore{module.model(), raw};
    validate();  // the end-of-run figures are those of the exported weights
    write_samples("final.png");
    export_final();
    restore.armed = false;
    io::load_state_dict(module.model(), raw);
  } else if (sharded_ema) {
    // The same with the sharded EMA: the parameter shards hold the EMA weights meanwhile (each rank its own part;
    // the units and the whole-model gathers of validation, sampling and export then see them), then the trained ones.
    sharded_ema->use_ema_weights(true);
    // Put the trained weights back even when validation, sampling or export throws (use_ema_weights is local to
    // each rank: no collective in the unwinding path; best effort there, logged); on success, below.
    struct RestoreTrained {
      parallel::ShardedEma& s;
      bool armed = true;
      ~RestoreTrained() {
        if (!armed) return;
        try {
          s.use_ema_weights(false);
        } catch (const std::exception& e) {
          ZD_LOG_ERROR("could not put the trained weights back after the EMA export: ", e.what());
        }
      }
    } restore{*sharded_ema};
    validate();
    write_samples("final.png");
    export_final();
    restore.armed = false;
    sharded_ema->use_ema_weights(false);
  } else {
    validate();
    write_samples("final.png");
    export_final();
  }
  ZD_LOG_INFO("exported to ", result.export_dir);
  result.validation = last_validation;
  // zero3: the module leaves fit with whole parameters (they keep the gathered storage after the strategy goes).
  if (sharded_params) strategy.gather_full_parameters();
  return result;
}

}  // namespace zerodiff::train
