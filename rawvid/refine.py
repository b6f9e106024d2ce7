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

Block gains (session 16, files of format 5): after the blend, each block's four Bayer
channels are scaled by a gain from :data:`GAINS` (0.92-1.08), also chosen against the true
RAW: what the blend of two predictions cannot reach (a colour cast, a highlight's level). A
frame's side information is then 5 x hb x wb indices (the weights, then R, Gr, Gb, B gains).
"""
from __future__ import annotations

import zlib

import numpy as np

#: Blend weights an index can name: global-fit + w * (network - global-fit).
LEVELS: tuple[float, ...] = tuple(float(v) for v in np.linspace(-0.5, 1.5, 9))
#: Block side in half-resolution (packed-plane) pixels: 32 sensor pixels.
BLOCK = 16
#: Per-channel gains a block's refined prediction can take (block gains). Measured open loop on
#: the scenario clips (24 frames, 512x320): 9 steps of 0.02 +0.24 dB for 136 more bytes a frame;
#: steps of 0.01 +0.25 dB for 203; 5 steps of 0.03 +0.21 for 97; one gain for all four channels
#: +0.08; 64-pixel blocks +0.16 for 40; 16-pixel blocks +0.39 for 633.
GAINS: tuple[float, ...] = tuple(1.0 + 0.02 * k for k in range(-4, 5))


def grid_shape(height: int, width: int, block: int = BLOCK) -> tuple[int, int]:
    """Blocks down and across a half-resolution plane of ``height`` x ``width``."""
    return -(-height // block), -(-width // block)


def _blocks(a: np.ndarray, block: int) -> np.ndarray:
    """C x h x w -> C x hb x block x wb x block, edge-padded to whole blocks."""
    c, h, w = a.shape
    hb, wb = grid_shape(h, w, block)
    a = np.pad(a, ((0, 0), (0, hb * block - h), (0, wb * block - w)), mode="edge")
    return a.reshape(c, hb, block, wb, block)


def _best_level(d: np.ndarray, r: np.ndarray, levels: tuple[float, ...], axis: tuple[int, ...]) -> np.ndarray:
    """The index into ``levels`` of the factor w minimising ||w d - r||^2 summed over ``axis`` of
    blocked arrays (:func:`_blocks`): w^2 dd - 2 w dr + const. Ties go to the lower index; uint8."""
    dd = (d * d).sum(axis=axis)
    dr = (d * r).sum(axis=axis)
    errs = np.stack([w * w * dd - 2 * w * dr for w in levels])
    return np.argmin(errs, axis=0).astype(np.uint8)


def _per_pixel(index: np.ndarray, levels: tuple[float, ...], block: int, h: int, w: int) -> np.ndarray:
    """Each block's level (float32) repeated over its pixels, cropped to h x w (the last two axes)."""
    values = np.asarray(levels, dtype=np.float32)[index]
    return np.repeat(np.repeat(values, block, axis=-2), block, axis=-1)[..., :h, :w]


def choose_weights(pred: np.ndarray, base: np.ndarray, target: np.ndarray, block: int = BLOCK,
                   levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """Per block, the index into ``levels`` whose blend of ``pred`` and ``base`` is closest to ``target``.

    Squared error over all four packed channels; ties go to the lower index. Returns uint8 hb x wb.
    """
    d = _blocks(pred.astype(np.float64) - base, block)
    r = _blocks(target.astype(np.float64) - base, block)
    return _best_level(d, r, levels, (0, 2, 4))


def blend(pred: np.ndarray, base: np.ndarray, index: np.ndarray, block: int = BLOCK,
          levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """Apply per-block weights: base + w * (pred - base), clipped to [0, 1], float32."""
    full = _per_pixel(index, levels, block, *pred.shape[1:])
    out = base + full[None] * (pred - base)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def choose_gains(x: np.ndarray, target: np.ndarray, block: int = BLOCK,
                 levels: tuple[float, ...] = GAINS) -> np.ndarray:
    """Per block and channel, the index into ``levels`` whose gain brings ``x`` closest to ``target``.

    Ties go to the lower index. Returns uint8 C x hb x wb."""
    return _best_level(_blocks(x.astype(np.float64), block), _blocks(target.astype(np.float64), block), levels,
                       (2, 4))


def apply_gains(x: np.ndarray, index: np.ndarray, block: int = BLOCK,
                levels: tuple[float, ...] = GAINS) -> np.ndarray:
    """Scale each block's channels by its gain, clipped to [0, 1], float32."""
    return np.clip(x * _per_pixel(index, levels, block, *x.shape[1:]), 0.0, 1.0).astype(np.float32)


def refine_frame(pred: np.ndarray, base: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Apply a frame's stored side information: hb x wb weights, or 5 x hb x wb weights and gains."""
    if index.ndim == 2:
        return blend(pred, base, index)
    return apply_gains(blend(pred, base, index[0]), index[1:])


def choose_frame(pred: np.ndarray, base: np.ndarray, target: np.ndarray,
                 gains: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's choice for one frame: (its indices as :func:`refine_frame` takes them, the result)."""
    index = choose_weights(pred, base, target)
    out = blend(pred, base, index)
    if not gains:
        return index, out
    g = choose_gains(out, target)
    return np.concatenate([index[None], g]), apply_gains(out, g)


def pack(maps: np.ndarray) -> bytes:
    """frames x hb x wb uint8 indices -> zlib bytes."""
    return zlib.compress(np.ascontiguousarray(maps, dtype=np.uint8).tobytes(), 9)


def unpack(data: bytes, frames: int, grid: tuple[int, int], levels: int, gain_levels: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack`, for untrusted input: the size is bounded before inflating.

    ``gain_levels``: the maps hold block gains too (frames x 5 x hb x wb). Raises ValueError when
    the data does not inflate to exactly that many indices or names a level that does not exist.
    """
    planes = 1 if gain_levels is None else 5
    expected = frames * planes * grid[0] * grid[1]
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, expected + 1)
    except zlib.error as e:
        raise ValueError(f"refinement data is not zlib ({e})") from None
    if len(raw) != expected or inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"refinement data holds {len(raw)} bytes or more, expected {expected}")
    maps = np.frombuffer(raw, dtype=np.uint8)
    if gain_levels is None:
        maps = maps.reshape(frames, *grid)
        weights, gains = maps, maps[:0]
    else:
        maps = maps.reshape(frames, planes, *grid)
        weights, gains = maps[:, 0], maps[:, 1:]
    if weights.size and int(weights.max()) >= levels:
        raise ValueError(f"refinement index {int(weights.max())} names no level (there are {levels})")
    if gains.size and int(gains.max()) >= gain_levels:
        raise ValueError(f"refinement gain index {int(gains.max())} names no gain (there are {gain_levels})")
    return maps
