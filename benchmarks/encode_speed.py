"""Encode speed at 1600x900 for each render mode, and the example's .rvd size against its MLV.

Builds a 1600x900 14-bit uncompressed MLV (a pan over the real Canon 550D still in
../shared/data, real sensor pixels, even offsets) in a temp folder, then times
``rawvid.codec.encode`` on it per render mode, with block refinement off and on (the
default), with the default video codec.

    python benchmarks/encode_speed.py [--frames 48] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from rawvid.codec import EncodeOptions, encode
from rawvid.container import RvdFile
from rawvid.dng import read_dng
from rawvid.meta import Camera, RawInfo
from rawvid.mlv import MLVWriter

ROOT = Path(__file__).resolve().parents[1]
STILL = ROOT.parent / "shared" / "data" / "raw" / "canon550d_colorchart.dng"
EXAMPLE = ROOT / "examples" / "colorchart_pan.MLV"


def make_clip(path: Path, frames: int, width: int = 1600, height: int = 900) -> None:
    mosaic, info = read_dng(STILL)
    h, w = mosaic.shape
    clip = RawInfo(width=width, height=height, bits=14, black=info.black, white=info.white, cfa=info.cfa,
                   color_matrix=info.color_matrix, fps=25.0, camera=Camera(make="Canon", model="Canon EOS 550D"))
    with MLVWriter(path, clip) as mlv:
        for i in range(frames):
            t = i / max(1, frames - 1)
            x = int((w - width) * (0.5 - 0.5 * np.cos(np.pi * t))) // 2 * 2
            y = int((h - height) * (0.5 + 0.4 * np.sin(2 * np.pi * t))) // 2 * 2
            mlv.write_frame(np.ascontiguousarray(mosaic[y : y + height, x : x + width]), number=i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "pan1600.MLV"
        make_clip(src, args.frames)
        for mode in ("stable", "rvd"):
            for refine in ("off", "blocks"):  # blocks (the default) runs the network once per frame
                out = Path(td) / f"{mode}-{refine}.rvd"
                t0 = time.perf_counter()
                res = encode(src, out, EncodeOptions(render=mode, refine=refine))
                dt = time.perf_counter() - t0
                s = RvdFile(out).sizes()
                key = f"encode_1600x900_{mode}_refine-{refine}"
                results[key] = {
                    "frames": res.frames, "seconds": round(dt, 2), "fps": round(res.frames / dt, 2),
                    "bits_per_pixel": round(s["bits_per_pixel"], 3), "rvd_bytes": s["file_bytes"],
                    "side_info_bytes": s["side_info_bytes"], "mlv_bytes": src.stat().st_size,
                }
                print(key, results[key], flush=True)
        out = Path(td) / "example.rvd"
        encode(EXAMPLE, out)
        s = RvdFile(out).sizes()
        results["example"] = {"mlv_bytes": EXAMPLE.stat().st_size, "rvd_bytes": s["file_bytes"],
                              "video_bytes": s["video_bytes"], "keyframe_bytes": s["keyframe_bytes"],
                              "ratio": round(EXAMPLE.stat().st_size / s["file_bytes"], 2),
                              "bits_per_pixel": round(s["bits_per_pixel"], 3)}
        print("example", results["example"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
