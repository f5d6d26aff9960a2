#!/usr/bin/env python3
"""Reference outputs of MediaPipe's own runtime for the perception golden tests.

Usage:
    python3 tools/reference_mediapipe.py [--out crates/visage_core/tests/fixtures/perception]

Needs (PyPI): ``mediapipe==0.10.21`` (its solutions API and OpenCV), ``ai-edge-litert``
(Google's TFLite runtime, to run single networks on given input tensors), ``numpy``,
``pillow``. The TFLite models are read from ``../shared/models/mediapipe-0.10.21``
(the same files the converter reads; see tools/convert_tflite.py).

For every network this writes ``<network>.safetensors`` holding
- the exact 8-bit network input (``input``, HWC; the Rust test converts it to float the way
  MediaPipe does: ``pixel / 255 * (max - min) + min``), cropped with OpenCV exactly as
  MediaPipe's ``ImageToTensorCalculator`` does on the CPU (``warpPerspective``, bilinear,
  rect corners onto output corners),
- the raw outputs of the TFLite runtime (XNNPACK, fp32) for that input,
- the rect the crop came from (``rect`` = cx, cy, w, h, rotation; photo pixels, radians),
- where MediaPipe's own graph can run the same step end to end (``mediapipe.solutions``),
  its final results in photo pixels (``mp_*``).

Photos: ``assets/photos/astronaut.png`` (public domain, scikit-image) and
``sample2_720.webp`` in the fixture directory (from the npm package @vladmandic/face-api 1.7.15,
MIT, photo taken by the package author; downscaled to 720x513 (Lanczos) and stored as lossless WebP).

The selfie network uses MediaPipe's custom ``Convolution2DTransposeBias`` op, which the plain
TFLite runtime lacks, so its reference comes from ``mediapipe.solutions.selfie_segmentation``
run on a 256x256 image (the graph's crop is then the identity).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import cv2
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from convert_tflite import write_safetensors  # noqa: E402

MODELS = os.path.join(REPO, "..", "shared", "models", "mediapipe-0.10.21")


# ---------------------------------------------------------------- MediaPipe's preprocessing


def mp_crop(img: np.ndarray, rect, w: int, h: int, border: str, flip: bool = False) -> np.ndarray:
    """ImageToTensorCalculator's OpenCV path: the rotated rect's corners onto the output's
    corners, warpPerspective with bilinear sampling, 8-bit result. ``flip`` mirrors the
    output (sampling u = 1 - x / w), as the Rust crop does for right eyes."""
    cx, cy, rw, rh, rot = rect
    src = cv2.boxPoints(((cx, cy), (rw, rh), rot * 180.0 / math.pi)).astype(np.float32)
    dst = np.array([[0, h], [0, 0], [w, 0], [w, h]], dtype=np.float32)
    if flip:
        dst[:, 0] = w - dst[:, 0]
    m = cv2.getPerspectiveTransform(src, dst)
    mode = {"zero": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}[border]
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)


def to_float(u8: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (u8.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo))[None]


def letterbox(width: int, height: int, tw: int, th: int):
    ta = th / tw
    ra = height / width
    if ta > ra:
        nw, nh = width, width * ta
    else:
        nw, nh = height / ta, height
    return (0.5 * width, 0.5 * height, nw, nh, 0.0)


def to_photo(rect, u: float, v: float):
    cx, cy, w, h, r = rect
    c, s = math.cos(r), math.sin(r)
    x, y = (u - 0.5) * w, (v - 0.5) * h
    return cx + c * x - s * y, cy + s * x + c * y


def normalize_radians(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def rect_from(bbox, start, end, target_deg, scale, shift=(0.0, 0.0)):
    """DetectionsToRectsCalculator (rotation from two keypoints) followed by
    RectTransformationCalculator (shift, square_long, scale); pixels."""
    xmin, ymin, xmax, ymax = bbox
    rot = normalize_radians(math.radians(target_deg) - math.atan2(-(end[1] - start[1]), end[0] - start[0]))
    w, h = xmax - xmin, ymax - ymin
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    if rot == 0.0:
        cx += w * shift[0]
        cy += h * shift[1]
    else:
        cx += w * shift[0] * math.cos(rot) - h * shift[1] * math.sin(rot)
        cy += w * shift[0] * math.sin(rot) + h * shift[1] * math.cos(rot)
    side = max(w, h)
    return (cx, cy, side * scale, side * scale, rot)


# ---------------------------------------------------------------- SSD post-processing


def anchors(size: int, strides, interpolated: float):
    """SsdAnchorsCalculator with fixed_anchor_size (centres only)."""
    out = []
    n = len(strides)
    layer = 0
    while layer < n:
        count = 0
        last = layer
        while last < n and strides[last] == strides[layer]:
            count += 1 + (1 if interpolated > 0 else 0)
            last += 1
        f = math.ceil(size / strides[layer])
        for y in range(f):
            for x in range(f):
                for _ in range(count):
                    out.append(((x + 0.5) / f, (y + 0.5) / f))
        layer = last
    return np.array(out, dtype=np.float32)


def decode(reg, logits, anc, size, nkp, thresh):
    dets = []
    for i, (ax, ay) in enumerate(anc):
        score = 1 / (1 + math.exp(-float(np.clip(logits[i], -100, 100))))
        if score < thresh:
            continue
        r = reg[i]
        xc, yc = r[0] / size + ax, r[1] / size + ay
        w, h = r[2] / size, r[3] / size
        kps = [(r[4 + 2 * k] / size + ax, r[5 + 2 * k] / size + ay) for k in range(nkp)]
        dets.append([[xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], kps, score])
    return dets


def weighted_nms(dets, thr=0.3):
    def iou(a, b):
        ix0, iy0, ix1, iy1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
        if ix1 < ix0 or iy1 < iy0:
            return 0.0
        inter = (ix1 - ix0) * (iy1 - iy0)
        u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / u if u > 0 else 0.0

    rem = sorted(dets, key=lambda d: -d[2])
    out = []
    while rem:
        top = rem[0]
        cand = [d for d in rem if iou(d[0], top[0]) > thr]
        rest = [d for d in rem if iou(d[0], top[0]) <= thr]
        tot = sum(d[2] for d in cand)
        box = [sum(d[0][j] * d[2] for d in cand) / tot for j in range(4)]
        kps = [
            (sum(d[1][k][0] * d[2] for d in cand) / tot, sum(d[1][k][1] * d[2] for d in cand) / tot)
            for k in range(len(top[1]))
        ]
        out.append([box, kps, top[2]])
        if len(rest) == len(rem):
            break
        rem = rest
    return out


def project(dets, rect):
    out = []
    for box, kps, score in dets:
        a = to_photo(rect, box[0], box[1])
        b = to_photo(rect, box[2], box[3])
        out.append([[a[0], a[1], b[0], b[1]], [to_photo(rect, *k) for k in kps], score])
    return out


# ---------------------------------------------------------------- runtimes


def litert(model: str, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=os.path.join(MODELS, model), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def save(out_dir: str, name: str, tensors: dict, note: str) -> None:
    path = os.path.join(out_dir, name + ".safetensors")
    write_safetensors(path, tensors, {"generator": "tools/reference_mediapipe.py", "note": note})
    print(f"{name}: {os.path.getsize(path)} bytes")


def dets_array(dets) -> np.ndarray:
    return f32([list(b) + [c for k in kps for c in k] + [s] for b, kps, s in dets]).reshape(len(dets), -1)


# ---------------------------------------------------------------- per network


def face_detection(img, out_dir, variant):
    import mediapipe as mp

    size = 128 if variant == "short" else 192
    model = "face_detection_short_range.tflite" if variant == "short" else "face_detection_full_range_sparse.tflite"
    h, w = img.shape[:2]
    rect = letterbox(w, h, size, size)
    inp = mp_crop(img, rect, size, size, "zero")
    outs = litert(model, to_float(inp, -1.0, 1.0))
    reg = [v for k, v in outs.items() if v.shape[-1] == 16][0][0]
    cls = [v for k, v in outs.items() if v.shape[-1] == 1][0][0, :, 0]
    anc = anchors(size, [8, 16, 16, 16] if variant == "short" else [4], 1.0 if variant == "short" else 0.0)
    thresh = 0.5 if variant == "short" else 0.6
    mine = project(weighted_nms(decode(reg, cls, anc, size, 6, thresh)), rect)
    with mp.solutions.face_detection.FaceDetection(
        model_selection=0 if variant == "short" else 1, min_detection_confidence=thresh
    ) as fd:
        res = fd.process(img)
    mp_dets = []
    for d in res.detections or []:
        bb = d.location_data.relative_bounding_box
        box = [bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h]
        kps = [(k.x * w, k.y * h) for k in d.location_data.relative_keypoints]
        mp_dets.append([box, kps, d.score[0]])
    name = "face_detection_short_range" if variant == "short" else "face_detection_full_range"
    save(
        out_dir,
        name,
        {
            "input": inp,
            "rect": f32(rect),
            "regressors": f32(reg),
            "logits": f32(cls),
            "detections": dets_array(mine),
            "mp_detections": dets_array(mp_dets),
        },
        "input: letterboxed photo, range [-1,1]; detections: this script's decode+NMS of the "
        "runtime outputs; mp_detections: mediapipe.solutions.face_detection (x0,y0,x1,y1, 6x(x,y), score; px)",
    )
    return mine


def face_mesh(img, det, out_dir, prefix="", photo_note=""):
    import mediapipe as mp

    box, kps, _ = det
    rect = rect_from(box, kps[0], kps[1], 0.0, 1.5)
    inp = mp_crop(img, rect, 192, 192, "replicate")
    outs = litert("face_landmark.tflite", to_float(inp, 0.0, 1.0))
    lm = outs["conv2d_21"].reshape(468, 3)
    flag = outs["conv2d_31"].reshape(1)
    h, w = img.shape[:2]
    tensors = {"input": inp, "rect": f32(rect), "landmarks": f32(lm), "face_flag": f32(flag)}
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4, refine_landmarks=False) as fm:
        res = fm.process(img)
    if res.multi_face_landmarks:
        # The face whose nose tip is closest to this crop's centre.
        dist = lambda f: math.hypot(f.landmark[1].x * w - rect[0], f.landmark[1].y * h - rect[1])  # noqa: E731
        best = min(res.multi_face_landmarks, key=dist)
        if dist(best) < rect[2] / 4:
            tensors["mp_landmarks"] = f32([[p.x * w, p.y * h, p.z * w] for p in best.landmark])
    save(
        out_dir,
        prefix + "face_landmark",
        tensors,
        "input: 192x192 crop (rect from the face detection, scale 1.5, replicate border), "
        "range [0,1]; landmarks: runtime output (crop pixels); mp_landmarks: "
        "mediapipe.solutions.face_mesh (photo px; z scaled like x)" + photo_note,
    )
    pts = [to_photo(rect, x / 192, y / 192) for x, y, _ in lm]
    return pts


def iris(img, mesh_pts, out_dir):
    inputs, rects, contours, irises = [], [], [], []
    for a, b, flip in [(33, 133, False), (362, 263, True)]:
        p0, p1 = mesh_pts[a], mesh_pts[b]
        box = [min(p0[0], p1[0]), min(p0[1], p1[1]), max(p0[0], p1[0]), max(p0[1], p1[1])]
        rect = rect_from(box, p0, p1, 0.0, 2.3)
        inp = mp_crop(img, rect, 64, 64, "replicate", flip)
        outs = litert("iris_landmark.tflite", to_float(inp, 0.0, 1.0))
        inputs.append(inp)
        rects.append(rect)
        contours.append(outs["output_eyes_contours_and_brows"].reshape(-1))
        irises.append(outs["output_iris"].reshape(-1))
    import mediapipe as mp

    h, w = img.shape[:2]
    # An independent estimate: the attention FaceMesh (refine_landmarks) predicts iris
    # centres (landmarks 468 and 473) with a different network.
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        res = fm.process(img)
    lm = res.multi_face_landmarks[0].landmark
    save(
        out_dir,
        "iris_landmark",
        {
            "input": np.stack(inputs),
            "rect": f32(rects),
            "contours": f32(contours),
            "iris": f32(irises),
            "mp_attention_iris_centers": f32([[lm[i].x * w, lm[i].y * h] for i in (468, 473)]),
        },
        "input: [image-left eye (landmarks 33,133), image-right eye (362,263) mirrored], 64x64, "
        "scale 2.3, range [0,1]; outputs: runtime (crop pixels, mirrored for the second eye); "
        "mp_attention_iris_centers: face_landmark_with_attention's iris centres (photo px)",
    )


def hands(img, out_dir):
    import mediapipe as mp

    h, w = img.shape[:2]
    rect = letterbox(w, h, 192, 192)
    inp = mp_crop(img, rect, 192, 192, "zero")
    outs = litert("palm_detection_lite.tflite", to_float(inp, 0.0, 1.0))
    reg = [v for v in outs.values() if v.shape[-1] == 18][0][0]
    cls = [v for v in outs.values() if v.shape[-1] == 1][0][0, :, 0]
    anc = anchors(192, [8, 16, 16, 16], 1.0)
    palms = project(weighted_nms(decode(reg, cls, anc, 192, 7, 0.5)), rect)
    tensors = {
        "input": inp,
        "rect": f32(rect),
        "regressors": f32(reg),
        "logits": f32(cls),
        "detections": dets_array(palms),
    }
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4, model_complexity=0) as hd:
        res = hd.process(img)
    if res.multi_hand_landmarks:
        tensors["mp_landmarks"] = f32([[[p.x * w, p.y * h, p.z * w] for p in hl.landmark] for hl in res.multi_hand_landmarks])
        tensors["mp_left_score"] = f32(
            [[c.score if c.label == "Left" else 1 - c.score for c in hd_.classification][:1] for hd_ in res.multi_handedness]
        )
    save(
        out_dir,
        "palm_detection_lite",
        tensors,
        "input: letterboxed photo 192x192, range [0,1]; detections: this script's decode+NMS "
        "(x0,y0,x1,y1, 7x(x,y), score; px); mp_landmarks: mediapipe.solutions.hands "
        "(model_complexity 0; px); mp_left_score: its score for the label 'Left'",
    )
    # Hand landmarks on the best palm.
    box, kps, _ = palms[0]
    print("palms:", [[round(v) for v in p[0]] + [round(p[2], 3)] for p in palms])
    hrect = rect_from(box, kps[0], kps[2], 90.0, 2.6, (0.0, -0.5))
    hinp = mp_crop(img, hrect, 224, 224, "replicate")
    outs = litert("hand_landmark_lite.tflite", to_float(hinp, 0.0, 1.0))
    save(
        out_dir,
        "hand_landmark_lite",
        {
            "input": hinp,
            "rect": f32(hrect),
            "landmarks": f32(outs["Identity"].reshape(21, 3)),
            "presence": f32(outs["Identity_1"].reshape(1)),
            "handedness": f32(outs["Identity_2"].reshape(1)),
            "world": f32(outs["Identity_3"].reshape(21, 3)),
        },
        "input: 224x224 crop of the best palm (wrist->middle MCP at 90 deg, scale 2.6, shift -0.5), "
        "range [0,1]; outputs: runtime (landmarks in crop pixels; presence and handedness after sigmoid)",
    )


def selfie(img, out_dir):
    import mediapipe as mp

    h, w = img.shape[:2]
    inp = mp_crop(img, (0.5 * w, 0.5 * h, w, h, 0.0), 256, 256, "zero")
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as ss:
        mask = ss.process(np.ascontiguousarray(inp)).segmentation_mask
    save(
        out_dir,
        "selfie_segmentation",
        {"input": inp, "mask": np.ascontiguousarray(mask.astype(np.float16))},
        "input: photo resized to 256x256 (no aspect kept), range [0,1]; mask: "
        "mediapipe.solutions.selfie_segmentation on that 256x256 image (identity crop), fp16",
    )


def crops(img, out_dir):
    """OpenCV crops for the Rust crop test: a rotated rect reaching past the border."""
    h, w = img.shape[:2]
    rect = (0.15 * w, 0.2 * h, 0.45 * w, 0.3 * h, 0.6)
    save(
        out_dir,
        "crops",
        {
            "rect": f32(rect),
            "zero": mp_crop(img, rect, 96, 64, "zero"),
            "replicate": mp_crop(img, rect, 96, 64, "replicate"),
            "replicate_flipped": mp_crop(img, rect, 96, 64, "replicate", True),
        },
        "cv2.warpPerspective crops of the astronaut photo (96x64) as MediaPipe makes them",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "visage_core", "tests", "fixtures", "perception"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    astro = np.array(Image.open(os.path.join(REPO, "assets", "photos", "astronaut.png")).convert("RGB"))
    group = np.array(Image.open(os.path.join(args.out, "sample2_720.webp")).convert("RGB"))

    dets = face_detection(astro, args.out, "short")
    face_detection(astro, args.out, "full")
    pts = face_mesh(astro, dets[0], args.out)
    iris(astro, pts, args.out)
    # The hand-over-mouth face of the group photo: detection on that photo, leftmost face.
    gd = face_detection_group(group)
    print("group faces:", [[round(v) for v in d[0]] + [round(d[2], 3)] for d in gd])
    face_mesh(
        group,
        min(gd, key=lambda d: d[0][0]),
        args.out,
        "group_",
        "; photo: sample2_720.webp, leftmost full-range detection (hand at the mouth)",
    )
    hands(group, args.out)
    selfie(astro, args.out)
    crops(astro, args.out)


def face_detection_group(img):
    """Full-range detections (the short-range model misses the profile faces here)."""
    h, w = img.shape[:2]
    rect = letterbox(w, h, 192, 192)
    inp = mp_crop(img, rect, 192, 192, "zero")
    outs = litert("face_detection_full_range_sparse.tflite", to_float(inp, -1.0, 1.0))
    reg = [v for v in outs.values() if v.shape[-1] == 16][0][0]
    cls = [v for v in outs.values() if v.shape[-1] == 1][0][0, :, 0]
    return project(weighted_nms(decode(reg, cls, anchors(192, [4], 0.0), 192, 6, 0.6)), rect)


if __name__ == "__main__":
    main()
