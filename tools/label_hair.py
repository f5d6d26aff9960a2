#!/usr/bin/env python3
"""Writes the hair labels of `crates/visage_core/tests/fixtures/occlusion/`.

The occlusion test faces are unoccluded apart from their own hair, which on several of them
covers part of the FaceMesh face oval. The occlusion measurement counts those pixels as
occluded in its truth (`examples/occlusion_eval.rs`), so each face needs a hair label:
`NAME.hair.png`, 320x320, 255 where hair covers the face oval.

The labels come from hand-drawn annotations, `hair_annotations.json` beside the photos:

- `zone`: polygons where hair may cover the face oval, drawn generously around the hair
  line. Only pixels inside a zone and inside the oval can be labelled hair.
- `hair`: polygons of certain hair outside the oval, as colour samples.

Inside each zone, a pixel is hair when most of its 30 nearest colour samples (CIELAB; hair
samples against the skin of the oval outside the zones, the two classes weighted equally) are
hair, after smoothing that vote with a Gaussian of 1.5 px. The oval is FaceMesh's
(`FACE_OVAL` in `occlusion.rs`) on the landmarks that `visage detect --json` finds on the
photo. `--preview DIR` writes each photo beside its label for checking by eye.

Needs python3, numpy, scipy and Pillow (`pip install numpy scipy pillow`), and the visage CLI
(by default `cargo run --release -p visage_cli --`).

Usage: label_hair.py [--visage CMD] [--preview DIR]
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates/visage_core/tests/fixtures/occlusion")
NEIGHBOURS = 30
SMOOTHING_PX = 1.5


def face_oval_indices():
    """The FaceMesh face-oval landmark indices, read from the occlusion module."""
    path = os.path.join(ROOT, "crates/visage_core/src/perception/occlusion.rs")
    src = open(path, encoding="utf-8").read()
    m = re.search(r"pub const FACE_OVAL: \[usize; \d+\] = \[([^\]]*)\]", src)
    if m is None:
        sys.exit(f"{path}: FACE_OVAL not found")
    return [int(t) for t in re.findall(r"\d+", m.group(1))]


def landmarks(visage, photo):
    """468 landmarks of the face nearest the photo's centre, from `visage detect --json`."""
    out = subprocess.run(
        visage + ["detect", photo, "--json"], check=True, capture_output=True, text=True
    ).stdout
    result = json.loads(out)
    w, h = result["size"]
    faces = [f for f in result["faces"] if f.get("landmarks")]
    if not faces:
        sys.exit(f"{photo}: no face with landmarks")

    def off_centre(f):
        pts = np.array(f["landmarks"])[:, :2]
        return float(np.sum((pts.mean(0) - [w / 2, h / 2]) ** 2))

    return np.array(min(faces, key=off_centre)["landmarks"])[:, :2]


def fill(size, polygons):
    """Boolean mask of the union of polygons (lists of [x, y])."""
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        draw.polygon([tuple(map(float, p)) for p in poly], fill=255)
    return np.array(img) > 0


def srgb_to_lab(rgb):
    """CIELAB (D65) of 8-bit sRGB pixels, shape (..., 3)."""
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def label(photo, oval, zones, hair_polys):
    """The hair label (boolean, photo size) and the face oval mask."""
    h, w = photo.shape[:2]
    region = fill((w, h), [oval])
    zone = fill((w, h), zones) & region
    hair = fill((w, h), hair_polys) & ~region
    skin = region & ~zone
    if hair.sum() == 0 or skin.sum() == 0:
        sys.exit("an annotation leaves no hair or no skin samples")
    feat = srgb_to_lab(photo).reshape(-1, 3)
    samples = np.concatenate([feat[hair.ravel()], feat[skin.ravel()]])
    is_hair = np.concatenate([np.ones(hair.sum()), np.zeros(skin.sum())])
    weight = np.where(is_hair == 1, 1.0 / hair.sum(), 1.0 / skin.sum())
    _, idx = cKDTree(samples).query(feat[zone.ravel()], k=NEIGHBOURS)
    vote = np.zeros((h, w))
    vote[zone] = (weight[idx] * is_hair[idx]).sum(1) / weight[idx].sum(1)
    vote = gaussian_filter(vote, SMOOTHING_PX)
    return (vote > 0.5) & zone, region


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visage", default="cargo run -q --release -p visage_cli --")
    ap.add_argument("--preview", help="write NAME.png previews (photo | label) here")
    args = ap.parse_args()
    visage = shlex.split(args.visage)
    oval_idx = face_oval_indices()
    ann = json.load(open(os.path.join(FIXTURES, "hair_annotations.json"), encoding="utf-8"))
    for name, a in sorted(ann["faces"].items()):
        path = None
        for ext in ("webp", "jpg"):
            p = os.path.join(FIXTURES, f"{name}.{ext}")
            if os.path.exists(p):
                path = p
        if path is None:
            sys.exit(f"{name}: no photo in {FIXTURES}")
        photo = np.array(Image.open(path).convert("RGB"))
        pts = landmarks(visage, path)
        oval = [pts[i].tolist() for i in oval_idx]
        hair, region = label(photo, oval, a["zone"], a["hair"])
        out = os.path.join(FIXTURES, f"{name}.hair.png")
        tmp = out + ".tmp"
        Image.fromarray((hair * 255).astype(np.uint8)).save(tmp, format="PNG", optimize=True)
        os.replace(tmp, out)
        print(f"{name}: hair covers {hair.sum() / region.sum():.3f} of the face oval -> {out}")
        if args.preview:
            os.makedirs(args.preview, exist_ok=True)
            vis = photo.astype(np.float64)
            vis[hair] = 0.4 * vis[hair] + 0.6 * np.array([0, 255, 0])
            edge = region ^ np.roll(region, 1, 0) | region ^ np.roll(region, 1, 1)
            vis[edge] = (255, 255, 0)
            Image.fromarray(np.concatenate([photo, vis.astype(np.uint8)], 1)).save(
                os.path.join(args.preview, f"{name}.png")
            )


if __name__ == "__main__":
    main()
