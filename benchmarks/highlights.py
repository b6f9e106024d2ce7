"""Highlights: black-subtracted PSNR inside and outside the sRGB's clipped regions.

Where the sRGB is clipped (any channel at 250 or more of 255, at half resolution: any of a
packed pixel's 2x2 sRGB pixels), the RAW above the clip point can come only from the RAW
references (the keyframe, the previous frame), not from the sRGB. For each clip of an
RVD-layout split, the given sRGB goes through the default H.265 round trip (CRF 16) and
the decoder's own chain runs from frame 0 with each model, in the paper's mode (the network
alone, keyframe calibration) and with block refinement chosen against the true RAW (the
default encode), beside global-fit. Reported per clip and method, over the predicted
frames: PSNR inside the mask, outside it, and overall, and the mask's share of pixels.

    python benchmarks/highlights.py data/scenarios/stable/test [--match clipped] [--frames 32]
                                    [--model fagdn-v2 --model fagdn-default] [--fusion off,key-fusion]
                                    [--calibration keyframe,per-frame,adaptive,adaptive:0.5] [--refine weights,blocks]
                                    [--json out.json]

Each network runs with and without the overexposure-mask fusion of the keyframe
(``rawvid.highlights``, what files record as ``"highlights": "key-fusion"``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from clips import load_chain_clip
from rawvid.chain import fit_own_map
from rawvid.codec import network_method, predict_frame
from rawvid.dataset import RVDLayout
from rawvid.highlights import MODE as HIGHLIGHTS
from rawvid.methods import GlobalFit
from rawvid.sideinfo import ADAPT_GAIN_DB, adapt_map
from rawvid.metrics import psnr
from rawvid.weights import DEFAULT_MODEL

#: an sRGB value at or above this (of 255) counts as clipped
CLIP_LEVEL = 250


def clipped_mask(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 sRGB -> H/2 x W/2 bool: a packed pixel any of whose 2x2 sRGB pixels is clipped."""
    hot = rgb.max(axis=2) >= CLIP_LEVEL
    h, w = hot.shape
    return hot[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))


def region_mse(planes: np.ndarray, truth: np.ndarray, mask: np.ndarray, black: int, white: int) -> tuple:
    """Squared-error sums and sample counts (normalised, black-subtracted) inside and outside ``mask``."""
    err = ((planes.astype(np.float64) - truth.astype(np.float64)) / (white - black)) ** 2
    inside = err[:, mask]
    return float(inside.sum()), inside.size, float(err.sum() - inside.sum()), err.size - inside.size


def run_chain(method, raws, srgbs, truths, masks, info, refine: bool, calibrated: bool | float = False,
              gains: bool = False) -> dict:
    """PSNR inside / outside the masks / overall over the predicted frames, chained as decode runs.

    ``calibrated``: True, each frame's own map (fitted on its true RAW, float16 as stored) calibrates
    the method before it predicts, as ``--calibration per-frame`` files do; a number, adaptive
    calibration at that threshold (dB), as the encoder's ``--calibration adaptive``. ``gains``: block
    refinement with block gains (``--refine blocks``; without: ``--refine weights``)."""
    method.keyframe(raws[0], srgbs[0])
    in_force, changes = None, 0
    prev_raw, prev_srgb = raws[0], srgbs[0]
    si = ni = so = no = 0.0
    per_frame = []
    for t in range(1, len(raws)):
        gmap = None
        if calibrated is True:
            gmap = fit_own_map(srgbs[t], raws[t])[0]
        elif calibrated is not False:  # adaptive, at this threshold (dB): the encoder's rule
            in_force, _, changed = adapt_map(method, in_force, srgbs[t], raws[t], calibrated)
            gmap, changes = in_force, changes + changed
        planes, out, _ = predict_frame(method, prev_raw, prev_srgb, srgbs[t], info, gmap,
                                       target=raws[t] if refine else None, gains=gains)
        a, b, c, d = region_mse(planes, truths[t], masks[t], info.black, info.white)
        si, ni, so, no = si + a, ni + b, so + c, no + d
        per_frame.append(psnr((planes.astype(np.float64) - info.black) / (info.white - info.black),
                              (truths[t].astype(np.float64) - info.black) / (info.white - info.black)))
        prev_raw, prev_srgb = out, srgbs[t]

    def db(s: float, n: float) -> float | None:
        return None if n == 0 else float(10 * np.log10(n / max(s, 1e-30)))
    return {"inside": db(si, ni), "outside": db(so, no), "all": db(si + so, ni + no),
            "psnr_black_mean_of_frames": float(np.mean(per_frame)), "per_frame": [float(v) for v in per_frame],
            "maps_stored": len(per_frame) if calibrated is True else changes}


def longest_run_under(curve: list[float], base: list[float]) -> int:
    """The most consecutive frames on which ``curve`` is under ``base`` (issue 11: at most 3 under global-fit)."""
    run = best = 0
    for a, b in zip(curve, base):
        run = run + 1 if a < b else 0
        best = max(best, run)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--match", default="", help="only clips whose name contains this")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--model", action="append", help="weights (repeatable; default: the shipped model)")
    ap.add_argument("--fusion", default=f"off,{HIGHLIGHTS}",
                    help=f"the networks' highlight fusion: off, {HIGHLIGHTS} or both (comma-separated)")
    ap.add_argument("--calibration", default="keyframe,adaptive",
                    help="the default mode's calibration, comma-separated: keyframe, per-frame, adaptive "
                         f"(the encoder's auto, at {ADAPT_GAIN_DB} dB) or adaptive:DB")
    ap.add_argument("--refine", default="weights",
                    help="the default mode's refinement, comma-separated: weights (label 'refined'), blocks "
                         "(weights and block gains, label 'refined+gains')")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = args.model or [DEFAULT_MODEL]
    fusions = [f for f in args.fusion.split(",") if f]
    if any(f not in ("off", HIGHLIGHTS) for f in fusions):
        ap.error(f"--fusion: off or {HIGHLIGHTS}")
    calibrations = []  # False: keyframe, True: per-frame, a number: adaptive at that threshold (dB)
    for c in args.calibration.split(","):
        if c in ("keyframe", "per-frame"):
            calibrations.append(c == "per-frame")
        elif c.startswith("adaptive"):
            calibrations.append(float(c.partition(":")[2] or ADAPT_GAIN_DB))
        else:
            ap.error("--calibration: keyframe, per-frame, adaptive or adaptive:DB")
    if any(r not in ("weights", "blocks") for r in args.refine.split(",")):
        ap.error("--refine: weights or blocks")
    refines = ["refined" if r == "weights" else "refined+gains" for r in args.refine.split(",")]
    layout = RVDLayout.open(args.split)
    clips = []
    for video in layout.videos:
        if args.match not in video.name:
            continue
        clip = load_chain_clip(layout, video, args.frames, args.crf)
        info, srgbs, raws, truths, noise = clip.info, clip.srgbs, clip.raws, clip.truths, clip.noise
        masks = [clipped_mask(x) for x in clip.rgbs]
        row = {"clip": video.name, "frames": len(raws),
               "clipped_share": float(np.mean([m.mean() for m in masks[1:]])), "methods": {}}
        runs = [("global-fit", None, "alone", "off", False)] + [
            (f"{m} {mode}" + ("" if fusion == "off" else f" {fusion}")
             + ("" if pf is False else " per-frame" if pf is True else f" adaptive:{pf:g}"), m, mode, fusion, pf)
            for m in models for mode in ["alone"] + refines for fusion in fusions
            for pf in ([False] if mode == "alone" else calibrations)]  # maps need every frame's RAW: not alone
        for label, model, mode, fusion, pf in runs:
            method = GlobalFit() if model is None else network_method(model, info.width, info.height)
            method.unclip = noise  # as the encoder and decoder run it
            method.highlights = None if fusion == "off" else fusion
            row["methods"][label] = run_chain(method, raws, srgbs, truths, masks, info, mode != "alone", pf,
                                              mode == "refined+gains")
            r = row["methods"][label]
            r["longest_run_under_global_fit"] = longest_run_under(r["per_frame"], row["methods"]["global-fit"]["per_frame"])
            print(f"{video.name:34s} clipped {100 * row['clipped_share']:5.1f}%  {label:28s} inside "
                  f"{r['inside'] or float('nan'):6.2f}  outside {r['outside']:6.2f}  all {r['all']:6.2f}  "
                  f"under global-fit {r['longest_run_under_global_fit']:3d} frames in a row  maps {r['maps_stored']}",
                  flush=True)
        clips.append(row)
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "crf": args.crf,
                                         "clip_level": CLIP_LEVEL, "models": models, "fusions": fusions,
                                         "calibrations": args.calibration.split(","),
                                         "refines": args.refine.split(","),
                                         "clips": clips}, indent=1))


if __name__ == "__main__":
    main()
