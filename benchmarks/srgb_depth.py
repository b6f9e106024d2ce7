"""Would a 10-bit sRGB track lift the de-rendering's ceiling? (issue 10 item 7: the sRGB track's cost)

The sRGB track is 8-bit 4:4:4 H.265. On a clean 14-bit sensor the de-rendering stays several dB
under the noise floor, and 8 bits after the sRGB curve could be what caps it. This renders each
clip's first frames with LibRaw at 16 bits (the encoder's `stable` render, ``output_bps=16``),
codes them with x265 as 8-bit (``yuv444p``, the track as it is; the 16-bit render rounded, so
that only the depth differs) and as 10-bit 4:4:4 (``yuv444p10le``) at the same CRFs, and fits the keyframe's global map (rawvid's global-fit:
4x4 affine plus curves) on the decoded frame 0 against its true RAW; reported: the track's bits
per pixel and the black-subtracted PSNR of global-fit on frames 1..N-1.

    cd benchmarks && python srgb_depth.py ../data/synth/stable/test --frames 8 --crfs 16,24,32 \\
        --json results/srgb_depth_test.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import rawpy

from rawvid.bayer import raw_planes, srgb_half
from rawvid.dataset import RVDLayout
from rawvid.dng import encode_dng
from rawvid.isp import render_params
from rawvid.methods import fit_global_map
from rawvid.metrics import psnr
from rawvid.video import ffmpeg_exe

#: (ffmpeg input pixel format, x265 pixel format, full scale) per track depth
DEPTHS = {8: ("rgb24", "yuv444p", 255.0), 10: ("rgb48le", "yuv444p10le", 65535.0)}
SCALE = "accurate_rnd+full_chroma_int"


def render16(mosaic: np.ndarray, info) -> np.ndarray:
    """The encoder's stable render at 16 bits (H x W x 3 uint16), padded to the mosaic's size."""
    params = {**render_params("stable"), "output_bps": 16}
    with rawpy.imread(io.BytesIO(encode_dng(mosaic, info))) as raw:
        rgb = raw.postprocess(**params)
    out = np.zeros((*mosaic.shape, 3), np.uint16)
    h, w = min(mosaic.shape[0], rgb.shape[0]), min(mosaic.shape[1], rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def roundtrip(frames: list[np.ndarray], crf: int, depth: int) -> tuple[int, list[np.ndarray]]:
    """Bytes of the x265 track at ``depth`` bits and its decoded frames (H x W x 3 float in [0, 1])."""
    pin, pfmt, full = DEPTHS[depth]
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "v.mkv")
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", pin, "-s", f"{w}x{h}",
                        "-r", "30", "-i", "-", "-vf", f"scale=out_color_matrix=bt709:out_range=full:flags={SCALE}",
                        "-c:v", "libx265", "-preset", "medium", "-crf", str(crf), "-x265-params",
                        "log-level=error:range=full", "-pix_fmt", pfmt, path],
                       input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
        size = os.path.getsize(path)
        out = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", path, "-vf",
                              f"scale=in_color_matrix=bt709:in_range=full:flags={SCALE}", "-f", "rawvideo",
                              "-pix_fmt", pin, "-"], capture_output=True, check=True).stdout
    arr = np.frombuffer(out, np.uint8 if depth == 8 else np.dtype("<u2")).reshape(-1, h, w, 3)
    return size, [a.astype(np.float32) / np.float32(full) for a in arr]


def global_fit_psnr(decoded: list[np.ndarray], raws: list[np.ndarray]) -> float:
    """Mean black-subtracted PSNR of frames 1.. under the global map fitted on frame 0."""
    halves = [srgb_half(d * 255.0) for d in decoded]  # srgb_half scales by 1/255
    gmap = fit_global_map(halves[0], raws[0])
    return float(np.mean([psnr(np.clip(gmap.apply(s), 0.0, 1.0), r) for s, r in zip(halves[1:], raws[1:])]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--crfs", default="16,24,32")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    crfs = [int(c) for c in args.crfs.split(",")]
    layout = RVDLayout.open(args.split)
    rows = []
    for video in layout.videos:
        info = layout.video_info(video)
        mosaics = [layout.read_raw(video, f) for f in video.frames[:args.frames]]
        raws = [raw_planes(m, info) for m in mosaics]
        r16 = [render16(m, info) for m in mosaics]
        tracks = {8: [np.round(x / 257.0).astype(np.uint8) for x in r16], 10: r16}
        for crf in crfs:
            row = {"clip": video.name, "crf": crf}
            for depth, frames in tracks.items():
                size, decoded = roundtrip(frames, crf, depth)
                row[f"bpp_{depth}"] = 8 * size / (info.width * info.height * len(frames))
                row[f"global_fit_{depth}"] = global_fit_psnr(decoded, raws)
            rows.append(row)
            print(f"{video.name[:28]:28s} CRF {crf}: 8-bit {row['bpp_8']:.4f} bpp {row['global_fit_8']:.2f} dB, "
                  f"10-bit {row['bpp_10']:.4f} bpp {row['global_fit_10']:.2f} dB", flush=True)
    summary = {str(crf): {"bpp_ratio_mean": float(np.mean([r["bpp_10"] / r["bpp_8"] for r in rows if r["crf"] == crf])),
                          "global_fit_gain_db_mean": float(np.mean([r["global_fit_10"] - r["global_fit_8"]
                                                                    for r in rows if r["crf"] == crf])),
                          "global_fit_gain_db_max": float(max(r["global_fit_10"] - r["global_fit_8"]
                                                              for r in rows if r["crf"] == crf))} for crf in crfs}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "crfs": crfs,
                                         "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
