"""Shadows: predictions clipped at black (rawvid before issue 13 item 6) against unclipped ones.

For each clip of an RVD-layout split, the given sRGB goes through the default H.265 round
trip (CRF 16) and the decoder's own chain runs from frame 0 as a default encode codes it
(the shipped network, block refinement chosen against the true RAW, keyframe calibration),
once with predictions clipped at the black level and once unclipped with the clip's noise
model (``rawvid.noise.unclip_mean``, measured on frame 0 as the encoder does). Reported per
clip, over the predicted frames: black-subtracted PSNR, the mean error (DN) of the darkest
5% of samples (by a 15x15 box-filtered truth, per packed plane), the mean error overall, and
the share of samples under black in the source and in each decode.

    python benchmarks/shadows.py data/scenarios/stable/test [--frames 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from clips import load_chain_clip
from rawvid.codec import network_method, predict_frame
from rawvid.dataset import RVDLayout
from rawvid.metrics import psnr
from rawvid.weights import DEFAULT_MODEL


def frame_stats(planes: np.ndarray, truth: np.ndarray, black: int, white: int) -> dict:
    """PSNR (black-subtracted), darkest-5% and overall mean error in DN, share under black."""
    got, t = planes.astype(np.float64), truth.astype(np.float64)
    blur = np.stack([cv2.blur(p.astype(np.float32), (15, 15)) for p in t])
    dark = blur < np.quantile(blur, 0.05)
    return {"psnr_black": psnr((got - black) / (white - black), (t - black) / (white - black)),
            "shadow_bias_dn": float((got - t)[dark].mean()), "bias_dn": float((got - t).mean()),
            "under_black": float((got < black).mean())}


def run_chain(method, raws, srgbs, truths, info) -> dict:
    """Mean frame_stats over the predicted frames, chained from frame 0 as decode runs."""
    method.keyframe(raws[0], srgbs[0])
    prev_raw, prev_srgb, rows = raws[0], srgbs[0], []
    for t in range(1, len(raws)):
        planes, out, _ = predict_frame(method, prev_raw, prev_srgb, srgbs[t], info, target=raws[t])
        rows.append(frame_stats(planes, truths[t], info.black, info.white))
        prev_raw, prev_srgb = out, srgbs[t]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    layout = RVDLayout.open(args.split)
    clips = []
    for video in layout.videos:
        clip = load_chain_clip(layout, video, args.frames, args.crf)
        info, srgbs, raws, truths, noise = clip.info, clip.srgbs, clip.raws, clip.truths, clip.noise
        row = {"clip": video.name, "noise_profile": [noise.scale, noise.offset],
               "source_under_black": float(np.mean([(t < info.black).mean() for t in truths[1:]]))}
        for variant in ("clipped", "unclipped"):
            method = network_method(DEFAULT_MODEL, info.width, info.height)
            method.unclip = noise if variant == "unclipped" else None
            row[variant] = run_chain(method, raws, srgbs, truths, info)
        clips.append(row)
        c, u = row["clipped"], row["unclipped"]
        print(f"{video.name:34s} under black: source {100 * row['source_under_black']:.2f}%, "
              f"{100 * c['under_black']:.2f}% -> {100 * u['under_black']:.2f}%; shadows {c['shadow_bias_dn']:+.2f} -> "
              f"{u['shadow_bias_dn']:+.2f} DN; PSNR {c['psnr_black']:.3f} -> {u['psnr_black']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "crf": args.crf,
                                         "model": DEFAULT_MODEL, "clips": clips}, indent=1))


if __name__ == "__main__":
    main()
