"""How far above keyframe global-fit can a predictor from the decoded sRGB get? (issue 11's bar)

Issue 11 asks the network alone (the paper's mode, ``--refine off``) to be at least 1 dB above
keyframe global-fit on every clip. This measures what is there to gain, per clip, with two
oracles that are fitted on the TRUE RAW of each frame (so no decoder can do as well):

* ``frame map``: the frame's own global map (4x4 affine plus curves) fitted on its true RAW,
  instead of the keyframe's: what perfect per-frame calibration would give.
* ``block affine``: on top of it, per 32x32 Bayer block (16x16 per plane) an affine map of the
  four predicted planes to each true plane, least squares on the truth (20 numbers a block):
  every local colour, gain and offset error the global map leaves, corrected with the answer.

Beside them: the clip's noise floor (shot and read noise measured on frame 0, as the encoder
stores it) and, given ``--alone`` (an ``alone_variants.py`` JSON of the same clips and frames),
the network alone. Where global-fit is already at the noise floor, the error left is the noise
of the frame, which the H.265 sRGB no longer carries and nothing else predicts (the keyframe's
noise is another draw): the block oracle's gain there bounds what any predictor can add.

Same protocol as ``alone_variants.py``: the given sRGB through H.265 CRF 16, chained frames
1..N-1 as decode writes them, black-subtracted PSNR against the true RAW.

    python benchmarks/alone_bound.py data/scenarios/stable/test [--frames 32]
        [--alone benchmarks/results/alone_variants_scenarios.json] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from clips import load_chain_clip
from rawvid.bayer import denormalise
from rawvid.chain import predict_frame
from rawvid.dataset import RVDLayout
from rawvid.methods import GlobalFit, fit_global_map
from rawvid.rawlayer import psnr_black

#: the block oracle's block, per packed plane (32x32 Bayer samples)
BLOCK = 16


def block_affine(pred: np.ndarray, truth: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """``pred`` (4 x h x w) mapped per block by the affine map of its 4 planes that fits ``truth`` best."""
    c, h, w = pred.shape
    out = np.empty_like(pred, dtype=np.float64)
    for y in range(0, h, block):
        for x in range(0, w, block):
            p = pred[:, y:y + block, x:x + block]
            a = np.concatenate([p.reshape(c, -1).T, np.ones((p[0].size, 1))], 1).astype(np.float64)
            t = truth[:, y:y + block, x:x + block].reshape(c, -1).T.astype(np.float64)
            coef, *_ = np.linalg.lstsq(a, t, rcond=None)
            out[:, y:y + block, x:x + block] = (a @ coef).T.reshape(p.shape)
    return out


def clip_bound(clip) -> dict:
    """Per-frame PSNR of keyframe global-fit and of the two oracles (frames 1..N-1)."""
    info = clip.info
    span = info.white - info.black
    gf = GlobalFit()
    gf.unclip = clip.noise
    gf.keyframe(clip.raws[0], clip.srgbs[0])
    key_map = gf.map
    rows: dict[str, list[float]] = {"global-fit": [], "frame map": [], "block affine": []}
    for t in range(1, len(clip.raws)):
        true_int = clip.truths[t]
        gf.calibrate(key_map)
        planes, _, _ = predict_frame(gf, clip.raws[t - 1], clip.srgbs[t - 1], clip.srgbs[t], info)
        rows["global-fit"].append(psnr_black(planes, true_int, info.black, info.white))
        own = fit_global_map(clip.srgbs[t], clip.raws[t])
        planes, _, _ = predict_frame(gf, clip.raws[t - 1], clip.srgbs[t - 1], clip.srgbs[t], info, gmap=own)
        rows["frame map"].append(psnr_black(planes, true_int, info.black, info.white))
        # fitted to the truth as the network sees it, but not clipped at black (the bench's protocol)
        fitted = block_affine(gf.base(clip.srgbs[t]), (true_int.astype(np.float64) - info.black) / span)
        planes = denormalise(fitted, info.black, info.white, info.bits)
        rows["block affine"].append(psnr_black(planes, true_int, info.black, info.white))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--alone", type=Path, help="alone_variants.py JSON of the same clips: its 'none' rows")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    alone = {}
    if args.alone:
        alone = {c["clip"]: c["none"] for c in json.loads(args.alone.read_text())["clips"]}
    layout = RVDLayout.open(args.split)
    out = []
    for video in layout.videos:
        clip = load_chain_clip(layout, video, args.frames, args.crf)
        rows = clip_bound(clip)
        if video.name in alone:
            rows["network alone"] = alone[video.name][:len(rows["global-fit"])]
        means = {k: float(np.mean(v)) for k, v in rows.items()}
        floor = clip.noise.floor_psnr(clip.raws[0])
        g = means["global-fit"]
        out.append({"clip": video.name, "frames": len(clip.raws), "noise_floor_db": floor, "means": means,
                    "frames_psnr": rows})
        print(f"{video.name[:34]:34s} floor {floor:6.2f}  global-fit {g:6.2f}  "
              + "  ".join(f"{k} {m - g:+.2f}" for k, m in means.items() if k != "global-fit"), flush=True)
    at_floor = [c for c in out if c["means"]["global-fit"] >= c["noise_floor_db"] - 0.5]
    summary = {
        "clips": len(out),
        "block_oracle_under_1db": [c["clip"] for c in out
                                   if c["means"]["block affine"] - c["means"]["global-fit"] < 1.0],
        "global_fit_within_0.5db_of_floor": [c["clip"] for c in at_floor],
        "block_oracle_gain_at_floor_db": [round(c["means"]["block affine"] - c["means"]["global-fit"], 3)
                                          for c in at_floor],
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "crf": args.crf,
                                         "block": BLOCK, "summary": summary, "clips": out}, indent=1))


if __name__ == "__main__":
    main()
