"""What goes into the network, in which order, and how a frame too large for one pass is cut:
padding to its multiple and overlapping tiles blended by ramps. Shared by the PyTorch and the
ONNX Runtime paths (each brings its own warp), so the two assemble, cut and blend alike."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def assemble(config, warp_all: Callable[[list, Any], list], srgb_cur, srgb_prev, raw_prev, flow, prior_cur=None,
             prior_prev=None, key_srgb=None, key_residual=None, key_flow=None, key_prior=None,
             key_trust=None) -> list:
    """The network's inputs for one chained step, warps included (``warp_all(images, flow)``: the
    images backward-warped by one flow, in order; everything one flow warps goes in one call).

    ``key_trust`` (0 or 1 per pixel): where the flow to the keyframe is not trusted, the warped
    keyframe residual is zero (the keyframe then adds nothing to the global map and the chained
    reference).
    """
    if config.prior and (prior_cur is None or prior_prev is None):
        raise ValueError("this model needs the global-fit prior of both frames")
    warped_raw, warped_srgb, *warped_prior = warp_all([raw_prev, srgb_prev] + ([prior_prev] if config.prior else []),
                                                      flow)
    inputs = [srgb_cur, srgb_prev, raw_prev, warped_raw, warped_srgb]
    if config.prior:
        inputs += [prior_cur, warped_prior[0], prior_prev]
    if config.key_reference:
        if key_srgb is None or key_residual is None or key_flow is None:
            raise ValueError("this model needs the keyframe (sRGB, residual) and the flow to it")
        ratio = config.ratio_refs or config.adaptive_refs
        if ratio and key_prior is None:
            raise ValueError("this model needs the keyframe's global-fit prior A(k)")
        key_warped, key_srgb_warped, *key_prior_warped = warp_all(
            [key_residual, key_srgb] + ([key_prior] if ratio else []), key_flow)
        if key_trust is not None:
            key_warped = key_warped * key_trust
        inputs += [key_warped, key_srgb_warped, *key_prior_warped]
    return inputs


def pad_amounts(h: int, w: int, multiple: int) -> tuple[int, int, bool]:
    """Bottom and right padding up to a multiple, and whether it can reflect (else replicate the edge)."""
    ph, pw = (-h) % multiple, (-w) % multiple
    return ph, pw, ph < h and pw < w


def tile_weights(size: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights of a tile along one axis (float32).

    Near a cut edge (not a frame edge) the weight is 0 for the first quarter of the
    overlap, where zero padding corrupts the output, then ramps linearly to 1 across the
    next half; so local operators with a receptive radius under overlap/4 tile exactly,
    and anything non-local (global attention) is feathered instead of seamed.
    """
    w = np.ones(size, dtype=np.float32)
    if overlap >= 4:
        d = np.arange(size, dtype=np.float32)
        lo, hi = overlap / 4, 3 * overlap / 4
        if not at_start:
            w = np.minimum(w, np.clip((d - lo) / (hi - lo), 0, 1))
        if not at_end:
            w = np.minimum(w, np.clip((size - 1 - d - lo) / (hi - lo), 0, 1))
    return w.astype(np.float32)


def tiles(h: int, w: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[tuple[int, int, np.ndarray]]]:
    """The tile side (aligned to the multiple) and, per tile, (y, x, its th x tw blending weights)."""
    tile = max(multiple, tile // multiple * multiple)
    overlap = min(overlap // multiple * multiple if overlap >= multiple else 0, tile // 2)
    stride = tile - overlap

    def starts(n: int) -> list[int]:
        s = list(range(0, max(n - tile, 0) + 1, stride))
        if s[-1] + tile < n:
            s.append(s[-1] + stride)
        return s

    out = []
    for y in starts(h):
        for x in starts(w):
            th, tw = min(tile, h - y), min(tile, w - x)
            wt = tile_weights(th, overlap, y == 0, y + th >= h)[:, None] * tile_weights(tw, overlap, x == 0, x + tw >= w)[None, :]
            out.append((y, x, wt))
    return tile, out
