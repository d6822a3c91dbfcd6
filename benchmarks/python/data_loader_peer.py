#!/usr/bin/env python3
"""Peer of bench_data_loader: the same loading work with Pillow + torchvision through torch's DataLoader.

    .venv/bin/python benchmarks/python/data_loader_peer.py --data out/bench/emoji-256 --resolution 256 \\
        --workers 2 --batch 16 --batches 60 --warmup 6

What diffusers' examples/text_to_image/train_text_to_image.py does per image, minus tokenisation (zerodiff's
DataLoader yields captions as strings too): PIL.Image.open(path).convert("RGB"), then
    transforms.Resize(resolution, interpolation=BICUBIC, antialias=True)   # no-op when already that size
    transforms.RandomCrop(resolution)        (CenterCrop with --center-crop)
    transforms.RandomHorizontalFlip()
    transforms.ToTensor()
    transforms.Normalize([0.5], [0.5])
and its collate_fn (torch.stack(...).to(memory_format=torch.contiguous_format).float(), captions as a list),
through torch.utils.data.DataLoader(shuffle=True, batch_size=B, num_workers=K) with the defaults the script
uses (prefetch_factor 2, no pinned memory, workers not persistent). The images are listed by the folder's
metadata.jsonl (file_name, text), the Hugging Face imagefolder layout, read here directly rather than through
`datasets` (whose Arrow caching would add work the C++ side does not do).

Each worker process runs torch with one thread (torch.set_num_threads(1), which torch's worker loop also
does), as each zerodiff worker thread runs ATen under c10::ParallelGuard.

Measurement, as in bench_data_loader.cpp: --warmup batches are consumed first (worker start-up, prefetch
fill), then the clock runs over --batches batches (or fewer: with --max-seconds S, timing stops after the first
batch that ends past S seconds); epoch ends are crossed as needed (a new iterator, hence
new worker processes, as in the training script) and counted.

Output: informational lines, then one machine-readable line (parsed by run_data_loader.sh):
    python loader: 256 px, 2 workers, batch 16: 1234.5 images/s (960 images in 0.778 s)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms


class ImageFolderPeer(torch.utils.data.Dataset):
    """<root>/metadata.jsonl lines {"file_name": ..., "text": ...}; returns (tensor, caption)."""

    def __init__(self, root: str, transform, caption_column: str = "text"):
        self.root = root
        self.transform = transform
        self.entries = []
        with open(os.path.join(root, "metadata.jsonl"), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    self.entries.append((row["file_name"], row[caption_column]))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        file_name, caption = self.entries[index]
        with Image.open(os.path.join(self.root, file_name)) as image:
            rgb = image.convert("RGB")
        return {"pixel_values": self.transform(rgb), "caption": caption}


def collate_fn(examples):
    # train_text_to_image.py's collate_fn (input_ids aside).
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    pixel_values = pixel_values.to(memory_format=torch.contiguous_format).float()
    return {"pixel_values": pixel_values, "captions": [example["caption"] for example in examples]}


def worker_init_fn(_worker_id: int) -> None:
    torch.set_num_threads(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="image folder with metadata.jsonl")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40, help="timed batches")
    parser.add_argument("--warmup", type=int, default=4, help="batches consumed before the clock starts")
    parser.add_argument("--prefetch", type=int, default=2, help="prefetch_factor (batches per worker)")
    parser.add_argument("--max-seconds", type=float, default=0,
                        help="stop timing after the batch that passes this many seconds (0: no cap)")
    parser.add_argument("--center-crop", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be >= 1 (the C++ side's 0 means 'in the calling thread')")

    torch.manual_seed(args.seed)
    transform = transforms.Compose([
        transforms.Resize(args.resolution, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
        transforms.CenterCrop(args.resolution) if args.center_crop else transforms.RandomCrop(args.resolution),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5]),
    ])
    dataset = ImageFolderPeer(args.data, transform)
    with Image.open(os.path.join(args.data, dataset.entries[0][0])) as first:
        width, height = first.size
    print(f"dataset: {args.data}, {len(dataset)} images, first {width}x{height} "
          f"({'no resize' if min(width, height) == args.resolution else 'resized'})")

    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, collate_fn=collate_fn,
                                         num_workers=args.workers, prefetch_factor=args.prefetch,
                                         worker_init_fn=worker_init_fn)
    epoch_ends = 0
    iterator = iter(loader)

    def next_batch():
        nonlocal iterator, epoch_ends
        while True:
            try:
                return next(iterator)
            except StopIteration:
                epoch_ends += 1
                iterator = iter(loader)

    for _ in range(args.warmup):
        next_batch()
    ends_before = epoch_ends
    images = 0
    t0 = time.perf_counter()
    for _ in range(args.batches):
        batch = next_batch()
        assert batch["pixel_values"].shape[-2:] == (args.resolution, args.resolution), batch["pixel_values"].shape
        images += batch["pixel_values"].shape[0]
        seconds = time.perf_counter() - t0
        if 0 < args.max_seconds <= seconds:
            break
    print(f"setup: {len(loader)} batches per epoch, {epoch_ends - ends_before} epoch end(s) crossed while timed, "
          f"1 torch thread per worker process, prefetch {args.prefetch} per worker; "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}")
    print(f"python loader: {args.resolution} px, {args.workers} worker{'' if args.workers == 1 else 's'}, "
          f"batch {args.batch}: {images / seconds:.1f} images/s ({images} images in {seconds:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
