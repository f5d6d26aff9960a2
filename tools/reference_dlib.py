#!/usr/bin/env python3
"""Reference descriptors from dlib itself for Visage's identity-network tests.

Needs `pip install dlib numpy pillow` (dlib builds from source with cmake) and dlib's
`dlib_face_recognition_resnet_model_v1.dat` (from `pip download --no-deps
face-recognition-models==0.3.0`). Writes, next to the test fixtures:

* `dlib_chip_<face>.png`  - the 150x150 chip dlib cuts with `get_face_chip(img, shape, 150, 0.25)`;
* `dlib_reference.json`   - for every face (and its left-right mirror image): the five landmarks
  in dlib's convention (pixel centres at integers), dlib's descriptor of the photo + landmarks
  (`compute_face_descriptor(img, shape)`), and dlib's descriptor of the saved chip given as an
  already aligned image (`compute_face_descriptor(chip)`).

Usage: tools/reference_dlib.py [MODEL.dat]  (default: ../shared/models/face_recognition_models-0.3.0/...)
"""
import hashlib
import json
import sys
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/visage_core/tests/fixtures/photo"
DEFAULT_MODEL = ROOT.parent / "shared/models/face_recognition_models-0.3.0/dlib_face_recognition_resnet_model_v1.dat"

# Hand-placed landmarks, dlib's 5-point order and convention (integer pixel centres):
# image-right eye outer, image-right eye inner, image-left eye outer, image-left eye inner, nose base.
FACES = {
    "astronaut": (ROOT / "assets/photos/astronaut.png",
                  [(258, 102), (237, 104), (192, 100), (211, 102), (224, 131)]),
    "grace_hopper": (FIXTURES / "grace_hopper.jpg",
                     [(318, 185), (292, 188), (209, 190), (235, 192), (267, 249)]),
}


def mirrored(points, width):
    m = [(width - 1 - x, y) for (x, y) in points]
    # Mirroring swaps the eyes: image-right outer <- image-left outer, and so on.
    return [m[2], m[3], m[0], m[1], m[4]]


def main():
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    net = dlib.face_recognition_model_v1(str(model))
    out = {
        "dlib_version": dlib.__version__,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "faces": {},
    }
    for name, (path, points) in FACES.items():
        img = np.array(Image.open(path).convert("RGB"))
        for variant, im, pts in [
            (name, img, points),
            (name + "_mirrored", np.ascontiguousarray(img[:, ::-1]), mirrored(points, img.shape[1])),
        ]:
            shape = dlib.full_object_detection(
                dlib.rectangle(0, 0, im.shape[1] - 1, im.shape[0] - 1),
                [dlib.point(x, y) for (x, y) in pts],
            )
            chip = dlib.get_face_chip(im, shape, size=150, padding=0.25)
            entry = {
                "image": str(path.relative_to(ROOT)),
                "mirrored": variant.endswith("_mirrored"),
                "landmarks_dlib": [list(p) for p in pts],
                "descriptor": list(net.compute_face_descriptor(im, shape)),
            }
            if variant == name:
                chip_path = FIXTURES / f"dlib_chip_{name}.png"
                Image.fromarray(chip).save(chip_path)
                saved = np.array(Image.open(chip_path).convert("RGB"))
                assert (saved == chip).all()
                entry["chip"] = str(chip_path.relative_to(ROOT))
                entry["chip_descriptor"] = list(net.compute_face_descriptor(saved))
            out["faces"][variant] = entry
    d = lambda a, b: float(np.linalg.norm(np.array(out["faces"][a]["descriptor"]) - np.array(out["faces"][b]["descriptor"])))
    out["distances"] = {
        "astronaut~astronaut_mirrored": d("astronaut", "astronaut_mirrored"),
        "grace_hopper~grace_hopper_mirrored": d("grace_hopper", "grace_hopper_mirrored"),
        "astronaut~grace_hopper": d("astronaut", "grace_hopper"),
    }
    (FIXTURES / "dlib_reference.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["distances"], indent=1))


if __name__ == "__main__":
    main()
