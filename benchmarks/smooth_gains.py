"""Block gains as stored (piecewise constant) against the same side information read as a smooth field.

The default refinement (``--refine blocks``) scales each 32x32 block's four Bayer channels by
one of ``rawvid.refine.GAINS``, constant over the block. The corrections it makes (a rendering's
local tone, a colour cast) vary smoothly, so the same one index per block and channel could be
read as control points at the block centres, interpolated bilinearly. Open loop, per frame of
the default chain (adaptive calibration, block weights and gains as the encoder runs them, the
highlight fusion), on the blend after the weights:

* ``weights``: no gains; ``piecewise``: the stored gains (what decode does);
* ``bilinear``: the same indices interpolated between block centres;
* ``fitted``: control points fitted by least squares to the true RAW for the bilinear field,
  rounded to the nearest level (what an encoder for it would store: the same bytes);
* ``unquantised``: the fitted control points before rounding (a bound).

    python benchmarks/smooth_gains.py data/scenarios/stable/test [--frames 24] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from clips import load_chain_clip
from rawvid.codec import network_method
from rawvid.dataset import RVDLayout
from rawvid.highlights import MODE as HIGHLIGHTS
from rawvid.metrics import psnr
from rawvid.refine import BLOCK, GAINS, apply_gains, blend, choose_gains, choose_weights, grid_shape
from rawvid.sideinfo import ADAPT_GAIN_DB, adapt_map
from rawvid.weights import DEFAULT_MODEL

LEVELS = np.asarray(GAINS)


def axis_weights(n: int, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel along one axis: the control point before it, the one after, the weight of the latter."""
    centres = np.arange(nb) * BLOCK + (BLOCK - 1) / 2
    if nb == 1:
        return np.zeros(n, int), np.zeros(n, int), np.zeros(n)
    i0 = np.clip(np.floor((np.arange(n) - centres[0]) / BLOCK).astype(int), 0, nb - 2)
    return i0, i0 + 1, np.clip((np.arange(n) - centres[i0]) / BLOCK, 0.0, 1.0)


def corners(h: int, w: int, hb: int, wb: int):
    """The four control points of every pixel (flat indices) and their bilinear weights."""
    y0, y1, fy = axis_weights(h, hb)
    x0, x1, fx = axis_weights(w, wb)
    idx = [y[:, None] * wb + x[None, :] for y in (y0, y1) for x in (x0, x1)]
    wts = [a[:, None] * b[None, :] for a in (1 - fy, fy) for b in (1 - fx, fx)]
    return idx, wts


def interpolate(ctrl: np.ndarray, h: int, w: int) -> np.ndarray:
    """C x hb x wb control values -> C x h x w bilinear field."""
    c, hb, wb = ctrl.shape
    idx, wts = corners(h, w, hb, wb)
    flat = ctrl.reshape(c, -1)
    return sum(flat[:, i] * wt for i, wt in zip(idx, wts))


def fit_controls(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares control gains (C x hb x wb) of the bilinear field g minimising ||g x - target||^2."""
    c, h, w = x.shape
    hb, wb = grid_shape(h, w)
    idx, wts = corners(h, w, hb, wb)
    n = hb * wb
    out = np.zeros((c, n))
    for ch in range(c):
        xc, tc = x[ch].astype(np.float64), target[ch].astype(np.float64)
        a, b = np.zeros(n * n), np.zeros(n)
        for i, wi in zip(idx, wts):
            b += np.bincount(i.ravel(), (wi * xc * tc).ravel(), minlength=n)
            for j, wj in zip(idx, wts):
                a += np.bincount((i * n + j).ravel(), (wi * wj * xc * xc).ravel(), minlength=n * n)
        ridge = 1e-5 * float((xc * xc).mean()) * BLOCK * BLOCK  # towards gain 1 where a block is empty
        out[ch] = np.linalg.solve(a.reshape(n, n) + ridge * np.eye(n), b + ridge)
    return out.reshape(c, hb, wb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    layout = RVDLayout.open(args.split)
    names = ("weights", "piecewise", "bilinear", "fitted", "unquantised")
    rows = []
    for video in layout.videos:
        clip = load_chain_clip(layout, video, args.frames, args.crf)
        m = network_method(DEFAULT_MODEL, clip.info.width, clip.info.height)
        m.unclip, m.highlights = clip.noise, HIGHLIGHTS
        m.keyframe(clip.raws[0], clip.srgbs[0])
        prev_raw, prev_srgb, in_force = clip.raws[0], clip.srgbs[0], None
        res = {k: [] for k in names}
        for t in range(1, len(clip.raws)):
            srgb, truth = clip.srgbs[t], clip.raws[t]
            in_force, _, _ = adapt_map(m, in_force, srgb, truth, ADAPT_GAIN_DB)
            if in_force is not None:
                m.calibrate(in_force)
            pred = np.clip(m.predict(prev_raw, prev_srgb, srgb), 0.0, 1.0)
            base = m.base(srgb)
            out = blend(pred, base, choose_weights(pred, base, truth))
            gi = choose_gains(out, truth)
            h, w = out.shape[1:]
            ctrl = fit_controls(out, truth)
            nearest = LEVELS[np.argmin(np.abs(ctrl[..., None] - LEVELS), axis=-1)]
            piecewise = apply_gains(out, gi)
            for k, a in zip(names, (out, piecewise, out * interpolate(LEVELS[gi], h, w),
                                    out * interpolate(nearest, h, w), out * interpolate(ctrl, h, w))):
                res[k].append(psnr(np.clip(a, 0.0, 1.0), truth))
            prev_raw, prev_srgb = piecewise, srgb  # the refined frame (decode also unclips and quantises it)
        row = {"clip": video.name, **{k: float(np.mean(v)) for k, v in res.items()}}
        rows.append(row)
        print(f"{video.name[:32]:32s} " + " ".join(f"{k} {row[k]:6.2f}" for k in names), flush=True)
    means = {k: float(np.mean([r[k] for r in rows])) for k in names}
    print("mean", " ".join(f"{k} {v:.3f}" for k, v in means.items()))
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "crf": args.crf,
                                         "means": means, "clips": rows}, indent=1))


if __name__ == "__main__":
    main()
