"""Quality metrics on the packed 4-channel RAW, as the RVD evaluation defines them and as we add.

* ``psnr_paper``: the authors' protocol: packed RAW divided by (2^bits - 1), no black
  subtraction. Skipping the black level inflates the figure (the pedestal counts as
  signal); report it for comparability.
* ``psnr_black``: black-subtracted: (v - black) / (white - black). The honest figure.
* ``ssim``: Wang et al. (2004) SSIM with an 11x11 Gaussian window (sigma 1.5),
  K1 = 0.01, K2 = 0.03, data range 1, computed per packed channel on the paper's
  normalisation (/ (2^bits - 1)) and averaged over the four channels.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .bayer import pack


def _planes(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    return pack(mosaic, cfa).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of two float arrays; inf when identical."""
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr_paper(pred: np.ndarray, true: np.ndarray, cfa: str, bits: int) -> float:
    scale = float((1 << bits) - 1)
    return psnr(_planes(pred, cfa) / scale, _planes(true, cfa) / scale)


def psnr_black(pred: np.ndarray, true: np.ndarray, cfa: str, black: int, white: int) -> float:
    span = float(white - black)
    return psnr((_planes(pred, cfa) - black) / span, (_planes(true, cfa) - black) / span)


def ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two 2-D float arrays (Gaussian 11x11, sigma 1.5)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[5:-5, 5:-5].mean()) if min(s.shape) > 10 else float(s.mean())


def ssim(pred: np.ndarray, true: np.ndarray, cfa: str, bits: int) -> float:
    scale = float((1 << bits) - 1)
    a, b = _planes(pred, cfa) / scale, _planes(true, cfa) / scale
    return float(np.mean([ssim_plane(a[c], b[c]) for c in range(4)]))


def frame_scores(pred: np.ndarray, true: np.ndarray, cfa: str, bits: int, black: int, white: int) -> dict:
    """All per-frame figures for one predicted frame."""
    return {"psnr_paper": psnr_paper(pred, true, cfa, bits), "psnr_black": psnr_black(pred, true, cfa, black, white),
            "ssim": ssim(pred, true, cfa, bits)}
