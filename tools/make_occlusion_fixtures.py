#!/usr/bin/env python3
"""Writes the face photos of `crates/visage_core/tests/fixtures/occlusion/`.

Eight faces, frontal to about 30 degrees of yaw, not occluded, with varied skin tones and
lighting: the public-domain `assets/photos/astronaut.png` and seven faces from the demo photos
of the npm package `@vladmandic/face-api` 1.7.15 (MIT; get them with
`npm pack @vladmandic/face-api@1.7.15 && tar xzf vladmandic-face-api-1.7.15.tgz`, which unpacks
to `package/demo/sample1.jpg` ... `sample6.jpg`).

Each crop is a square of 2.2 times the face box (`visage detect PHOTO --json --full-range`,
boxes below), centred on the box, resized to 320x320 with Lanczos and stored as WebP quality 90
(JPEG quality 92 when Pillow lacks WebP). `SOURCES.md` is written next to them.

Needs python3 and Pillow (`pip install pillow`).

Usage: make_occlusion_fixtures.py [--demo DIR] [--out DIR]
"""
import argparse
import hashlib
import os
import sys

from PIL import Image, features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 320
SCALE = 2.2

# (output name, source file, sha256 of the source, face box x0, y0, x1, y1 in source pixels,
#  note). Boxes: BlazeFace full range, as printed by `visage detect --json --full-range`.
FACES = [
    ("astronaut", "assets/photos/astronaut.png",
     "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
     (177.6, 82.9, 272.9, 178.2), "frontal, studio light, light skin"),
    ("sample3_a", "sample3.jpg",
     "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
     (576.2, 365.3, 805.9, 595.1), "frontal, warm light, curly blond hair"),
    ("sample3_c", "sample3.jpg",
     "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
     (1494.9, 331.8, 1723.2, 560.0), "slight yaw, cool blue light, light skin"),
    ("sample4_b", "sample4.jpg",
     "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
     (656.1, 134.8, 823.0, 301.7), "head tilted (roll), some yaw, brown skin"),
    ("sample5_a", "sample5.jpg",
     "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
     (361.4, 922.6, 596.6, 1157.7), "frontal, dim warm light, medium-brown skin"),
    ("sample5_c", "sample5.jpg",
     "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
     (777.9, 142.3, 964.2, 328.6), "frontal, soft warm light, medium skin"),
    ("sample6_a", "sample6.jpg",
     "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
     (258.2, 527.4, 485.2, 754.5), "slight yaw, flash, tan skin"),
    ("sample6_b", "sample6.jpg",
     "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
     (619.7, 363.3, 884.6, 628.2), "frontal, flash, light-medium skin"),
]

HEADER = """\
# Occlusion test faces

320×320 face crops for the occlusion-mask measurement (`crates/visage_core/tests/occlusion.rs`,
`cargo run -p visage_core --example occlusion_eval`). Synthetic occluders
(`visage_core::perception::synthetic`) are drawn onto them at test time; the files themselves
show unoccluded faces.

Written by `tools/make_occlusion_fixtures.py`: a square of {scale} × the face box (BlazeFace full
range, `visage detect PHOTO --json --full-range`), centred on the box, resized with Lanczos,
stored as {fmt}.

- `astronaut.{ext}`: from `assets/photos/astronaut.png` (Eileen Collins, NASA; public domain,
  see `assets/NOTICE.md`).
- `sample*.{ext}`: from `package/demo/sampleN.jpg` of the npm package `@vladmandic/face-api`
  1.7.15 (`npm pack @vladmandic/face-api@1.7.15`), photos taken by the package author; MIT
  licence, © Vladimir Mandic, licence text in `../perception/LICENSE.face-api`.

| file | source | crop box x0, y0, x1, y1 (source px) | face |
|---|---|---|---|
"""

HAIR = """
Hair labels: `NAME.hair.png` marks (255) where the photo's own hair covers the FaceMesh face
oval; the occlusion measurement counts those pixels as occluded in its truth. Written by
`tools/label_hair.py` from the hand-drawn polygons in `hair_annotations.json` (zones where
hair may cover the oval, and samples of certain hair; inside a zone, a pixel is hair when its
nearest colour samples are mostly hair rather than the oval's skin). Checked by eye with
`tools/label_hair.py --preview DIR`. Hair covers 0.0–16.9 % of the ovals (`sample5_c`: none).
"""


def crop_box(box):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = round(SCALE * max(x1 - x0, y1 - y0))
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + side, top + side


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", default="/tmp/faceapi/package/demo",
                    help="face-api's package/demo directory")
    ap.add_argument("--out", default=os.path.join(
        ROOT, "crates/visage_core/tests/fixtures/occlusion"))
    args = ap.parse_args()

    webp = features.check("webp")
    ext, fmt = ("webp", "lossy WebP, quality 90") if webp else ("jpg", "JPEG, quality 92")
    os.makedirs(args.out, exist_ok=True)
    rows, total = [], 0
    for name, src, sha, box, note in FACES:
        path = os.path.join(ROOT, src) if src.startswith("assets/") else os.path.join(args.demo, src)
        data = open(path, "rb").read()
        if hashlib.sha256(data).hexdigest() != sha:
            sys.exit(f"{path}: unexpected sha256 (not the file these boxes were measured on)")
        img = Image.open(path).convert("RGB")
        x0, y0, x1, y1 = crop_box(box)
        if x0 < 0 or y0 < 0 or x1 > img.width or y1 > img.height:
            sys.exit(f"{name}: crop {x0, y0, x1, y1} leaves the {img.width}×{img.height} photo")
        out = img.resize((SIZE, SIZE), Image.LANCZOS, box=(x0, y0, x1, y1))
        dst = os.path.join(args.out, f"{name}.{ext}")
        if webp:
            out.save(dst, "WEBP", quality=90, method=6)
        else:
            out.save(dst, "JPEG", quality=92)
        size = os.path.getsize(dst)
        total += size
        src_name = f"`{src}`" if src.startswith("assets/") else f"face-api `demo/{src}`"
        rows.append(f"| `{name}.{ext}` | {src_name} | {x0}, {y0}, {x1}, {y1} | {note} |")
        print(f"{dst}: {size} bytes")
    with open(os.path.join(args.out, "SOURCES.md"), "w") as f:
        f.write(HEADER.format(scale=SCALE, fmt=fmt, ext=ext))
        f.write("\n".join(rows) + "\n")
        f.write(HAIR)
        f.write("\nSource files (sha256):\n\n")
        for src, sha in sorted({(s.split("/")[-1], h) for _, s, h, _, _ in FACES}):
            f.write(f"- `{src}` `{sha}`\n")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
