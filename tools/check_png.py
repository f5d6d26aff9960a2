#!/usr/bin/env python3
"""Checks that a PNG exists and is not blank: used by CI on the avatar example's screenshot.

Decodes 8-bit RGB/RGBA PNGs with the standard library only and fails unless the image has real
content: at least 2% of its pixels differ from the most common colour (the background), and the
luminance spread is non-trivial.

Usage: check_png.py IMAGE.png
"""
import struct
import sys
import zlib
from collections import Counter


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"{path}: only 8-bit non-interlaced RGB/RGBA is supported")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    pixels = [
        tuple(r[x * channels : x * channels + 3]) for r in rows for x in range(width)
    ]
    return width, height, pixels


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    path = sys.argv[1]
    try:
        w, h, px = read_png(path)
    except (OSError, ValueError, zlib.error) as e:
        print(f"check_png: {e}")
        return 1
    background, count = Counter(px).most_common(1)[0]
    content = 1.0 - count / len(px)
    lum = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b in px]
    spread = max(lum) - min(lum)
    print(f"check_png: {path}: {w}x{h}, {content:.1%} of pixels differ from the background "
          f"{background}, luminance spread {spread:.0f}")
    if content < 0.02 or spread < 20:
        print("check_png: the image is blank")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
