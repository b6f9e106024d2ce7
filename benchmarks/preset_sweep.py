"""The sRGB track's x265 preset: encode speed, bits and RAW quality at 1600x900.

Builds the 1600x900 14-bit pan of encode_speed.py (real Canon 550D pixels), encodes it
with the default settings (block refinement, H.265 CRF 16 4:4:4) at each ``--presets``,
``--repeat`` times in alternation (best encode time kept), decodes each once, and scores
black-subtracted PSNR against the true RAW over the predicted frames.

    python benchmarks/preset_sweep.py [--frames 16] [--presets medium,fast,faster,veryfast] [--repeat 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from encode_speed import make_clip
from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode, frame_name
from rawvid.container import RvdFile
from rawvid.dng import read_dng
from rawvid.metrics import psnr_black
from rawvid.mlv import MLVReader
from rawvid.video import VideoSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--presets", default="medium,fast,faster,veryfast")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    presets = args.presets.split(",")
    rows = {p: {"encode_s": [], "preset": p} for p in presets}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        src = td / "pan1600.MLV"
        make_clip(src, args.frames)
        with MLVReader(src) as clip:
            info, truth = clip.info, [clip.read(i) for i in range(args.frames)]
        for _ in range(args.repeat):
            for p in presets:
                t0 = time.perf_counter()
                encode(src, td / f"{p}.rvd", EncodeOptions(video=VideoSettings.make(preset=p)), force=True)
                rows[p]["encode_s"].append(round(time.perf_counter() - t0, 2))
        for p in presets:
            rvd = td / f"{p}.rvd"
            sizes = RvdFile(rvd).sizes()
            res = decode(rvd, td / f"out-{p}", DecodeOptions())
            scores = [psnr_black(read_dng(td / f"out-{p}" / frame_name(res.clip, i))[0], truth[i], info.cfa,
                                 info.black, info.white) for i in range(1, args.frames)]
            rows[p].update(encode_fps=round(args.frames / min(rows[p]["encode_s"]), 3),
                           bits_per_pixel=round(sizes["bits_per_pixel"], 4),
                           video_bits_per_pixel=round(sizes["video_bits_per_pixel"], 4),
                           psnr_black=round(float(np.mean(scores)), 3), decode_fps=round(res.fps, 3))
            print(json.dumps(rows[p]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"frames": args.frames, "size": "1600x900", "rows": list(rows.values())},
                                        indent=1))


if __name__ == "__main__":
    main()
