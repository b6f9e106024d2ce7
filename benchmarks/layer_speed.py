"""Encode and decode speed at 1600x900 with a RAW layer (and without, in the same run, for the ratio).

Builds the 1600x900 14-bit pan of encode_speed.py (real Canon 550D sensor pixels), then
encodes it with the shipped model in each mode and decodes it back to DNGs, timing both
end to end (sRGB video, pilot, chain, x265/FFV1, DNG writing all included).

    python benchmarks/layer_speed.py [--frames 24] [--match 'target 45'] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from encode_speed import make_clip

from rawvid.codec import DecodeOptions, EncodeOptions, LayerSettings, decode, encode
from rawvid.container import RvdFile
from rawvid.srgb_pilot import CANDIDATE_CRFS
from rawvid.video import VideoSettings

MODES = {
    "paper-default (no layer, sRGB CRF 16)": EncodeOptions(),
    "paper-default, lossy keyframes (--keyframe-psnr auto)": EncodeOptions(
        raw_layer=LayerSettings(keyframes_only=True)),
    "target 45 dB (auto predictor, sRGB CRF 32)": EncodeOptions(video=VideoSettings.make(crf=32),
                                                                 raw_layer=LayerSettings(target_psnr=45.0)),
    "target 45 dB (auto predictor, sRGB CRF chosen: rawvid encode's default)": EncodeOptions(
        video=VideoSettings.make(crf=32), raw_layer=LayerSettings(target_psnr=45.0), srgb_crfs=CANDIDATE_CRFS),
    "target 45 dB, chain predictor": EncodeOptions(video=VideoSettings.make(crf=32),
                                                   raw_layer=LayerSettings(target_psnr=45.0, predictor="chain")),
    "lossless RAW (FFV1, auto predictor)": EncodeOptions(video=VideoSettings.make(crf=32),
                                                         raw_layer=LayerSettings(codec="ffv1")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--match", default=None, help="only the modes whose name contains this")
    args = ap.parse_args()
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "frames": args.frames, "size": "1600x900"}
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "pan1600.MLV"
        make_clip(src, args.frames)
        for name, opts in MODES.items():
            if args.match and args.match not in name:
                continue
            out = Path(td) / "clip.rvd"
            t0 = time.perf_counter()
            enc = encode(src, out, opts, force=True)
            t_enc = time.perf_counter() - t0
            frames = Path(td) / "frames"
            shutil.rmtree(frames, ignore_errors=True)
            t0 = time.perf_counter()
            dec = decode(out, frames, DecodeOptions())
            t_dec = time.perf_counter() - t0
            s = RvdFile(out).sizes()
            lay = RvdFile(out).manifest.get("raw_layer") or {}
            results[name] = {"encode_fps": round(enc.frames / t_enc, 3), "decode_fps": round(dec.frames / t_dec, 3),
                             "bits_per_pixel": round(s["bits_per_pixel"], 4),
                             "raw_part_bits_per_pixel": round(s["raw_part_bits_per_pixel"], 4),
                             "predictor": (lay.get("predictor") or {}).get("mode"),
                             "srgb_crf": RvdFile(out).manifest["video"].get("crf"),
                             "decode_seconds": {k: round(v, 2) for k, v in dec.timings.items()}}
            print(name, results[name], flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
