"""A test clip as the decoder's chain sees it, for the benchmarks that run that chain themselves
(shadows.py, highlights.py): the given sRGB through the default H.265 round trip, at half size,
and the true RAW as normalised planes, packed integers, and its noise model (frame 0)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rawvid.bayer import pack, raw_planes, srgb_half
from rawvid.noise import NoiseModel, estimate_noise
from rawvid.train import _codec_variant


@dataclass
class ChainClip:
    info: object
    rgbs: list[np.ndarray]  # decoded sRGB, H x W x 3 uint8
    srgbs: list[np.ndarray]  # the same at half size, 3 x h x w float
    raws: list[np.ndarray]  # true RAW, 4 x h x w normalised
    truths: list[np.ndarray]  # true RAW, 4 x h x w packed integers
    noise: NoiseModel  # measured on frame 0, as the encoder does


def load_chain_clip(layout, video, frames: int, crf: int) -> ChainClip:
    """The first ``frames`` frames of ``video`` in an RVD layout, their sRGB coded at ``crf``."""
    info = layout.video_info(video)
    names = video.frames[:frames]
    mosaics = [layout.read_raw(video, f) for f in names]
    rgbs = _codec_variant([layout.read_srgb(video, f) for f in names], crf, info.fps)
    raws = [raw_planes(m, info) for m in mosaics]
    return ChainClip(info, rgbs, [srgb_half(x) for x in rgbs], raws, [pack(m, info.cfa) for m in mosaics],
                     estimate_noise(raws[0]))
