"""RAW to 8-bit sRGB through LibRaw (rawpy), from an in-memory DNG: no temp files.

Two modes:

* ``stable`` (default): camera white balance, no auto-brightness, no per-frame
  maximum adjustment, sRGB gamma. The same scene renders the same way in every
  frame, so a video does not flicker.
* ``rvd``: LibRaw's defaults, exactly how the RVD benchmark rendered its sRGB
  (auto-brightness renormalises each frame; BT.709-like gamma).
"""
from __future__ import annotations

import io
from enum import Enum

import numpy as np

from .dng import encode_dng
from .meta import RawInfo


class RenderMode(str, Enum):
    STABLE = "stable"
    RVD = "rvd"


#: rawpy.postprocess arguments per mode (recorded in the .rvd manifest).
RENDER_PARAMS: dict[str, dict] = {
    RenderMode.STABLE.value: dict(use_camera_wb=True, no_auto_bright=True, adjust_maximum_thr=0.0,
                                  gamma=(2.4, 12.92), output_bps=8),
    RenderMode.RVD.value: dict(output_bps=8),
}


def render_params(mode: str) -> dict:
    """The rawpy.postprocess arguments of a render mode (ValueError for an unknown mode)."""
    try:
        return dict(RENDER_PARAMS[RenderMode(mode).value])
    except ValueError:
        raise ValueError(f"unknown render mode {mode!r} (choose stable or rvd)") from None


def render_dng(dng: bytes, mode: str = "stable") -> np.ndarray:
    """Render DNG bytes to an sRGB uint8 array (H x W x 3) with LibRaw."""
    import rawpy

    params = render_params(mode)
    with rawpy.imread(io.BytesIO(dng)) as raw:
        return raw.postprocess(**params)


def render(mosaic: np.ndarray, info: RawInfo, mode: str = "stable") -> np.ndarray:
    """Render a Bayer mosaic with its metadata to sRGB (H x W x 3, uint8)."""
    rgb = render_dng(encode_dng(mosaic, info), mode)
    h, w = mosaic.shape
    if rgb.shape[:2] != (h, w):  # LibRaw may drop a border row/column for odd sizes
        out = np.zeros((h, w, 3), np.uint8)
        hh, ww = min(h, rgb.shape[0]), min(w, rgb.shape[1])
        out[:hh, :ww] = rgb[:hh, :ww]
        rgb = out
    return rgb


def libraw_version() -> str:
    import rawpy

    return ".".join(str(v) for v in rawpy.libraw_version)
