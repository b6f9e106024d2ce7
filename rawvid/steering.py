"""Per-frame quantiser steering of a directly coded RAW layer (x265 region-of-interest offsets).

Direct coding (x265 on the Bayer planes) cannot steer a frame by its scale: x265 predicts each
frame from the last, which a new scale dims (measured: steered by scale, the example clip's layer
cost twice what a constant QP spends for the same PSNR). Its QP must move instead, and libx265
through libavcodec takes one per-frame knob: region-of-interest side data, which it turns into
x265's per-block quantiser offsets (``quantOffsets``). x265 only applies them with adaptive
quantisation on, which constant-QP mode switches off; so a steered layer runs x265's CRF mode with
``qcomp=1`` (no complexity weighting: the frame QP is the CRF, as a constant QP would be) and
adaptive quantisation at a negligible strength (its own offsets stay ~0). Measured on a test clip
(canon5d3, 512x320, 6 frames, QP 14 and 22): 1-6% fewer bytes and PSNR within 0.1 dB of a
constant QP; an offset of +1 QP cost 0.5-0.75 dB, -1 gained 0.55-0.8.

HEVC codes one QP per quantisation group (32x32 here), so a fraction of a QP is dithered: rows of
groups spread evenly over the frame take the next integer offset. The decoder needs none of
this: the QPs are in the bitstream. Which offset a frame takes: rawvid.ratecontrol.
"""
from __future__ import annotations

import math
from fractions import Fraction

#: x265's quantisation-group size (its default, 32x32): the dither's row height
GROUP = 32
#: libavcodec scales a region's offset (-1..1) by 51 + 6 (bit depth - 8) QP: 75 at 12 bits
QP_RANGE_12 = 75
#: x265's QPs: 0 .. 51 (an offset past either end changes nothing)
X265_QP_MAX = 51
#: what replaces the constant QP of a steered layer (see the module's docstring)
STEER_RC = "crf={qp}:qcomp=1:ipratio=1:aq-mode=1:aq-strength=0.0001"


def dither_rows(height: int, offset: float) -> tuple[int, list[int]]:
    """(the integer offset, the group rows that take one more): a fractional ``offset`` as the mean
    over the frame's rows of groups, the extra rows spread evenly (Bresenham)."""
    base = math.floor(offset)
    frac = offset - base
    rows = math.ceil(height / GROUP)
    return base, [r for r in range(rows) if math.floor((r + 1) * frac + 1e-9) > math.floor(r * frac + 1e-9)]


def with_offset(frame, offset: float, time_base: Fraction):
    """``frame`` (a PyAV VideoFrame of the layer) carrying region-of-interest side data that offsets
    its QP by ``offset`` (dithered). ``time_base``: the encoder's, which the filtered frame's pts
    are then in (the encoder would rescale them otherwise).

    Every picture of a steered layer must carry offsets, 0 included: x265 gives a picture buffer
    room for them only when the picture that first filled it had some, and copies later offsets
    into it unchecked (a picture without, then one with, crashed the encoder)."""
    import av.filter

    base, rows = dither_rows(frame.height, offset)
    g = av.filter.Graph()
    last = g.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                        time_base=Fraction(1, 1000))
    # the first region in the list wins where regions overlap: the extra rows first, the frame last
    regions = [f"x=0:y={r * GROUP}:w=iw:h={GROUP}:qoffset={base + 1}/{QP_RANGE_12}" for r in rows]
    regions.append(f"x=0:y=0:w=iw:h=ih:qoffset={base}/{QP_RANGE_12}")
    for args in regions:
        f = g.add("addroi", args)
        last.link_to(f)
        last = f
    sink = g.add("buffersink")
    last.link_to(sink)
    g.configure()
    pts, pict = frame.pts, frame.pict_type
    frame.pts = 0
    g.push(frame)
    out = g.pull()
    out.pts, out.pict_type, out.time_base = pts, pict, time_base
    return out
