#!/usr/bin/env python3
"""Peer of bench_train_step: the same Stable Diffusion training step with diffusers + torch, on the CPU.

    .venv/bin/python benchmarks/python/train_step_peer.py --model tiny --mode pre --batch 8 --steps 8

The step of diffusers' examples/text_to_image/train_text_to_image.py (its defaults: AdamW lr 1e-4, betas
(0.9, 0.999), eps 1e-8, weight decay 1e-2, max_grad_norm 1.0; float32), without accelerate (one process, nothing
to synchronise) and without the data loader (bench_train_step has none either):

    latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor       # --mode enc only
    encoder_hidden_states = text_encoder(tokenizer(captions, ...).input_ids)[0]        # --mode enc only
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, 1000, (bsz,))
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
    loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
    loss.backward(); clip_grad_norm_(unet.parameters(), 1.0); optimizer.step(); optimizer.zero_grad()

With --mode pre the latents [B, 4, h, w] and the text embeddings [B, 77, D] are drawn once before the loop (a
cached-latents run). The models are built from the same config.json files as the C++ side (random weights);
the VAE and the text encoder are frozen (requires_grad False, eval mode), the UNet trains. Attention: diffusers'
default processor (AttnProcessor2_0: F.scaled_dot_product_attention, on the CPU ATen's flash kernel).
--optimizer-impl chooses torch.optim.AdamW's implementation: default (what the script gets: the for-loop
kernel on CPU), foreach, or fused.

Output: one line in bench_train_step's format, parsed by benchmarks/run_train_step.sh:
    python train step: model=tiny (...) mode=pre batch=8 ...: 12.345 samples/s (median step 648.1 ms; steps ...)
    peak RSS 1234.5 MiB; last loss 1.0012
Peak RSS = ru_maxrss of this process (the interpreter, torch and diffusers' imports included).
--device cuda runs on the GPU (peak = also torch.cuda.max_memory_allocated); --precision bf16-mixed runs the UNet
forward and the loss under torch.autocast(bfloat16), as accelerate's mixed_precision="bf16" does (the VAE encode
in float32, weights and AdamW states float32), matching bench_train_step's options of the same names.
--profile FILE writes a Chrome trace of the timed steps (torch.profiler), for trace_summary.py.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "configs", "models")
# The captions of --mode enc, shared with the C++ side (one per line).
with open(os.path.join(ROOT, "benchmarks", "data", "captions.txt"), encoding="utf-8") as f:
    CAPTIONS = [line.rstrip("\n") for line in f if line.strip()]


def config(folder: str) -> dict:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny", "100m", "sd15"], default="tiny")
    ap.add_argument("--mode", choices=["pre", "enc"], default="pre")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--optimizer-impl", choices=["default", "foreach", "fused"], default="default")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16-mixed"], default="fp32")
    ap.add_argument("--unet")
    ap.add_argument("--vae")
    ap.add_argument("--text-encoder")
    ap.add_argument("--tokenizer")
    ap.add_argument("--profile", help="write a Chrome trace of the timed steps to this file")
    a = ap.parse_args()

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.model == "tiny":
        unet_dir, vae_dir, text_dir = (os.path.join(MODELS, "tiny", d) for d in ("unet_sd1", "vae", "text_vitl"))
    else:
        unet_dir = os.path.join(MODELS, "bench", "unet_100m") if a.model == "100m" else os.path.join(MODELS, "sd15", "unet")
        vae_dir, text_dir = os.path.join(MODELS, "sd15", "vae"), os.path.join(MODELS, "sd15", "text_encoder")
    unet_dir, vae_dir, text_dir = a.unet or unet_dir, a.vae or vae_dir, a.text_encoder or text_dir
    tokenizer_dir = a.tokenizer or os.path.join(MODELS, "demo", "tokenizer")

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config(unet_dir))
    unet.train()
    vae_config = config(vae_dir)
    text_config = CLIPTextConfig(**config(text_dir))
    image = a.latent * 2 ** (len(vae_config["block_out_channels"]) - 1)
    if a.mode == "enc":
        vae = AutoencoderKL.from_config(vae_config)
        text_encoder = CLIPTextModel(text_config)
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
        vae.requires_grad_(False)
        text_encoder.requires_grad_(False)
        vae.eval()
        text_encoder.eval()
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              num_train_timesteps=1000, clip_sample=False)
    kwargs = {}
    if a.optimizer_impl != "default":
        kwargs[a.optimizer_impl] = True
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, **kwargs)
    numel = sum(p.numel() for p in unet.parameters())
    device = torch.device(a.device)
    unet.to(device)
    if a.mode == "enc":
        vae.to(device)
        text_encoder.to(device)

    pre_latents = torch.randn(a.batch, unet.config.in_channels, a.latent, a.latent).to(device)
    pre_text = torch.randn(a.batch, text_config.max_position_embeddings, text_config.hidden_size).to(device)
    images = (torch.rand(a.batch, 3, image, image) * 2 - 1).to(device)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(a.batch)]

    def one_step() -> float:
        latents, text = pre_latents, pre_text
        if a.mode == "enc":
            with torch.no_grad():
                ids = tokenizer(captions, max_length=tokenizer.model_max_length, padding="max_length",
                                truncation=True, return_tensors="pt").input_ids.to(device)
                text = text_encoder(ids, return_dict=False)[0]
                latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=device).long()
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.precision == "bf16-mixed"):
            pred = unet(noisy, timesteps, text, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    for _ in range(a.warmup):
        one_step()
    times = []
    loss = 0.0
    prof = None
    if a.profile:
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        prof.__enter__()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = one_step()
        times.append((time.perf_counter() - t0) * 1000.0)
    if prof is not None:
        prof.__exit__(None, None, None)
        prof.export_chrome_trace(a.profile)
    median = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    gpu_peak = ""
    if device.type == "cuda":
        gpu_peak = f" peak CUDA allocated {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB;"
    print(f"python train step: model={a.model} ({numel / 1e6:.1f} M UNet parameters) mode={a.mode} batch={a.batch} "
          f"latent={a.latent}x{a.latent} image={image}x{image} threads={torch.get_num_threads()} attention=sdpa "
          f"optimizer=torch.optim.AdamW({a.optimizer_impl}) device={a.device} precision={a.precision}: "
          f"{a.batch / (median / 1000.0):.3f} samples/s "
          f"(median step {median:.1f} ms; steps {', '.join(str(round(t)) for t in times)} ms) "
          f"peak RSS {peak:.1f} MiB;{gpu_peak} last loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
