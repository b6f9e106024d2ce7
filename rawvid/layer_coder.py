"""One frame of the RAW layer coded (rawvid.rawlayer): its residual against the prediction, the
scale or QP it takes, the top-up passes that hold it at a --target-psnr, and what the layer records.

The chain pass (rawvid.sideinfo) and the pilot's probes (rawvid.layer_pilot) code every frame
through :func:`code_layer`, so that a probe foretells the main pass and the encoder's
reconstruction is the decoder's, bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import ratecontrol as rctl, rawlayer as rl
from .errors import RawvidError
from .ratecontrol import OffsetController, clamp_offset, intra_offset
from .steering import X265_QP_MAX

LAYER_NAME = "rawlayer.mkv"
LAYER_MAPS_NAME = "rawlayer_maps.f16"  # the intra frames' own global maps, in the order of raw_layer.intra
#: a pass that lifts a frame by less than this coded next to nothing (_top_up)
STALL_DB = 0.05


@dataclass
class LayerState:
    """What the chain pass records of the RAW layer, for the manifest and the caller."""

    settings: rl.LayerSettings
    predictor: str = "chain"  # chain | direct (auto is resolved by the pilot)
    crf: float | None = None  # the x265 CRF coded with (--raw-crf)
    qp: int | None = None  # the constant x265 QP coded with (chosen by the pilot under --target-psnr)
    steered: bool = False  # that QP moved per frame by region-of-interest offsets (direct coding, a target)
    offsets: list = field(default_factory=list)  # per frame, its first pass's QP offset (steered)
    scales: list = field(default_factory=list)
    intra: list = field(default_factory=list)
    idr: list = field(default_factory=list)
    crcs: list = field(default_factory=list)
    maps: dict = field(default_factory=dict)
    psnr: list = field(default_factory=list)  # per frame, black-subtracted, of the reconstruction
    pred_psnr: list = field(default_factory=list)  # per frame, of the prediction alone
    bytes: int = 0
    frame_bytes: list = field(default_factory=list)  # per frame, all its passes
    #: per frame, the distortion model's gain learnt on its first pass (None: not measured); not stored
    gains: list = field(default_factory=list)
    pilot: dict | None = None

    def to_dict(self, predictor: dict, file: str) -> dict:
        """The manifest's ``raw_layer`` (the noise model is the manifest's own ``noise_profile``)."""
        d = {**self.settings.to_dict(self.crf, self.qp, self.steered), "file": file, "layout": self.settings.layout,
             "predictor": predictor, "scales": self.scales, "intra": self.intra, "idr": self.idr, "crc32": self.crcs,
             "maps_file": LAYER_MAPS_NAME if self.predictor == "chain" else None, "maps_dtype": "float16-le",
             "pilot": self.pilot}
        if self.settings.lossless:
            d["mapping"] = {"code": "(true - pred + 32768) mod 65536", "recon": "(pred + code - 32768) mod 65536",
                            "offset": rl.FFV1_OFFSET, "scale": 1, "clip": None}
        elif self.settings.transform == "none":
            d["mapping"] = {"code": "clip(round((true - pred) / scale) + 2048, 0, 4095)",
                            "recon": "clip(pred + round((code - 2048) * scale), 0, 2^bits - 1), once per pass",
                            "offset": rl.X265_OFFSET, "scale": "per frame and pass: scales", "clip": [0, rl.X265_MAX]}
        else:  # H: the orthonormal Hadamard of each 2x2 quad (its own inverse), rawvid.rawlayer.analyse
            d["mapping"] = {"code": "clip(round(H(true - pred) / scale) + 2048, 0, 4095)",
                            "recon": "clip(pred + round(H((code - 2048) * scale)), 0, 2^bits - 1), once per pass",
                            "offset": rl.X265_OFFSET, "scale": "per frame and pass: scales", "clip": [0, rl.X265_MAX]}
        if self.settings.transform != "none":  # format 6 on; absent: none
            d["transform"] = self.settings.transform
        return d

    def stats(self) -> dict:
        return {"psnr_black": self.psnr, "prediction_psnr_black": self.pred_psnr, "predictor": self.predictor,
                "passes": [len(x) for x in self.scales], "intra": self.intra, "pilot": self.pilot,
                "qp_offsets": self.offsets if self.steered else None}


def code_layer(writer: rl.LayerWriter, rc: rctl.RateController | None, st: LayerState, i: int, idr: bool,
               pred: np.ndarray, truth: np.ndarray, info, min_scale: float, base: float,
               p_pred: float = -math.inf, intra_aim: float | None = None,
               bounds: tuple[float, float] | None = None, hint: dict | None = None,
               oc: OffsetController | None = None, fresh: bool = False) -> np.ndarray:
    """Code one frame's residual (with top-up passes under --target-psnr); returns the reconstruction.

    ``idr``: an x265 IDR picture (every keyframe). A top-up picture stays in x265's references, but
    x265 predicts the next frame from the frame's first pass (it keeps several references and
    chooses by cost): measured, an IDR after each top-up cost 10-25% more bytes. ``p_pred``: the
    prediction's own PSNR; a P-frame whose prediction alone clears the aim by GROW_DB has no picture
    (its reconstruction is the prediction; until format 4 it was coded at the largest scale, where
    x265 skipped nearly all of it for 30-60 bytes a picture) and teaches the controller nothing.
    ``intra_aim``: the PSNR an IDR's scale is chosen for by trial encodes (rawvid.rawlayer.intra_scale),
    within ``bounds``; None: an IDR is coded at ``base`` like the rest. ``hint``: shared between the
    pilot's probes and the main pass, the quantiser step (scale x 2^(QP/6)) the trials found: a pilot
    probe (no controller) that finds one codes its IDR at it without trials, the main pass's trials
    start from it (a trial encode of a 1600x900 IDR takes about half a second). On a steered layer
    (direct coding, whose scale stays put) the frame's QP offset moves instead: ``oc`` chooses a
    P-frame's, trial encodes an IDR's (the hint is then the absolute QP). ``fresh``: a P-frame the
    chain starts afresh from its own global map (content the last frames do not predict): its scale
    is chosen by trial encodes too, as an IDR's (x265 codes it mostly intra; the controller's model,
    learnt on the frames before, missed such frames by 1-4 dB either way)."""
    s_cfg = st.settings
    if s_cfg.lossless:
        dec = writer.code(rl.lossless_code(rl.tile(truth), rl.tile(pred)), i, idr)
        recon = rl.untile(rl.lossless_recon(rl.tile(pred), dec))
        if not np.array_equal(recon, truth):
            raise RawvidError(writer.path, f"lossless RAW layer did not round-trip at frame {i}")
        st.scales.append([1.0])
        return recon
    if (rc is not None and not writer.steered and not (idr or fresh)
            and p_pred >= rc.target + rctl.AIM_DB + rctl.GROW_DB):
        st.scales.append([])  # no picture at all: the decoder's reconstruction is the prediction (format 4 on)
        st.gains.append(None)
        return pred
    res = rl.analyse(truth.astype(np.int64) - pred, s_cfg.transform)

    if writer.steered:
        return _code_steered(writer, rc, oc, st, i, idr, res, pred, truth, info, max(rl.round_scale(base), min_scale),
                             intra_aim, hint)
    trial = (idr or fresh) and intra_aim is not None and bounds is not None
    spec = rctl.Spectrum.of(res) if s_cfg.target_psnr is not None else None
    # the pilot chose the QP at which the base scale reaches the target: start there, then follow the model
    if trial:
        qstep = 2 ** (writer.qp / 6) if writer.qp is not None else 1.0
        fresh_p = fresh and not idr  # the IDRs' hint is not this frame's: it starts from the controller's guess
        if not fresh_p and rc is None and hint and "step" in hint:  # a pilot probe after the first: no trials
            scale = rl.clamp_scale(hint["step"] / qstep, *bounds)
        else:
            if fresh_p:
                first = rc.first_guess(base, spec) if rc is not None else base
            else:
                first = hint["step"] / qstep if hint and "step" in hint else base
            scale, _ = rctl.intra_scale(_trial_psnr(writer, res, pred, truth, info), res, intra_aim,
                                        float(info.white - info.black), *bounds, first, spec)
            if hint is not None and not fresh_p:
                hint["step"] = scale * qstep
    else:
        scale = rl.round_scale(base) if rc is None else rc.first_guess(base, spec)
    scale = max(scale, min_scale)
    dec = writer.code(rl.to_code(res, scale), i, idr)
    recon = rl.reconstruct(pred, dec, scale, info.bits, s_cfg.transform)
    p = rl.psnr_black(recon, truth, info.black, info.white)
    scales = [scale]
    gain = spec.gain_at(p, scale, info.white - info.black) if spec is not None else None
    st.gains.append(None if idr else gain)
    if rc is not None:
        rc.observe(scale, p, inter=not idr, gain=gain)
        recon = _top_up(writer, rc, i, truth, recon, p, scales, info, before=p_pred)
    st.scales.append(scales)
    return recon


def _top_up(writer: rl.LayerWriter, rc: rctl.RateController, i: int, truth: np.ndarray, recon: np.ndarray,
            p: float, scales: list, info, offset: float = 0.0, before: float = -math.inf) -> np.ndarray:
    """Top-up passes on a frame's remaining error (each appended to ``scales``) while it lands more than
    TOP_UP_DB under the target; a steered layer codes them at the frame's QP ``offset``. A top-up picture
    is unlike the frames x265 predicts from: only to hold the band. ``before``: the frame's PSNR before
    its last pass (its prediction's). A pass that gained under STALL_DB coded next to nothing (at a
    high QP x265's dead zone swallows the whole residual down to some scale, and a skipped block
    copies the picture it predicts from): the next scale is found by trial encodes of the remaining
    error instead of a step finer (measured on a 12-frame clip 6 dB under its floor, QP 34: frames
    took 7 passes of 0.9x down to 0.36, the first five gaining nothing)."""
    scale = scales[-1]
    while p < rc.target - rctl.TOP_UP_DB and len(scales) < rl.MAX_PASSES:
        err = rl.analyse(truth.astype(np.int64) - recon, writer.settings.transform)
        if p - before < STALL_DB and not writer.steered:
            scale = _trial_scale(writer, err, recon, truth, info, rc.target + rctl.AIM_DB, scale, p)
        else:
            scale = rc.top_up_scale(scale, p, len(scales))  # an error around zero: no range limit
        dec = writer.code(rl.to_code(err, scale), i, False, offset)
        recon = rl.reconstruct(recon, dec, scale, info.bits, writer.settings.transform)
        before, p = p, rl.psnr_black(recon, truth, info.black, info.white)
        scales.append(scale)
    return recon


def _trial_psnr(writer: rl.LayerWriter, residual: np.ndarray, onto: np.ndarray, truth: np.ndarray,
                info) -> Callable[[float], float]:
    """``scale -> PSNR`` of ``onto`` plus ``residual`` coded at that scale by a trial IDR encode (nothing written)."""
    def psnr_at(s: float) -> float:
        return rl.psnr_black(rl.reconstruct(onto, writer.trial(rl.to_code(residual, s)), s, info.bits,
                                             writer.settings.transform), truth, info.black, info.white)

    return psnr_at


def _trial_scale(writer: rl.LayerWriter, err: np.ndarray, onto: np.ndarray, truth: np.ndarray, info, aim: float,
                 coarsest: float, now: float) -> float:
    """The largest scale finer than ``coarsest`` at which a pass on ``err`` (the frame at ``now`` dB) reaches
    ``aim``, by trial encodes: down in steps of 4 until a trial codes something (the model has nothing to
    go on while x265 codes nothing); past the aim there, bisected (log scale, 3 trials) between it and
    the last scale that coded nothing; short of it, rawvid.ratecontrol.intra_scale from there."""
    psnr_at = _trial_psnr(writer, err, onto, truth, info)
    hi = rl.round_scale(coarsest * rctl.TOP_UP_STEP)
    above, s = hi, rl.round_scale(hi / 4)
    while (p := psnr_at(s)) - now < STALL_DB and s > rl.MIN_SCALE:
        above, s = s, rl.round_scale(max(s / 4, rl.MIN_SCALE))
    if p < aim:
        return rctl.intra_scale(psnr_at, err, aim, float(info.white - info.black), rl.MIN_SCALE, s, s)[0]
    for _ in range(3):
        mid = rl.round_scale(math.sqrt(s * above))
        if mid in (s, above):
            break
        if psnr_at(mid) >= aim:
            s = mid
        else:
            above = mid
    return s


def _code_steered(writer: rl.LayerWriter, rc: rctl.RateController | None, oc: OffsetController | None,
                  st: LayerState, i: int, idr: bool, res: np.ndarray, pred: np.ndarray, truth: np.ndarray, info,
                  scale: float, intra_aim: float | None, hint: dict | None) -> np.ndarray:
    """code_layer for a steered layer: one scale, the frame's QP offset chosen (see code_layer)."""
    code = rl.to_code(res, scale)
    offset = 0.0
    if idr and intra_aim is not None:
        def psnr_at(o: float) -> float:
            recon = rl.reconstruct(pred, writer.trial(code, o), scale, info.bits, writer.settings.transform)
            return rl.psnr_black(recon, truth, info.black, info.white)

        known = hint is not None and "qp" in hint
        if rc is None and known:  # a pilot probe after the first: the absolute QP its trials found
            offset = clamp_offset(hint["qp"] - writer.qp, -writer.qp, X265_QP_MAX - writer.qp)
        else:
            offset, _ = intra_offset(psnr_at, intra_aim, hint["qp"] - writer.qp if known else 0.0, rctl.AIM_DB,
                                     lo=-writer.qp, hi=X265_QP_MAX - writer.qp)
            if hint is not None:
                hint["qp"] = writer.qp + offset
    elif oc is not None and not idr:
        offset = oc.next_offset()
    if oc is not None and idr:
        oc.after_idr(offset)
    dec = writer.code(code, i, idr, offset)
    recon = rl.reconstruct(pred, dec, scale, info.bits, writer.settings.transform)
    p = rl.psnr_black(recon, truth, info.black, info.white)
    st.offsets.append(offset)
    st.gains.append(None)
    scales = [scale]
    if oc is not None and not idr:
        oc.observe(offset, p)
    if rc is not None:
        recon = _top_up(writer, rc, i, truth, recon, p, scales, info, offset)
    st.scales.append(scales)
    return recon


def scale_bounds(info, predictor: str, transform: str = "none") -> tuple[float, float, float]:
    """(lowest, base, highest) scale of a clip: ``direct`` spreads the whole range over the 12-bit codes
    (around mid-scale: the scale just over rawlayer.full_range_scale; the transform's coefficients span
    rawlayer.transform_gain times the RAW's range)."""
    base = rl.base_scale(info.bits)
    lo, hi = base * rl.SCALE_RANGE[0], base * rl.SCALE_RANGE[1]
    if predictor == "direct":
        lo = base = rl.round_scale(rl.direct_scale(info.bits, transform) * 1.001)
    return rl.round_scale(lo), rl.round_scale(base), rl.round_scale(hi)
