"""Make examples/colorchart_pan.MLV: a genuine 14-bit MLV from a real Canon 550D RAW still.

Source: ../shared/data/raw/canon550d_colorchart.dng (MIT, github syoyo/tinydng), a
Magic Lantern DNG of a colour chart. A 960x540 window moves over the real mosaic
along a smooth, eased camera path (pan with a gentle curve). Offsets are even, so
every frame is genuine sensor data in its original RGGB layout: no resampling.
Frames are stored LJ92-compressed (MLV-App layout) to keep the file under 10 MB.

    python examples/make_example_clip.py [path/to/canon550d_colorchart.dng]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rawvid.dng import read_dng
from rawvid.meta import Camera, RawInfo
from rawvid.mlv import MLVWriter

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "shared" / "data" / "raw" / "canon550d_colorchart.dng"
WIDTH, HEIGHT, FRAMES, FPS = 960, 540, 18, 24.0


def camera_path(n: int, max_x: int, max_y: int) -> list[tuple[int, int]]:
    """Eased pan from left to right with a slow vertical arc; even offsets keep the CFA phase."""
    out = []
    for i in range(n):
        t = i / (n - 1)
        e = 0.5 - 0.5 * np.cos(np.pi * t)  # ease in and out
        x = 0.15 * max_x + 0.6 * max_x * e
        y = max_y * (0.35 + 0.3 * np.sin(np.pi * t))
        out.append((int(x) // 2 * 2, int(y) // 2 * 2))
    return out


def main(src: Path = SOURCE, out: Path = HERE / "colorchart_pan.MLV") -> None:
    mosaic, info = read_dng(src)
    h, w = mosaic.shape
    clip = RawInfo(width=WIDTH, height=HEIGHT, bits=14, black=info.black, white=info.white, cfa=info.cfa,
                   color_matrix=info.color_matrix, as_shot_neutral=None, fps=FPS,
                   camera=Camera(make="Canon", model="Canon EOS 550D", iso=100, shutter_us=20000))
    with MLVWriter(out, clip, lj92=True) as mlv:
        for i, (x, y) in enumerate(camera_path(FRAMES, w - WIDTH, h - HEIGHT)):
            mlv.write_frame(np.ascontiguousarray(mosaic[y : y + HEIGHT, x : x + WIDTH]), number=i)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {FRAMES} frames {WIDTH}x{HEIGHT})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE)
