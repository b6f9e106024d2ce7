"""FFV1 lossless on the Bayer planes as they are against on a reversible decorrelation of each quad.

Measured for the lossless RAW layer (not taken: the transform of the lossy layer, format 6, has no
integer counterpart that FFV1 codes smaller). The decorrelation is the classic lossless one for Bayer
data: g = floor((Gr + Gb) / 2), then R - g, B - g and Gr - Gb, offset into 16 bits; exactly invertible
(checked on every frame).

    cd benchmarks && python lossless_transform.py ../data/synth/stable/test --frames 4 --json results/lossless_transform_test.json
"""
from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from rawvid import rawlayer as rl
from rawvid.bayer import pack
from rawvid.bench import discover
from rawvid.rd import _samples, load_clip

OFFSET = 32768


def forward(planes: np.ndarray) -> np.ndarray:
    """[R, Gr, Gb, B] -> [g, R - g, B - g, Gr - Gb] (the last three offset by 32768)."""
    r, gr, gb, b = planes.astype(np.int64)
    g = (gr + gb) >> 1
    return np.stack([g, r - g + OFFSET, b - g + OFFSET, gr - gb + OFFSET])


def inverse(t: np.ndarray) -> np.ndarray:
    g, r, b, d = t.astype(np.int64)
    r, b, d = r - OFFSET, b - OFFSET, d - OFFSET
    gb = g - (d >> 1)  # g = floor((Gr + Gb) / 2) = Gb + floor(d / 2)
    return np.stack([r + g, gb + d, gb, b + g])


def ffv1_bytes(pictures: list[np.ndarray], width: int, height: int) -> int:
    enc = rl._open_encoder(rl.LayerSettings(codec="ffv1"), width, height, Fraction(25))
    packets = []
    for i, pic in enumerate(pictures):
        packets += enc.encode(rl._frame(pic.astype(np.uint16), "gray16le", i, False))
    packets += enc.encode(None)
    return sum(p.size for p in packets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = {}
    for c in discover([args.split]):
        with c.open() as src:
            data = load_clip(c.name, src, args.frames)
        planes = [pack(m, data.info.cfa) for m in data.mosaics]
        for p in planes:
            if not np.array_equal(inverse(forward(p)), p.astype(np.int64)):
                raise SystemExit(f"{c.name}: the decorrelation did not invert")
        n = _samples(data)
        w, h = data.info.width, data.info.height
        plain = 8 * ffv1_bytes([rl.tile(p) for p in planes], w, h) / n
        moved = 8 * ffv1_bytes([rl.tile(forward(p)) for p in planes], w, h) / n
        rows[c.name] = {"planes_bpp": plain, "decorrelated_bpp": moved, "change_percent": 100 * (moved / plain - 1)}
        print(f"{c.name:32s} planes {plain:.3f}, decorrelated {moved:.3f} bits per sample ({rows[c.name]['change_percent']:+.1f}%)",
              flush=True)
    mean = float(np.mean([r["change_percent"] for r in rows.values()]))
    print(f"mean change {mean:+.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "clips": rows,
                                         "mean_change_percent": mean}, indent=1))


if __name__ == "__main__":
    main()
