"""The paper's mode with decoder-side changes that need no side information (issue 11 item 2).

The network alone (``--refine off``, keyframe calibration: what a ``--video`` / ``--raw`` user
gets) runs chained from frame 0 as decode runs it, with the highlight fusion, beside keyframe
global-fit. Each variant changes what the decoder does with what it already has (the keyframe,
the clip's noise model, the global map), so none needs anything stored:

* ``none``: the decoder as it is.
* ``clamp:K``: where the sRGB is not clipped, the network may depart from global-fit by at most
  K times the global fit's own error on the keyframe (its RMS per channel and level, 16 level bins):
  a consistency check against the sRGB, for frames where the network trusts a wrong reference.
* ``wiener:F``: the keyframe the chain and the keyframe reference start from is denoised: its
  residual against global-fit keeps its low frequencies (Gaussian, sigma 1) and its high
  frequencies are shrunk by ``max(0, 1 - F var_noise / var_local)`` (the clip's noise model; local
  variance over a Gaussian window of sigma 2); clipped pixels keep the RAW. The references' noise,
  which nothing in the current frame predicts, is what the network carries into dark clips.
* ``blur:S``: the same with the residual's high frequencies dropped whole (Gaussian sigma S).

Reported per clip: mean black-subtracted PSNR over the predicted frames and the longest run of
frames under global-fit (issue 11: at most 3).

    python benchmarks/alone_variants.py data/scenarios/stable/test [--frames 32]
        [--variants none,clamp:3,wiener:0.5,blur:1] [--model fagdn-v2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from clips import load_chain_clip
from highlights import longest_run_under
from rawvid.codec import network_method, predict_frame
from rawvid.dataset import RVDLayout
from rawvid.highlights import MODE as HIGHLIGHTS
from rawvid.methods import GlobalFit
from rawvid.metrics import psnr
from rawvid.weights import DEFAULT_MODEL

#: a half-resolution sRGB pixel at or above this (any channel) is clipped: left to the network
HOT = 0.98
LEVEL_BINS = 16


def fit_error_profile(raw: np.ndarray, base: np.ndarray, srgb: np.ndarray) -> np.ndarray:
    """4 x LEVEL_BINS: the keyframe's global-fit RMS error per channel and predicted level."""
    ok = srgb.max(0) < HOT
    prof = np.zeros((4, LEVEL_BINS))
    for c in range(4):
        b = np.minimum((base[c] * LEVEL_BINS).astype(int), LEVEL_BINS - 1)
        e2 = (raw[c] - base[c]) ** 2
        overall = np.sqrt(e2[ok].mean()) if ok.any() else 0.0
        for i in range(LEVEL_BINS):
            m = ok & (b == i)
            prof[c, i] = np.sqrt(e2[m].mean()) if m.sum() > 200 else overall
    return prof


def clamp(pred: np.ndarray, base: np.ndarray, srgb: np.ndarray, prof: np.ndarray, k: float) -> np.ndarray:
    """The network held within k x the keyframe's global-fit error of global-fit, outside clipped pixels."""
    b = np.minimum((base * LEVEL_BINS).astype(int), LEVEL_BINS - 1)
    sig = np.stack([prof[c][b[c]] for c in range(4)]) + 1e-5
    out = base + np.clip(pred - base, -k * sig, k * sig)
    return np.where(srgb.max(0)[None] >= HOT, pred, out).astype(np.float32)


def denoise_key(raw: np.ndarray, base: np.ndarray, srgb: np.ndarray, noise, kind: str, p: float) -> np.ndarray:
    """The keyframe with its residual against global-fit denoised (``wiener``: factor p; ``blur``: sigma p)."""
    r = (raw - base).astype(np.float32)
    sigma = 1.0 if kind == "wiener" else p
    lo = np.stack([cv2.GaussianBlur(r[c], (0, 0), sigma) for c in range(4)])
    if kind == "wiener":
        hf = r - lo
        var_n = noise.variance(raw).astype(np.float32)
        var_l = np.stack([cv2.GaussianBlur(hf[c] ** 2, (0, 0), 2.0) for c in range(4)])
        lo = lo + np.clip(1 - p * var_n / np.maximum(var_l, 1e-12), 0, 1) * hf
    hot = (srgb.max(0) >= HOT) | (raw.max(0) >= HOT)
    return np.where(hot[None], raw, base + lo).astype(np.float32)


def run(method, clip, variant: str) -> list[float]:
    """Per-frame black-subtracted PSNR of the chain from frame 0 with one variant."""
    kind, _, arg = variant.partition(":")
    info, raws, srgbs = clip.info, clip.raws, clip.srgbs
    key = raws[0]
    if kind in ("wiener", "blur"):
        g = GlobalFit()
        g.keyframe(raws[0], srgbs[0])
        key = denoise_key(raws[0], g.base(srgbs[0]), srgbs[0], clip.noise, kind, float(arg))
    method.keyframe(key, srgbs[0])
    prof = fit_error_profile(raws[0], method.base(srgbs[0]), srgbs[0]) if kind == "clamp" else None
    if prof is not None:  # the clamp between the network and what decode does with its output
        predict = method.predict
        method.predict = lambda prev_raw, prev_srgb, srgb: clamp(
            np.clip(predict(prev_raw, prev_srgb, srgb), 0.0, 1.0), method.base(srgb), srgb, prof, float(arg))
    prev_raw, prev_srgb, out = key, srgbs[0], []
    span = info.white - info.black
    for t in range(1, len(raws)):
        planes, prev_raw, _ = predict_frame(method, prev_raw, prev_srgb, srgbs[t], info)
        out.append(psnr((planes.astype(np.float64) - info.black) / span,
                        (clip.truths[t].astype(np.float64) - info.black) / span))
        prev_srgb = srgbs[t]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--variants", default="none,clamp:3,wiener:0.5,blur:1")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = args.variants.split(",")
    layout = RVDLayout.open(args.split)
    rows = []
    for video in layout.videos:
        clip = load_chain_clip(layout, video, args.frames, args.crf)
        gf = GlobalFit()
        gf.unclip = clip.noise
        row = {"clip": video.name, "frames": len(clip.raws), "global-fit": run(gf, clip, "none")}
        line = f"{video.name[:32]:32s} global-fit {np.mean(row['global-fit']):6.2f}"
        for v in variants:
            m = network_method(args.model, clip.info.width, clip.info.height)
            m.unclip, m.highlights = clip.noise, HIGHLIGHTS
            row[v] = run(m, clip, v)
            line += (f" | {v} {np.mean(row[v]):6.2f} ({np.mean(row[v]) - np.mean(row['global-fit']):+5.2f},"
                     f" {longest_run_under(row[v], row['global-fit']):2d} under)")
        print(line, flush=True)
        rows.append(row)
    means = {k: float(np.mean([np.mean(r[k]) for r in rows])) for k in ["global-fit", *variants]}
    print("mean", " ".join(f"{k} {v:.3f}" for k, v in means.items()))
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "crf": args.crf,
                                         "model": args.model, "variants": variants, "means": means,
                                         "clips": rows}, indent=1))


if __name__ == "__main__":
    main()
