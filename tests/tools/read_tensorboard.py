#!/usr/bin/env python3
"""Reads a TensorBoard log folder with TensorBoard's own reader and prints what it holds as JSON:

    {"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height, png_bytes_len], ...]}}

Used by the C++ test TensorBoard.EventFilesReadBackInTensorBoard (zerodiff writes the files itself).
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> int:
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {
        "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {t: [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in acc.Images(t)]
                   for t in tags["images"]},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
