"""Highlights: where the sRGB is clipped, part of the RAW comes from the keyframe (overexposure-mask fusion).

Above the sRGB's clip point the sRGB says only "at least this bright"; the network, trained on
few clipped pixels, predicts about that level. The keyframe's true RAW, warped onto the frame
along the keyframe flow the network already computes, knows the highlights wherever the
keyframe saw them. After Overexposure Mask Fusion (AIM 2022 reverse ISP): two predictions, one
for well-exposed regions (the network's) and one for overexposed ones (the network's averaged
with the exposure-scaled keyframe), blended by a soft mask computed from the sRGB. The keyframe
is trusted only where it does not fall more than ``AGREE`` under the network (a keyframe warped
from the wrong place into a clipped region is usually darker: measured on rotations and orbits
that leave the keyframe's view), and only half (two estimates with independent errors).

Measured by ``benchmarks/highlights.py`` on the scenario clips (figures in the README, "Unseen
cameras, large motion and highlights").

The same numpy code runs in the encoder and the decoder, after either runtime's network, so the
chain stays closed; files record it (``"highlights": "key-fusion"``) and files without the
record decode as they were made.
"""
from __future__ import annotations

import numpy as np

#: the manifest's name for this fusion
MODE = "key-fusion"
#: the soft mask: 0 below MASK_LO, 1 above MASK_HI, of the brightest sRGB channel at half size
#: (area-averaged, so a 2 x 2 quad with one clipped pixel stays under MASK_HI)
MASK_LO, MASK_HI = 0.90, 0.985
#: the keyframe is used where it is at least the network's prediction minus this (normalised RAW)
AGREE = 0.05
#: its share of the overexposed prediction where it is used
KEY_SHARE = 0.5
#: unmasked, in-view samples needed to measure the exposure ratio (fewer: the ratio is 1)
MIN_SAMPLES = 100
#: samples darker than this (in the warped keyframe) do not vote on the exposure ratio
RATIO_FLOOR = 0.05
#: the exposure ratio's samples: every RATIO_STRIDE-th row and column
RATIO_STRIDE = 4


def overexposed_mask(srgb: np.ndarray) -> np.ndarray:
    """1 x h x w soft mask in [0, 1] from the half-size sRGB (3 x h x w, [0, 1]): its brightest channel."""
    top = srgb.max(axis=0)
    return np.clip((top - MASK_LO) / (MASK_HI - MASK_LO), 0.0, 1.0).astype(np.float32)[None]


def exposure_ratio(pred: np.ndarray, ref: np.ndarray) -> float:
    """Median of pred / ref (C x N samples) where ref is not dark: the exposure change since the
    keyframe (1 when too few samples vote)."""
    vote = ref > RATIO_FLOOR
    if int(vote.sum()) < MIN_SAMPLES:
        return 1.0
    return float(np.median(pred[vote] / ref[vote]))


def fuse(pred: np.ndarray, srgb: np.ndarray, key_raw: np.ndarray, key_flow: np.ndarray) -> np.ndarray:
    """The network's prediction (4 x h x w, normalised) with the keyframe blended into its clipped regions.

    ``key_flow``: backward flow (h x w x 2) from this frame to the keyframe, whose true RAW is
    ``key_raw``. Only the masked pixels are warped, and the exposure ratio is measured on every
    ``RATIO_STRIDE``-th row and column outside the mask: a few ms where a whole warp took 60.
    """
    from .flow import warp_points  # not at import: the manifest's validation imports MODE from here

    mask = overexposed_mask(srgb)[0]
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return pred
    gy, gx = np.mgrid[0 : mask.shape[0] : RATIO_STRIDE, 0 : mask.shape[1] : RATIO_STRIDE]
    free = mask[gy, gx] == 0
    gy, gx = gy[free], gx[free]
    # one warp of the keyframe at both sets of pixels: the ratio's samples, then the masked ones
    both, valid = warp_points(key_raw, key_flow, np.concatenate([gy, ys]), np.concatenate([gx, xs]))
    n = len(gy)
    ref, ok = both[:, n:], valid[n:]
    ratio = exposure_ratio(pred[:, gy, gx][:, valid[:n]], both[:, :n][:, valid[:n]])
    ref = np.clip(ref * ratio, 0.0, 1.0)
    here = pred[:, ys, xs]
    trust = (ref >= here - AGREE).all(axis=0) & ok
    wgt = (mask[ys, xs] * (KEY_SHARE * trust)).astype(np.float32)
    out = pred.astype(np.float32, copy=True)
    out[:, ys, xs] = here + wgt * (ref - here)
    return out
