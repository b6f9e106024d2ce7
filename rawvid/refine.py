"""Encoder-side block refinement: per-block weights that blend the network with global-fit.

The encoder holds every frame's true RAW (MLV, DNG folders, RVD layouts). It runs the
decoder's own chain and, for each 32x32-pixel block (16x16 in the half-resolution
planes) of each predicted frame, picks the weight ``w`` from :data:`LEVELS` that makes
``global_fit + w * (network - global_fit)`` closest to the true RAW. The decoder applies the
same weights, so the chain continues from exactly what the encoder saw. ``w = 0`` is
global-fit itself, so no block (hence no frame) ends up worse than global-fit; ``w = 1``
is the network alone; weights beyond 1 extrapolate where the network moved the right way
but not far enough (clipped highlights, exposure changes).

Cost: one byte-sized index per block before zlib, about 1,400 blocks (under 1 KiB) a
frame at 1600x900, under 1% of the sRGB video's bytes at the default settings.
"""
from __future__ import annotations

import zlib

import numpy as np

#: Blend weights an index can name: global-fit + w * (network - global-fit).
LEVELS: tuple[float, ...] = tuple(float(v) for v in np.linspace(-0.5, 1.5, 9))
#: Block side in half-resolution (packed-plane) pixels: 32 sensor pixels.
BLOCK = 16


def grid_shape(height: int, width: int, block: int = BLOCK) -> tuple[int, int]:
    """Blocks down and across a half-resolution plane of ``height`` x ``width``."""
    return -(-height // block), -(-width // block)


def _blocks(a: np.ndarray, block: int) -> np.ndarray:
    """C x h x w -> C x hb x block x wb x block, edge-padded to whole blocks."""
    c, h, w = a.shape
    hb, wb = grid_shape(h, w, block)
    a = np.pad(a, ((0, 0), (0, hb * block - h), (0, wb * block - w)), mode="edge")
    return a.reshape(c, hb, block, wb, block)


def choose_weights(pred: np.ndarray, base: np.ndarray, target: np.ndarray, block: int = BLOCK,
                   levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """Per block, the index into ``levels`` whose blend of ``pred`` and ``base`` is closest to ``target``.

    Squared error over all four packed channels; ties go to the lower index. Returns uint8 hb x wb.
    """
    d = _blocks(pred.astype(np.float64) - base, block)
    r = _blocks(target.astype(np.float64) - base, block)
    dd = (d * d).sum(axis=(0, 2, 4))
    dr = (d * r).sum(axis=(0, 2, 4))
    # ||w d - r||^2 = w^2 dd - 2 w dr + const
    errs = np.stack([w * w * dd - 2 * w * dr for w in levels])
    return np.argmin(errs, axis=0).astype(np.uint8)


def blend(pred: np.ndarray, base: np.ndarray, index: np.ndarray, block: int = BLOCK,
          levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """Apply per-block weights: base + w * (pred - base), clipped to [0, 1], float32."""
    h, w = pred.shape[1:]
    weights = np.asarray(levels, dtype=np.float32)[index]
    full = np.repeat(np.repeat(weights, block, axis=0), block, axis=1)[:h, :w]
    out = base + full[None] * (pred - base)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def pack(maps: np.ndarray) -> bytes:
    """frames x hb x wb uint8 indices -> zlib bytes."""
    return zlib.compress(np.ascontiguousarray(maps, dtype=np.uint8).tobytes(), 9)


def unpack(data: bytes, frames: int, grid: tuple[int, int], levels: int) -> np.ndarray:
    """Inverse of :func:`pack`, for untrusted input: the size is bounded before inflating.

    Raises ValueError when the data does not inflate to exactly ``frames`` maps of ``grid``
    or names a level that does not exist.
    """
    expected = frames * grid[0] * grid[1]
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, expected + 1)
    except zlib.error as e:
        raise ValueError(f"refinement data is not zlib ({e})") from None
    if len(raw) != expected or inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"refinement data holds {len(raw)} bytes or more, expected {expected}")
    maps = np.frombuffer(raw, dtype=np.uint8).reshape(frames, *grid)
    if maps.size and int(maps.max()) >= levels:
        raise ValueError(f"refinement index {int(maps.max())} names no level (there are {levels})")
    return maps
