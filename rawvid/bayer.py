"""Bayer packing and normalisation: the network's view of a RAW frame.

A mosaic becomes 4 half-resolution planes in the order [R, Gr, Gb, B] whatever the
CFA pattern (Gr: the green on red rows, Gb: the green on blue rows), and back,
losslessly. Values are normalised by black and white level to [0, 1].
"""
from __future__ import annotations

import cv2
import numpy as np

#: (row, column) inside the 2x2 repeat of R, Gr, Gb, B for each CFA pattern.
PLANE_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    "RGGB": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "GRBG": ((0, 1), (0, 0), (1, 1), (1, 0)),
    "GBRG": ((1, 0), (1, 1), (0, 0), (0, 1)),
    "BGGR": ((1, 1), (1, 0), (0, 1), (0, 0)),
}


def pack(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """H x W mosaic -> 4 x H/2 x W/2 planes [R, Gr, Gb, B] (same dtype, exact)."""
    return np.stack([mosaic[dy::2, dx::2] for dy, dx in PLANE_OFFSETS[cfa]])


def unpack(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Inverse of :func:`pack`."""
    _, h, w = planes.shape
    out = np.empty((2 * h, 2 * w), dtype=planes.dtype)
    for plane, (dy, dx) in zip(planes, PLANE_OFFSETS[cfa]):
        out[dy::2, dx::2] = plane
    return out


def normalise(planes: np.ndarray, black: int, white: int) -> np.ndarray:
    """Packed RAW -> float32 in [0, 1] ((v - black) / (white - black), clipped)."""
    x = (planes.astype(np.float32) - np.float32(black)) / np.float32(white - black)
    return np.clip(x, 0.0, 1.0)


def raw_planes(mosaic: np.ndarray, info) -> np.ndarray:
    """A mosaic as the network sees it: packed [R, Gr, Gb, B], normalised by the clip's levels."""
    return normalise(pack(mosaic, info.cfa), info.black, info.white)


def denormalise(x: np.ndarray, black: int, white: int, bits: int) -> np.ndarray:
    """float [0, 1] -> integer RAW values at the source's levels (rounded, clipped to the bit depth)."""
    v = np.round(np.asarray(x, dtype=np.float64) * (white - black) + black)
    return np.clip(v, 0, (1 << bits) - 1).astype(np.uint16)


def srgb_half(rgb: np.ndarray) -> np.ndarray:
    """8-bit sRGB H x W x 3 -> float32 3 x H/2 x W/2 in [0, 1] (2x2 area average).

    Averaged in float: four 8-bit values carry two more bits than one, which a uint8
    resize would round away.
    """
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    small = cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small.transpose(2, 0, 1))
