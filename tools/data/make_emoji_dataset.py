#!/usr/bin/env python3
"""Build an image-folder dataset (PNG images + metadata.jsonl) from the Noto Color Emoji font.

Every single-code-point emoji in the font becomes one image: the colour bitmap glyph, centred on a white
square with a small margin, resized to --resolution with Lanczos filtering. Its caption is the Unicode
character name, lower-cased ("red apple", "grinning face"). The output is deterministic: code points in
ascending order, PNGs without timestamps, the same files on every run with the same arguments.

    .venv/bin/python tools/data/make_emoji_dataset.py --out data/emoji-64 --resolution 64 [--limit 500]
    .venv/bin/python tools/data/make_emoji_dataset.py --out data/emoji-animals-32 --resolution 32 --subset animals

Layout written (Hugging Face `imagefolder`, read by zerodiff's ImageFolderDataset):
    <out>/u1f34e.png ...
    <out>/metadata.jsonl     {"file_name": "u1f34e.png", "text": "red apple"}

Requires Debian's fonts-noto-color-emoji (installed by tools/setup.sh) and Pillow (in the venv).
Noto Color Emoji is a CBDT bitmap font whose only strike is 109 px: Pillow renders it with
ImageFont.truetype(path, 109) and draw.text(..., embedded_color=True); we then scale the bitmap.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import unicodedata

from PIL import Image, ImageDraw, ImageFont

DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
STRIKE_SIZE = 109  # the font's only bitmap size

# Code points in the font that are not stand-alone pictures: keycap bases, joiners, selectors, regional
# indicators (flags are pairs), skin-tone modifiers (used after another emoji), tag characters.
EXCLUDED_RANGES = [
    (0x0000, 0x007F),  # ASCII: digits, '#', '*' (keycap bases), space
    (0x200D, 0x200D),  # zero width joiner
    (0x20E3, 0x20E3),  # combining enclosing keycap
    (0xFE00, 0xFE0F),  # variation selectors
    (0x1F1E6, 0x1F1FF),  # regional indicator symbols
    (0x1F3FB, 0x1F3FF),  # skin-tone modifiers
    (0xE0000, 0xE007F),  # tags
]

# --subset animals: the single-code-point emoji of Unicode's "animal-*" subgroups (emoji-test.txt: mammals,
# birds, amphibians, reptiles, marine animals, bugs), as code point ranges.
SUBSETS = {
    "animals": [
        (0x1F400, 0x1F43F),  # rat ... chipmunk (incl. animal faces, paw prints)
        (0x1F54A, 0x1F54A),  # dove of peace
        (0x1F577, 0x1F578),  # spider, spider web
        (0x1F980, 0x1F9AE),  # crab ... guide dog
        (0x1FAB0, 0x1FAB3),  # fly, worm, beetle, cockroach
        (0x1FABC, 0x1FABD),  # jellyfish, wing
        (0x1FABF, 0x1FABF),  # goose
        (0x1FACE, 0x1FACF),  # moose, donkey
    ],
}


def cmap_code_points(path: str) -> list[int]:
    """Code points mapped by the font's Unicode cmap (format 12, else format 4), ascending."""
    with open(path, "rb") as f:
        data = f.read()
    num_tables = struct.unpack_from(">H", data, 4)[0]
    cmap_offset = None
    for i in range(num_tables):
        tag, _checksum, offset, _length = struct.unpack_from(">4sIII", data, 12 + 16 * i)
        if tag == b"cmap":
            cmap_offset = offset
    if cmap_offset is None:
        raise SystemExit(f"{path}: no cmap table")
    _version, n_sub = struct.unpack_from(">HH", data, cmap_offset)
    subtables = {}
    for i in range(n_sub):
        platform, encoding, offset = struct.unpack_from(">HHI", data, cmap_offset + 4 + 8 * i)
        fmt = struct.unpack_from(">H", data, cmap_offset + offset)[0]
        subtables.setdefault(fmt, cmap_offset + offset)
    points: set[int] = set()
    if 12 in subtables:
        base = subtables[12]
        n_groups = struct.unpack_from(">I", data, base + 12)[0]
        for g in range(n_groups):
            start, end, _glyph = struct.unpack_from(">III", data, base + 16 + 12 * g)
            points.update(range(start, end + 1))
    elif 4 in subtables:
        base = subtables[4]
        seg_x2 = struct.unpack_from(">H", data, base + 6)[0]
        ends = struct.unpack_from(f">{seg_x2 // 2}H", data, base + 14)
        starts = struct.unpack_from(f">{seg_x2 // 2}H", data, base + 16 + seg_x2)
        for start, end in zip(starts, ends):
            if start != 0xFFFF:
                points.update(range(start, end + 1))
    else:
        raise SystemExit(f"{path}: no Unicode cmap subtable of format 12 or 4")
    return sorted(points)


def caption_of(code_point: int) -> str | None:
    if any(lo <= code_point <= hi for lo, hi in EXCLUDED_RANGES):
        return None
    name = unicodedata.name(chr(code_point), "")
    return name.lower() if name else None


def render(font: ImageFont.FreeTypeFont, code_point: int, resolution: int, margin: float) -> Image.Image | None:
    canvas = Image.new("RGBA", (STRIKE_SIZE * 2, STRIKE_SIZE * 2), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((STRIKE_SIZE // 2, STRIKE_SIZE // 2), chr(code_point), font=font,
                                embedded_color=True)
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    side = int(round(max(glyph.size) * (1 + 2 * margin)))
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((resolution, resolution), Image.LANCZOS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--resolution", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--limit", type=int, default=0,
                        help="keep this many emoji, evenly spaced over the code points (default: all)")
    parser.add_argument("--subset", choices=sorted(SUBSETS), default=None,
                        help="keep only this group of emoji (e.g. animals, for the fine-tuning demo)")
    parser.add_argument("--margin", type=float, default=0.06, help="white margin per side, fraction of the glyph")
    parser.add_argument("--font", default=DEFAULT_FONT, help=f"font file (default {DEFAULT_FONT})")
    args = parser.parse_args()
    if args.resolution < 8:
        parser.error("--resolution must be >= 8")
    if not os.path.exists(args.font):
        print(f"error: {args.font} not found; install Debian's fonts-noto-color-emoji "
              "(bash tools/setup.sh does)", file=sys.stderr)
        return 2

    candidates = [(cp, caption) for cp in cmap_code_points(args.font) if (caption := caption_of(cp))]
    if args.subset:
        ranges = SUBSETS[args.subset]
        candidates = [(cp, caption) for cp, caption in candidates if any(lo <= cp <= hi for lo, hi in ranges)]
    if args.limit and args.limit < len(candidates):
        step = len(candidates) / args.limit
        candidates = [candidates[int(i * step)] for i in range(args.limit)]

    font = ImageFont.truetype(args.font, STRIKE_SIZE)
    os.makedirs(args.out, exist_ok=True)
    lines = []
    for cp, caption in candidates:
        image = render(font, cp, args.resolution, args.margin)
        if image is None:
            continue
        file_name = f"u{cp:04x}.png"
        image.save(os.path.join(args.out, file_name), optimize=False)
        lines.append(json.dumps({"file_name": file_name, "text": caption}, ensure_ascii=False))
    with open(os.path.join(args.out, "metadata.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} images at {args.resolution}x{args.resolution} and metadata.jsonl to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
