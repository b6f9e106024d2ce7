"""Sensor noise, measured from the true RAW: the model raw developers' denoisers expect.

The DNG NoiseProfile model: the noise variance of a sample at normalised level ``x``
(black-subtracted, divided by white - black) is ``S * x + O`` (shot noise grows with the
signal, read noise is the floor). rawvid measures S and O on each clip's first RAW frame,
stores them in the manifest and writes them into every decoded DNG.

The estimate: in each packed plane, the difference between a sample and the mean of its
two horizontal neighbours of the same colour has variance 1.5 sigma^2 on flat content.
Over 8x8 blocks of those differences, binned by the block's level, the 20th percentile of
block variances picks the flat blocks (texture only adds variance); corrected for the
percentile of a chi-square with 63 degrees of freedom, a least-squares line through the
bins gives S and O.

The clip's *noise floor* is the PSNR of the noisy truth against its clean signal,
``10 log10(1 / mean(S x + O))``: no codec that keeps the signal and drops the noise can
land above it, and coding above it means coding noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLOCK = 8
#: 20th percentile of chi2(63)/63 (Wilson-Hilferty), the flat blocks' variance ratio.
PCT, PCT_FACTOR = 20, 0.848
LEVEL_BINS = 24


@dataclass
class NoiseModel:
    """Variance S * x + O at normalised level x (DNG NoiseProfile)."""

    scale: float
    offset: float

    def variance(self, x: np.ndarray) -> np.ndarray:
        return self.scale * np.clip(x, 0.0, 1.0) + self.offset

    def floor_psnr(self, planes_norm: np.ndarray) -> float:
        """The noise floor of a frame (black-subtracted PSNR of the noisy truth against its clean signal)."""
        mse = float(np.mean(self.variance(planes_norm)))
        return math.inf if mse <= 0 else 10 * math.log10(1.0 / mse)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "offset": self.offset}


#: E[max(X, 0)] / sigma for X ~ N(u sigma, sigma^2): u Phi(u) + phi(u); from u = 4 on, the lift
#: h(u) - u is under 7e-6 sigma, so predictions over 4 sigma are left alone
_U = np.linspace(-1.0, 4.0, 1001)
_CLIPPED_MEAN = _U * 0.5 * (1.0 + np.vectorize(math.erf)(_U / math.sqrt(2.0))) + np.exp(-0.5 * _U * _U) / math.sqrt(2 * math.pi)


def unclip_mean(x: np.ndarray, model: NoiseModel) -> np.ndarray:
    """A prediction of the black-clipped RAW turned into one of the RAW itself, without the clip's lift.

    The network and the global fit learn from RAW clipped at the black level, so in the
    shadows they predict the mean of clipped noise, which sits above the signal's own mean
    (0.4 sigma at black). This subtracts that lift, ``sigma (h(x / sigma) - x / sigma)`` with
    ``h(u) = u Phi(u) + phi(u)``, sigma from the clip's noise at the prediction (variance
    S x + O), so dark predictions go under black (at most 0.4 sigma). One step of the exact
    inverse, on purpose: the inverse's slope is unbounded near black and would blow every
    prediction error up there (measured: the exact inverse overshot the shadows where this
    step leaves 0-0.2 DN). Normalised units; only samples under 4 sigma are touched (found
    by one comparison with the level where x = 4 sigma(x), so a bright frame costs little).
    """
    x = np.asarray(x, dtype=np.float32)
    k = float(_U[-1]) ** 2
    ks = k * model.scale
    near = x < (ks + math.sqrt(ks * ks + 4 * k * model.offset)) / 2  # x < 4 sigma(x)
    out = x.copy()
    if not near.any():
        return out
    xn = x[near]
    sigma = np.sqrt(model.variance(xn)).astype(np.float32)
    t = np.divide(xn, sigma, out=np.zeros_like(xn), where=sigma > 0)
    # linear interpolation on the table's uniform grid (np.interp's search is 4x slower here)
    pos = (np.clip(t, _U[0], _U[-1]) - _U[0]) * ((len(_U) - 1) / (_U[-1] - _U[0]))
    i = np.minimum(pos.astype(np.int64), len(_U) - 2)
    frac = pos - i
    h = _CLIPPED_MEAN[i] * (1 - frac) + _CLIPPED_MEAN[i + 1] * frac
    out[near] = xn - (h - t).astype(np.float32) * sigma
    return out


def _block_stats(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 8x8 block: mean level and variance of the second difference / 1.5 (a noise variance)."""
    d = plane[:, 1:-1] - 0.5 * (plane[:, :-2] + plane[:, 2:])
    lvl = plane[:, 1:-1]
    h, w = (d.shape[0] // BLOCK) * BLOCK, (d.shape[1] // BLOCK) * BLOCK
    d = d[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    lvl = lvl[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    return lvl.mean(axis=(1, 3)).ravel(), d.var(axis=(1, 3)).ravel() / 1.5


def estimate_noise(planes_norm: np.ndarray) -> NoiseModel:
    """S and O from one frame's packed planes (4 x h x w, normalised, float)."""
    levels, variances = [], []
    for plane in np.asarray(planes_norm, np.float64):
        lv, var = _block_stats(plane)
        levels.append(lv)
        variances.append(var)
    lv, var = np.concatenate(levels), np.concatenate(variances)
    keep = (lv > 0.002) & (lv < 0.9)  # clipped blocks have no noise to measure
    lv, var = lv[keep], var[keep]
    if lv.size < 16:
        return NoiseModel(0.0, float(np.percentile(var, PCT)) / PCT_FACTOR if var.size else 0.0)
    # a small frame has few blocks: fewer level bins, so that each still holds about 16 (with 24 bins of
    # under 8 blocks every bin was skipped and a 128x96 frame measured no noise at all)
    bins = max(1, min(LEVEL_BINS, lv.size // 16))
    edges = np.quantile(lv, np.linspace(0, 1, bins + 1))
    xs, ys, ws = [], [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (lv >= a) & (lv <= b)
        if sel.sum() < 8:
            continue
        xs.append(float(np.median(lv[sel])))
        ys.append(float(np.percentile(var[sel], PCT)) / PCT_FACTOR)
        ws.append(math.sqrt(sel.sum()))
    if len(xs) < 2:  # one level: a read-noise floor only
        return NoiseModel(0.0, float(np.percentile(var, PCT)) / PCT_FACTOR)
    x, y, w = np.array(xs), np.array(ys), np.array(ws)
    a = np.stack([x, np.ones_like(x)], axis=1) * w[:, None]
    (s, o), *_ = np.linalg.lstsq(a, y * w, rcond=None)
    if o < 0:  # no read-noise floor measurable: refit through a tiny one
        o = 0.0
        s = float(np.sum(w * w * x * y) / max(np.sum(w * w * x * x), 1e-30))
    if s < 0:
        s, o = 0.0, float(np.average(y, weights=w))
    return NoiseModel(float(s), float(max(o, 1e-12)))


def measure_clip_noise(mosaic: np.ndarray, info) -> tuple[NoiseModel, float]:
    """The clip's noise model and noise floor (dB), measured on one frame (its first, by convention):
    what the encoder stores (the DNG NoiseProfile), what ``--target-psnr floor-N`` is relative to, and
    what bench reports beside every PSNR."""
    from .bayer import raw_planes

    planes = raw_planes(mosaic, info)
    model = estimate_noise(planes)
    return model, model.floor_psnr(planes)
