#!/usr/bin/env python3
"""Compares the pixels of two PNGs that Kiln wrote (8-bit RGBA, non-interlaced).

    python3 tools/png_diff.py A.png B.png [--bound LEVELS]

Prints the size, the largest per-channel difference (in 1/255 steps), the mean
difference, and how many pixels and bytes differ; exits 1 when the largest
difference exceeds --bound (default 0: the pixels must be equal) or the sizes
differ. Standard library only, so CI scripts (tools/windows_ci.sh,
tools/aarch64_ci.sh) need nothing installed to use it.
"""

import argparse
import struct
import sys
import zlib


def pixels(path):
    """(width, height) and the RGBA bytes of an 8-bit RGBA, non-interlaced PNG."""
    data = open(path, "rb").read()
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            if (depth, color) != (8, 6):
                sys.exit(f"{path}: expected 8-bit RGBA, got depth {depth} colour type {color}")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, bpp, stride = zlib.decompress(idat), 4, w * 4
    out, prev = bytearray(), bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return (w, h), bytes(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--bound", type=int, default=0, help="largest allowed difference, in 1/255 steps")
    args = ap.parse_args()
    (sa, a), (sb, b) = pixels(args.a), pixels(args.b)
    if sa != sb:
        sys.exit(f"  {args.a} vs {args.b}: sizes differ: {sa} vs {sb}")
    d = [abs(x - y) for x, y in zip(a, b)]
    px = len(a) // 4
    px_diff = sum(any(d[4 * i:4 * i + 4]) for i in range(px))
    print(f"  {args.a} vs {args.b}: {sa[0]}x{sa[1]}, max difference {max(d)} of 255 (bound {args.bound}), "
          f"mean {sum(d) / len(d):.4f}, {px_diff} of {px} pixels differ ({sum(v != 0 for v in d)} of {len(d)} bytes)")
    sys.exit(0 if max(d) <= args.bound else 1)


if __name__ == "__main__":
    main()
