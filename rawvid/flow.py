"""Optical flow between sRGB frames (OpenCV DIS) and backward warping (torch grid_sample, or numpy).

The temporal affinity prior of FAGDN warps RAW(t) and sRGB(t) onto frame t+1.
Backward warping needs, for every pixel x of frame t+1, where it was in frame t:
``flow[y, x] = (dx, dy)`` with ``sRGB(t+1)[x] ~ sRGB(t)[x + flow]``; so DIS runs
from sRGB(t+1) (its "previous" image) to sRGB(t).

Preset: DIS FAST. Measured on this machine (FORMATS.md): ULTRAFAST 1-3 ms at
720x320 with 0.15-0.2 px endpoint error, FAST 2-6 ms with about 0.1 px, MEDIUM
9-23 ms; at the network's half resolution of a 1600x900 clip FAST costs a few
milliseconds, so the better accuracy is nearly free.

The warp is bilinear everywhere (training and decoding alike: a mismatch between the
two was measured to cost 1.45 dB); pixels that come from outside the frame are
zeroed and flagged in a validity mask. ``warp`` is the same bilinear warp in numpy, for
decoding without PyTorch (:mod:`rawvid.runtime`); the two agree to float rounding.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from .pipeline import cpu_threads

if TYPE_CHECKING:
    import torch

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
DEFAULT_PRESET = "fast"


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 luma (C-contiguous, as DIS requires) from an RGB image in uint8 or float [0, 1]."""
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))


def dis_flow(target: np.ndarray, source: np.ndarray, preset: str = DEFAULT_PRESET) -> np.ndarray:
    """Backward flow (H x W x 2, float32): ``target[x] ~ source[x + flow[x]]``."""
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    return dis.calc(to_gray(target), to_gray(source), None)


def flow_to_tensor(flow: np.ndarray) -> torch.Tensor:
    """H x W x 2 numpy flow -> 1 x 2 x H x W tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))).unsqueeze(0).float()


def backward_warp(img: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``img`` (N x C x H x W) by backward ``flow`` (N x 2 x H x W, pixels).

    Returns (warped, valid) where valid (N x 1 x H x W) is 1 where the source pixel
    lies inside the frame; outside pixels are zero.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=img.dtype, device=img.device),
                            torch.arange(w, dtype=img.dtype, device=img.device), indexing="ij")
    x = xs.unsqueeze(0) + flow[:, 0]
    y = ys.unsqueeze(0) + flow[:, 1]
    grid = torch.stack([2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0], dim=-1)
    bands = _warp_bands(n, h, img.device.type)
    if bands > 1:
        warped = _banded_grid_sample(img, grid, bands)
    else:
        warped = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    valid = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).to(img.dtype).unsqueeze(1)
    return warped * valid, valid


def _row_bands(h: int, threads: int | None = None) -> int:
    """Bands of output rows a warp of ``h`` rows is cut into: one per thread, at least 64 rows each."""
    return max(1, min(threads or cpu_threads(), h // 64))


def _warp_bands(n: int, h: int, device: str) -> int:
    """Row bands to cut one image's warp into: PyTorch's CPU grid_sample runs its batch in parallel
    but one image on one thread (measured: 65 ms -> 26 ms for 11 x 450 x 800 on 2 cores, cut in two)."""
    return 1 if device != "cpu" or n > 1 else _row_bands(h)


def _banded_grid_sample(img: torch.Tensor, grid: torch.Tensor, bands: int) -> torch.Tensor:
    """grid_sample of one image (1 x C x H x W) with its output rows cut into ``bands`` batch entries
    sampling the same input: every output value is computed as in one call (bit-identical)."""
    import torch.nn.functional as F

    _, c, h, w = img.shape
    rows = -(-h // bands)
    if rows * bands != h:  # the last band padded with samples of the centre, cropped below
        grid = F.pad(grid, (0, 0, 0, 0, 0, rows * bands - h))
    out = F.grid_sample(img.expand(bands, -1, -1, -1), grid.reshape(bands, rows, w, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out.permute(1, 0, 2, 3).reshape(1, c, rows * bands, w)[:, :, :h]


def compose(flow: torch.Tensor, prev_to_key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain backward flows: ``flow`` (frame t -> t-1) then ``prev_to_key`` (t-1 -> keyframe).

    Returns (t -> keyframe flow, valid): ``key[x + out[x]] ~ frame_t[x]``; invalid where the
    path leaves frame t-1. Chained flows follow displacements no single DIS call can (the
    camera circling far from the keyframe and back), at the cost of accumulated error.
    """
    warped, valid = backward_warp(prev_to_key, flow)
    return flow + warped, valid


def warp_error(source: torch.Tensor, flow: torch.Tensor, target: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Local mean absolute sRGB error (N x 1 x H x W) of ``source`` warped onto ``target`` by ``flow``.

    The warped source is first brought to the target's overall brightness (one gain), so an
    exposure change between the frames is not mistaken for a wrong flow; pixels warped from
    outside the frame count as error 1.
    """
    import torch.nn.functional as F

    warped, valid = backward_warp(source, flow)
    gain = (target * valid).sum() / warped.sum().clamp_min(1e-6)  # over the pixels both have
    err = (warped * gain - target).abs().mean(1, keepdim=True) * valid + (1 - valid)
    return F.avg_pool2d(err, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def _padded(img: np.ndarray) -> np.ndarray:
    """C x H x W -> C x (H+2)(W+2) float32 with a one-pixel zero border (the bilinear gathers need no masks)."""
    c, h, w = img.shape
    pad = np.zeros((c, h + 2, w + 2), dtype=np.float32)
    pad[:, 1:-1, 1:-1] = img
    return pad.reshape(c, -1)


def _bilinear(flat: np.ndarray, h: int, w: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples (C x N) of a :func:`_padded` H x W image at source positions (x, y) (any shape, N
    values), zero where the source lies outside the frame, and that validity (float32, the shape of x)."""
    v = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).astype(np.float32)
    xf, yf = np.floor(x), np.floor(y)
    fx, fy = x - xf, y - yf
    # top-left neighbour in the padded image; outside the valid region the weights are zero anyway
    base = ((np.clip(yf, -1, h - 1).astype(np.int64) + 1) * (w + 2) + np.clip(xf, -1, w - 1).astype(np.int64) + 1)
    base = base.ravel()
    o = np.take(flat, base, axis=1)
    o *= ((1 - fx) * (1 - fy) * v).ravel()
    o += np.take(flat, base + 1, axis=1) * (fx * (1 - fy) * v).ravel()
    o += np.take(flat, base + w + 2, axis=1) * ((1 - fx) * fy * v).ravel()
    o += np.take(flat, base + w + 3, axis=1) * (fx * fy * v).ravel()
    return o, v


def warp_points(img: np.ndarray, flow: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`warp` at the pixels (ys, xs) only: C x N values and N bools (the source lies inside the frame)."""
    c, h, w = img.shape
    x = xs.astype(np.float32) + flow[ys, xs, 0]
    y = ys.astype(np.float32) + flow[ys, xs, 1]
    out, v = _bilinear(_padded(img), h, w, x, y)
    return out, v > 0


def warp(img: np.ndarray, flow: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`backward_warp` in numpy: ``img`` (C x H x W) by backward ``flow`` (H x W x 2, pixels).

    Bilinear; neighbours outside the frame count as zero, as grid_sample's zero padding
    (the image gets a one-pixel zero border, so the four gathers need no masks), and pixels
    whose source lies outside are zeroed. Returns (warped float32, valid H x W). Bands of
    output rows run on ``threads`` threads (default: rawvid's CPU threads; numpy releases
    the GIL), each writing its own rows, so the result does not depend on the count.
    """
    c, h, w = img.shape
    flat = _padded(img)
    out = np.empty((c, h * w), dtype=np.float32)
    valid = np.empty((h, w), dtype=np.float32)

    def band(y0: int, y1: int) -> None:
        x = np.arange(w, dtype=np.float32)[None, :] + flow[y0:y1, :, 0]
        y = np.arange(y0, y1, dtype=np.float32)[:, None] + flow[y0:y1, :, 1]
        out[:, y0 * w : y1 * w], v = _bilinear(flat, h, w, x, y)
        valid[y0:y1] = v

    n = _row_bands(h, threads)
    cuts = [h * k // n for k in range(n + 1)]
    if n == 1:
        band(0, h)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(band, cuts[:-1], cuts[1:]))
    return out.reshape(c, h, w), valid
