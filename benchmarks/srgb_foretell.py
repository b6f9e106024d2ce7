"""How well the sRGB pilot's first frames foretell the sRGB track's bytes (rawvid.srgb_pilot.foretell).

For every clip and CRF, codes the first K frames alone (what the sRGB pilot codes) and the whole
clip (what the encoder will code), and reports the foretold bytes against the actual, per K.
x265's CRF spends less on the last frames of a short encode (nothing after them refers to them).

    python benchmarks/srgb_foretell.py data/scenarios/stable/test [--frames 12] [--pilots 4,8] [--crfs 24,28,32,36]
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from rawvid.bench import discover
from rawvid.encoder import _rendered
from rawvid.srgb_pilot import foretell, packet_sizes
from rawvid.video import VideoSettings, VideoWriter


def coded_sizes(frames: list[np.ndarray], info, crf: int) -> list[int]:
    """Packet sizes of the frames coded as the sRGB track would be, at ``crf``."""
    with tempfile.TemporaryDirectory(prefix="rawvid-foretell-") as td:
        path = Path(td) / "v.mkv"
        with VideoWriter(path, info.width, info.height, info.fps, VideoSettings.make(crf=crf)) as w:
            for f in frames:
                w.write(f)
        return packet_sizes(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--pilots", default="4,8")
    ap.add_argument("--crfs", default="24,28,32,36")
    args = ap.parse_args()
    pilots = [int(k) for k in args.pilots.split(",")]
    errs: dict[int, list[float]] = {k: [] for k in pilots}
    for c in discover([args.split]):
        with c.open() as src:
            info = src.info
            rgbs = [rgb for _, rgb in _rendered(src, src.frames(0, min(args.frames, src.frame_count)), "auto")]
        for crf in (int(q) for q in args.crfs.split(",")):
            actual = sum(coded_sizes(rgbs, info, crf))
            row = []
            for k in pilots:
                f = foretell(coded_sizes(rgbs[:k], info, crf), len(rgbs))
                errs[k].append(math.log(f / actual))
                row.append(f"{k} frames {(f / actual - 1) * 100:+.1f}%")
            print(f"{c.name:40s} CRF {crf}: {actual} bytes; " + ", ".join(row), flush=True)
    for k in pilots:
        e = np.array(errs[k])
        print(f"{k} frames: geometric mean error {(math.exp(e.mean()) - 1) * 100:+.1f}%, mean |error| "
              f"{(math.exp(np.abs(e).mean()) - 1) * 100:.1f}%, worst {(math.exp(e[np.argmax(np.abs(e))]) - 1) * 100:+.1f}%")


if __name__ == "__main__":
    main()
