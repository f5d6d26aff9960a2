#!/usr/bin/env python3
"""Time MediaPipe's TFLite runtime on the same inputs as benches/perception.rs.

Usage:
    python3 tools/time_mediapipe.py [--threads N] [--runs R]

Needs ``ai-edge-litert`` (Google's TFLite runtime with the XNNPACK delegate, what MediaPipe's
``InferenceCalculator`` uses on the CPU), ``mediapipe==0.10.21``, ``numpy``, ``pillow``.
Each network runs on its fixture input (tests/fixtures/perception/<net>.safetensors);
``invoke()`` alone is timed (no preprocessing), after warm-up. Also timed: MediaPipe's
FaceMesh graph end to end on the astronaut photo (detection + landmarks, no iris), and the
three networks of the face chain (short-range detection + FaceMesh + iris for two eyes).
The selfie network needs MediaPipe's custom op, so it is timed through its graph on the
256x256 fixture input (that includes the graph's own crop and mask resize).
Prints mean, median and minimum in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from reference_mediapipe import MODELS, to_float  # noqa: E402

FIX = os.path.join(REPO, "crates", "visage_core", "tests", "fixtures", "perception")

NETS = [
    ("blazeface_short_128", "face_detection_short_range.tflite", "face_detection_short_range", (-1.0, 1.0)),
    ("blazeface_full_192", "face_detection_full_range_sparse.tflite", "face_detection_full_range", (-1.0, 1.0)),
    ("face_mesh_192", "face_landmark.tflite", "face_landmark", (0.0, 1.0)),
    ("iris_64_x2", "iris_landmark.tflite", "iris_landmark", (0.0, 1.0)),
    ("palm_lite_192", "palm_detection_lite.tflite", "palm_detection_lite", (0.0, 1.0)),
    ("hand_lite_224", "hand_landmark_lite.tflite", "hand_landmark_lite", (0.0, 1.0)),
]


def load_input(name: str) -> np.ndarray:
    import json
    import struct

    b = open(os.path.join(FIX, name + ".safetensors"), "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8 : 8 + n])["input"]
    s, e = h["data_offsets"]
    return np.frombuffer(b[8 + n + s : 8 + n + e], dtype=np.uint8).reshape(h["shape"])


def timeit(fn, runs: int) -> list[float]:
    for _ in range(max(3, runs // 10)):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def report(name: str, ms: list[float]) -> None:
    print(f"{name:34s} mean {statistics.mean(ms):8.3f}  median {statistics.median(ms):8.3f}  min {min(ms):8.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    cpu = next((l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} hardware threads; TFLite threads {args.threads}; "
          f"load average {os.getloadavg()}; python {platform.python_version()}")
    interpreters = {}
    for label, model, fixture, rng in NETS:
        it = Interpreter(model_path=os.path.join(MODELS, model), num_threads=args.threads)
        inp = load_input(fixture)
        if inp.ndim == 3:
            inp = inp[None]
        x = np.concatenate([to_float(i, *rng) for i in inp])
        d = it.get_input_details()[0]
        if x.shape[0] != d["shape"][0]:
            it.resize_tensor_input(d["index"], x.shape)
        it.allocate_tensors()
        it.set_tensor(d["index"], x)
        interpreters[label] = (it, d["index"], x)
        report(label, timeit(it.invoke, args.runs))

    # The face chain: three networks back to back (network time only).
    def chain():
        for label in ("blazeface_short_128", "face_mesh_192", "iris_64_x2"):
            it, idx, x = interpreters[label]
            it.set_tensor(idx, x)
            it.invoke()

    report("chain: detect + mesh + iris (nets)", timeit(chain, args.runs))

    import mediapipe as mp

    astro = np.array(Image.open(os.path.join(REPO, "assets", "photos", "astronaut.png")).convert("RGB"))
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=False) as fm:
        report("mediapipe FaceMesh graph (photo)", timeit(lambda: fm.process(astro), args.runs))
    sel = np.ascontiguousarray(load_input("selfie_segmentation"))
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as ss:
        report("mediapipe selfie graph (256x256)", timeit(lambda: ss.process(sel), args.runs))


if __name__ == "__main__":
    main()
