"""The encoder's second pass: its own video decoded back, run through the decoder's chain.

What it produces, all chosen against the true RAW the encoder holds:

* calibration: a frame's global sRGB-to-RAW map (115 float16 values, 230 bytes), for every
  frame (per-frame) or where it beats the map in force (adaptive);
* block refinement: per 32x32 block, how far to trust the network over global-fit;
* the RAW layer (rawvid.rawlayer): closed loop, each frame's residual against the chain's
  prediction is coded and the chain continues from the reconstruction, as the decoder's
  will. Intra frames (every IDR, and frames where the chain has drifted far) are predicted
  from their own sRGB through a map fitted on the true RAW.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import ratecontrol as rctl, rawlayer as rl
from .bayer import normalise, pack as bayer_pack, raw_planes, srgb_half
from .chain import direct_prediction, fit_own_map, own_prediction, predict_frame
from .errors import RawvidError
from .manifest import rounded
from .metrics import psnr
from .pipeline import ReadAhead
from .ratecontrol import OffsetController, clamp_offset, intra_offset
from .steering import X265_QP_MAX
from .video import VideoReader

CALIBRATION_NAME = "calibration.f16"
REFINE_NAME = "refine.u8.zlib"
LAYER_NAME = "rawlayer.mkv"
LAYER_MAPS_NAME = "rawlayer_maps.f16"  # the intra frames' own global maps, in the order of raw_layer.intra
#: frames the encoder codes both ways to choose a layer's predictor (``predictor auto``)
PILOT_FRAMES = 4
#: under a target, where the two predictors' foretold bytes lie within this factor of each other the
#: main pass's pilot codes both again on PILOT_EXTEND_FRAMES frames, as the main pass would (rate
#: control and top-ups), and decides on those (0: never). Four frames foretell badly where the cost
#: per frame drifts: x265's P-frames on the RAW itself got cheaper frame after frame on a slow scenario
#: clip (1653 -> 603 bytes over 11 frames) while the chain's residual did not (2003, 1467, 593, then
#: 2000-3100): the pilot foretold 22.7 KB for the chain against 23.0 KB, the clip's layer took 26.0 KB
#: against 18.9 KB (12 frames, 3 dB under the floor, sRGB CRF 36); on 8 frames it chooses direct.
PILOT_EXTEND_RATIO = 1.25
PILOT_EXTEND_FRAMES = 8
#: adaptive calibration stores a frame's own map where its global fit beats the map in force by
#: more than this (dB). Measured on the scenario clips (32 frames, default mode): 0.1 dB kept 2.75
#: maps a clip for 42.32 dB, a map every frame 42.29, 0.5 dB 1.0 map and 42.28, none 41.50.
ADAPT_GAIN_DB = 0.1
#: adaptive calibration fits every frame's own map on this many pixels: 0.04 s a 1600x900 frame
#: here against 0.18 s for the 200,000 of an intra frame's map
ADAPT_SAMPLES = 50_000
#: an intra frame replaces a chained one when its prediction is this much better (dB)
INTRA_GAIN_DB = 1.0
#: a pass that lifts a frame by less than this coded next to nothing (rawvid.sideinfo._top_up)
STALL_DB = 0.05
#: half an x265 QP step, as a factor on the scale
HALF_QP = 2 ** (1 / 12)
#: under --target-psnr the chain's QP is at most this many QP above the one at which coding the RAW
#: itself (direct) reaches the target. Where the first frames' prediction alone reaches it, any QP
#: does there, and the bisection went to 51; a later frame the prediction misses could then not be
#: lifted by any scale or top-up (measured: a test clip's frames 9-15 fell 5 dB under a target whose
#: first 8 frames were predicted; capped, every frame held it, for 33 more bytes on an easy clip).
#: 3 since session 12: at 6, a rotating and zooming 10-bit scenario clip (3 dB under its floor, sRGB
#: CRF 32) whose prediction fell from 1.8 dB over the target to 11 dB under it at frame 15 left its
#: last five frames 0.4-1.1 dB under after 8 passes: at x265's QP 32 a 12-bit picture holds about ten
#: quantiser steps, so no scale reaches a fine step without clipping. At 3 every frame held the band
#: (layer 0.0630 bits per sample, was 0.0633); the test split's -6 / -3 dB ladder: layer -1.2% (geo-mean).
CHAIN_QP_HEADROOM = 3
#: past that cap the pilot goes on coarsening the chain by its base scale, up to this many QP's worth
#: (x265's step doubles every 6 QP): the chain keeps QP 3 over direct coding's and its quantiser's
#: range for the frames the prediction misses, while frames the prediction covers cost what they did
#: at QP 6 over. With the QP cap alone the pilot coded a test clip's 4 frames (infiniteisp outdoor1,
#: 3 dB under its floor, sRGB CRF 36) at QP 28 for 73 KB where QP 31 had taken 21 KB, chose direct
#: coding, and the RAW part went from 0.070 to 0.212 bits per sample.
CHAIN_SCALE_HEADROOM = 3


def half_step(h: int, qtop: int) -> tuple[int, float]:
    """The pilot's half-step ``h`` as (x265 QP, base-scale multiplier): QP h // 2 and the scale x 2^(1/12)
    for an odd step, up to the half-step ``qtop``; past it the QP stays and the scale goes on growing."""
    q = min(h // 2, qtop // 2)
    return q, HALF_QP ** (h - 2 * q)


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
        d = {**self.settings.to_dict(self.crf, self.qp, self.steered), "file": file, "layout": rl.LAYOUT,
             "predictor": predictor, "scales": self.scales, "intra": self.intra, "idr": self.idr, "crc32": self.crcs,
             "maps_file": LAYER_MAPS_NAME if self.predictor == "chain" else None, "maps_dtype": "float16-le",
             "pilot": self.pilot}
        if self.settings.lossless:
            d["mapping"] = {"code": "(true - pred + 32768) mod 65536", "recon": "(pred + code - 32768) mod 65536",
                            "offset": rl.FFV1_OFFSET, "scale": 1, "clip": None}
        else:
            d["mapping"] = {"code": "clip(round((true - pred) / scale) + 2048, 0, 4095)",
                            "recon": "clip(pred + round((code - 2048) * scale), 0, 2^bits - 1), once per pass",
                            "offset": rl.X265_OFFSET, "scale": "per frame and pass: scales", "clip": [0, rl.X265_MAX]}
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
    res = rl.tile(truth.astype(np.int64) - pred)

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
    recon = _recon(dec, scale, pred, info.bits)
    p = rl.psnr_black(recon, truth, info.black, info.white)
    scales = [scale]
    gain = spec.gain_at(p, scale, info.white - info.black) if spec is not None else None
    st.gains.append(None if idr else gain)
    if rc is not None:
        rc.observe(scale, p, inter=not idr, gain=gain)
        recon = _top_up(writer, rc, i, truth, recon, p, scales, info, before=p_pred)
    st.scales.append(scales)
    return recon


def _recon(decoded: np.ndarray, scale: float, onto: np.ndarray, bits: int) -> np.ndarray:
    """A pass's reconstruction: ``onto`` plus the decoded codes at ``scale``."""
    return rl.apply_residual(onto, rl.untile(rl.from_code(decoded, scale)), bits)


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
        err = rl.tile(truth.astype(np.int64) - recon)
        if p - before < STALL_DB and not writer.steered:
            scale = _trial_scale(writer, err, recon, truth, info, rc.target + rctl.AIM_DB, scale, p)
        else:
            scale = rc.top_up_scale(scale, p, len(scales))  # an error around zero: no range limit
        dec = writer.code(rl.to_code(err, scale), i, False, offset)
        recon = _recon(dec, scale, recon, info.bits)
        before, p = p, rl.psnr_black(recon, truth, info.black, info.white)
        scales.append(scale)
    return recon


def _trial_psnr(writer: rl.LayerWriter, residual: np.ndarray, onto: np.ndarray, truth: np.ndarray,
                info) -> Callable[[float], float]:
    """``scale -> PSNR`` of ``onto`` plus ``residual`` coded at that scale by a trial IDR encode (nothing written)."""
    def psnr_at(s: float) -> float:
        return rl.psnr_black(_recon(writer.trial(rl.to_code(residual, s)), s, onto, info.bits), truth, info.black,
                             info.white)

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
            return rl.psnr_black(_recon(writer.trial(code, o), scale, pred, info.bits), truth, info.black,
                                 info.white)

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
    recon = _recon(dec, scale, pred, info.bits)
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


def adapt_map(method, in_force, srgb: np.ndarray, truth: np.ndarray, gain_db: float = ADAPT_GAIN_DB):
    """Adaptive calibration for one frame: (the map in force for it, its own map's row, whether that replaced it).

    The frame's own map (fitted on ``truth``, its normalised RAW planes, from ADAPT_SAMPLES pixels)
    replaces ``in_force`` (None: the keyframe's) when its global fit beats the map ``method`` holds
    by more than ``gain_db``: exposure steps, zooms, a rendering that drifts."""
    own_map, row = fit_own_map(srgb, truth, ADAPT_SAMPLES)
    if psnr(own_map.apply(srgb), truth) - psnr(method.base(srgb), truth) > gain_db:
        return own_map, row, True
    return in_force, row, False


class ChainPass:
    """The decoder's chain, run by the encoder frame by frame (``step``), choosing what the decoder reads."""

    def __init__(self, info, count: int, keys: set[int], *, method=None, calibration: str = "keyframe",
                 blocks: bool = False, gains: bool = False, layer: rl.LayerSettings | None = None,
                 predictor: str = "chain",
                 layer_path: Path | None = None, crf: float | None = None, qp: int | None = None,
                 scale_mult: float = 1.0, control: bool = True, intra_hint: dict | None = None,
                 own_maps: dict | None = None):
        from .refine import grid_shape

        self.info, self.count, self.keys = info, count, keys
        #: frame -> its own global map (fit_own_map), shared by the pilot's probes of the same frames
        #: (None: fitted where needed, as the main pass sees each frame once)
        self.own_maps = own_maps
        self.method, self.calibration, self.blocks = method, calibration, blocks
        self.gains = blocks and gains  # block gains beside the weights (rawvid.refine.GAINS)
        self.rows: list[np.ndarray] = []  # the stored maps: every frame's (per-frame), each change's (adaptive)
        self.changes: list[int] = []  # adaptive: the frames whose own map replaced the one in force
        self.in_force = None  # adaptive: the map the chain predicts with (None: the last keyframe's)
        self.maps = None
        if blocks:
            planes = (5,) if self.gains else ()  # the weights, then four channels' gains
            self.maps = np.zeros((count, *planes, *grid_shape(info.height // 2, info.width // 2)), dtype=np.uint8)
        self.st = self.writer = self.rc = self.oc = None
        self.min_scale, self.base_scale = 0.0, rl.base_scale(info.bits)
        self.intra_aim = self.bounds = None
        self.intra_hint = intra_hint
        if layer is not None:
            # direct coding under a target: its QP steered per frame (its scale cannot move, see below)
            steered = predictor == "direct" and layer.target_psnr is not None and not layer.lossless \
                and qp is not None
            self.st = LayerState(layer, predictor, crf=crf, qp=qp, steered=steered)
            self.writer = rl.LayerWriter(layer_path, info.width, info.height, info.fps, info.bits, layer, crf, qp,
                                         steered)
            lo, self.base_scale, hi = scale_bounds(info, predictor)
            self.base_scale = rl.round_scale(self.base_scale * scale_mult)
            if predictor == "direct":  # the whole range around mid-scale must fit the 12-bit codes
                self.min_scale = lo
                # and the scale stays put: x265 predicts each frame from the last, which a new scale dims.
                # Measured: steering it by the model (as the chain's) landed every frame of the example
                # clip in the band but climbed 4.1 -> 15.8 over 17 frames, and cost twice what x265 at a
                # constant QP spends for the same PSNR (0.0248 against 0.0116 bits per sample at 50.9 dB).
                # Under a target the QP moves instead (rawvid.steering).
                lo = hi = self.base_scale
            if layer.target_psnr is not None and control:
                self.rc = rctl.RateController(layer.target_psnr, lo, hi, peak=float(info.white - info.black))
                if steered:
                    self.oc = OffsetController(layer.target_psnr, layer.target_psnr + rctl.AIM_DB, lo=-qp,
                                            hi=X265_QP_MAX - qp, qp_hi=X265_QP_MAX - qp)
            if layer.target_psnr is not None and (predictor == "chain" or steered) and not layer.lossless:
                # an IDR's scale by trial encodes (the pilot's too, so that it foretells the main pass)
                self.intra_aim = layer.target_psnr + rctl.AIM_DB + (rctl.INTRA_BOOST_DB if steered else 0.0)
                self.bounds = (lo, hi)
        self.last_intra_psnr = -math.inf
        self.prev_raw = self.prev_srgb = None

    def _own(self, i: int, srgb: np.ndarray, truth: np.ndarray):
        """Frame ``i``'s own global map (fit_own_map), from the probes' shared cache when there is one."""
        if self.own_maps is None:
            return fit_own_map(srgb, truth)
        if i not in self.own_maps:
            self.own_maps[i] = fit_own_map(srgb, truth)
        return self.own_maps[i]

    def _adapt(self, i: int, srgb: np.ndarray, truth: np.ndarray):
        """Adaptive calibration (:func:`adapt_map`): (the map frame ``i`` is predicted with, its own
        map's row); a map that replaces the one in force is stored, otherwise nothing is."""
        self.in_force, row, changed = adapt_map(self.method, self.in_force, srgb, truth)
        if changed:
            self.changes.append(i)
            self.rows.append(row.astype("<f2"))
        return self.in_force, row

    def step(self, i: int, rgb: np.ndarray, mosaic: np.ndarray, prepared: tuple | None = None) -> None:
        """One frame: its calibration, refinement weights and (with a layer) its coded residual.

        ``prepared``: :func:`prepare_frame`'s (half-size sRGB, normalised RAW planes), when read ahead."""
        info = self.info
        srgb, truth = prepared or prepare_frame(rgb, mosaic, info)
        gmap = own = None  # own: this frame's map fitted on its true RAW (float16, as stored), fitted once
        if self.calibration == "per-frame":
            gmap, own = self._own(i, srgb, truth)
            self.rows.append(own.astype("<f2"))
        elif self.calibration == "adaptive" and self.method is not None and i not in self.keys:
            gmap, own = self._adapt(i, srgb, truth)
        if self.method is None and self.st is None:
            return
        st = self.st
        if st is None:  # the paper's design: keyframes are the true RAW
            if i in self.keys:
                self.method.keyframe(truth, srgb)
                self.in_force = None
                raw = truth
            else:
                _, raw, idx = predict_frame(self.method, self.prev_raw, self.prev_srgb, srgb, info, gmap,
                                            target=truth if self.blocks else None, gains=self.gains)
                if idx is not None:
                    self.maps[i] = idx
            self.prev_raw, self.prev_srgb = raw, srgb
            return
        true_int = bayer_pack(mosaic, info.cfa)
        idr = intra = i in self.keys
        if st.predictor == "direct":
            pred = direct_prediction(info)
            p_pred = rl.psnr_black(pred, true_int, info.black, info.white)
        elif idr:
            own = self._own(i, srgb, truth)[1] if own is None else own
            pred = own_prediction(own, srgb, info)
            p_pred = rl.psnr_black(pred, true_int, info.black, info.white)
        else:
            pred, _, idx = predict_frame(self.method, self.prev_raw, self.prev_srgb, srgb, info, gmap,
                                         target=truth if self.blocks else None, gains=self.gains)
            if idx is not None:
                self.maps[i] = idx
            p_pred = rl.psnr_black(pred, true_int, info.black, info.white)
            if p_pred < self.last_intra_psnr - INTRA_GAIN_DB:  # the chain has drifted far: a fresh start?
                own = self._own(i, srgb, truth)[1] if own is None else own
                pred_own = own_prediction(own, srgb, info)
                p_own = rl.psnr_black(pred_own, true_int, info.black, info.white)
                if p_own > p_pred + INTRA_GAIN_DB:
                    intra, pred, p_pred = True, pred_own, p_own
        if idr:
            st.idr.append(i)
        if intra:
            st.intra.append(i)
            if st.predictor == "chain":
                st.maps[i] = own
        if intra:
            self.last_intra_psnr = p_pred
        before = self.writer.bytes
        recon = code_layer(self.writer, self.rc, st, i, idr, pred, true_int, info, self.min_scale, self.base_scale,
                           p_pred, self.intra_aim, self.bounds, self.intra_hint, self.oc, fresh=intra and not idr)
        st.frame_bytes.append(self.writer.bytes - before)
        st.pred_psnr.append(p_pred)
        st.psnr.append(rl.psnr_black(recon, true_int, info.black, info.white))
        st.crcs.append(rl.crc(recon))
        if st.predictor == "direct":
            return
        raw = normalise(recon, info.black, info.white)
        if intra:
            self.method.keyframe(raw, srgb)
            self.in_force = None
        self.prev_raw, self.prev_srgb = raw, srgb

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.st.bytes = self.writer.bytes

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def prepare_frame(rgb: np.ndarray, mosaic: np.ndarray, info) -> tuple[np.ndarray, np.ndarray]:
    """What the chain takes of a frame: its sRGB at half size and its RAW as normalised packed planes."""
    return srgb_half(rgb), raw_planes(mosaic, info)


def _frames(src, reader, start: int, stop: int):
    """(index in the range, decoded sRGB, true mosaic) of frames [start, stop): the source beside its video."""
    for fr, rgb in zip(src.frames(start, stop), reader):
        yield fr.index - start, rgb, fr.mosaic


def _probe(frames: list, info, keys: set[int], method, layer: rl.LayerSettings, predictor: str, crf: float | None,
           qp: int | None, calibration: str, blocks: bool, folder: Path, count: int,
           scale_mult: float = 1.0, intra_hint: dict | None = None,
           own_maps: dict | None = None, control_seed: float | None = None,
           control: bool = False) -> tuple[float, list[float], float | None]:
    """Code the pilot frames closed loop, exactly as the main pass would at the base scale with no
    top-ups: (the bytes they foretell for ``count`` frames, the black-subtracted PSNR of each frame
    the QP must hold (not an IDR whose scale trial encodes chose), the main pass's seed (below)).

    The intra frames' bytes count once per intra frame the clip will have, the others' mean once
    per other frame: a pilot of 4 frames would otherwise weigh the intra frame as a quarter of a
    clip (measured: it chose the chain where direct coding was 30% cheaper over 16 frames).
    ``control``: with the main pass's rate control and top-ups (seeded with ``control_seed``), so
    that the frames the QP was not chosen on still land on the target."""
    import dataclasses

    from .refine import pack

    fixed = dataclasses.replace(layer, predictor=predictor)
    cp = ChainPass(info, len(frames), keys, method=method if predictor == "chain" else None, calibration=calibration,
                   blocks=blocks and predictor == "chain", layer=fixed, predictor=predictor,
                   layer_path=folder / f"pilot-{predictor}-{crf}-{qp}-{scale_mult:g}.mkv", crf=crf, qp=qp,
                   scale_mult=scale_mult, control=control, intra_hint=intra_hint, own_maps=own_maps)
    if cp.oc is not None and control_seed is not None:
        cp.oc.seed(control_seed)
    elif cp.rc is not None and control_seed is not None:
        cp.rc.gain = control_seed
    try:
        for i, rgb, mosaic, prepared in frames:
            cp.step(i, rgb, mosaic, prepared)
        cp.close()
    except BaseException:
        cp.abort()
        raise
    side = len(pack(cp.maps)) if cp.maps is not None else 0  # the refinement's bytes count too
    st = cp.st
    intra = [b for i, b in enumerate(st.frame_bytes) if i in st.intra]
    inter = [b for i, b in enumerate(st.frame_bytes) if i not in st.intra]
    n_intra = max(1, sum(1 for k in keys if 0 <= k < count))
    total = float(sum(st.frame_bytes))
    if intra and inter:
        total = float(np.mean(intra)) * n_intra + float(np.mean(inter)) * (count - n_intra)
    # an IDR whose scale trial encodes chose lands on the aim by itself (within their slack): the
    # QP is for the frames that follow it
    steered = [p for i, p in enumerate(st.psnr) if cp.intra_aim is None or i not in st.idr]
    # what seeds the main pass's controller on its first P-frame (which the probe coded alike): the
    # model's gain, or on a steered layer the frame's PSNR at the QP (its offset starts from the miss)
    if st.steered:
        seed = next((p for i, p in enumerate(st.psnr) if i not in st.intra), None)
    else:
        seed = next((g for g in st.gains if g is not None), None)
    return total + side * count / len(frames), steered or st.psnr, seed


def scale_bounds(info, predictor: str) -> tuple[float, float, float]:
    """(lowest, base, highest) scale of a clip: ``direct`` spreads the whole range over the 12-bit codes
    (around mid-scale: the scale just over rawlayer.full_range_scale)."""
    base = rl.base_scale(info.bits)
    lo, hi = base * rl.SCALE_RANGE[0], base * rl.SCALE_RANGE[1]
    if predictor == "direct":
        lo = base = rl.round_scale(2 ** (info.bits - 1) / (rl.X265_MAX - rl.X265_OFFSET) * 1.001)
    return rl.round_scale(lo), rl.round_scale(base), rl.round_scale(hi)


def search_half(reaches: Callable[[int], tuple[bool, object]], top: int, guess: int | None = None,
                cap: Callable[[], int | None] | None = None):
    """The largest half-step in 0..top that reaches the aim (the payload ``reaches`` returned for it),
    or None when none tried does; ``reaches(h)`` probes half-step h: (reached, payload).

    Reaching is taken as monotone (coarser half-steps reach less). From ``guess`` (a neighbouring
    search's answer) it gallops, 1, 2, 4 ... steps, until a half-step that reaches and one that
    does not bracket the boundary, then bisects: 2-3 probes where the answer moved a step, against
    the 6-7 of a bisection over the whole range (without a guess). ``cap()``, asked after each
    probe, may lower the top (a steered layer's P-frames stay near its IDR's QP)."""
    lo, hi, best = -1, top + 1, None  # lo reaches the aim (-1: none tried does), hi does not
    g, step, lo0, hi0 = guess, 1, lo, hi
    while hi - lo > 1:
        mid = g if g is not None and lo < g < hi else (lo + hi + 1) // 2
        reached, payload = reaches(mid)
        if reached:
            lo, best = mid, payload
        else:
            hi = mid
        c = cap() if cap else None
        if c is not None and hi > c:
            hi = c
            if lo >= hi:
                lo, best = -1, None
        if g is not None:
            if reached and hi == hi0:
                g, step = mid + step, step * 2
            elif not reached and lo == lo0:
                g, step = mid - step, step * 2
            else:
                g = None
    return best


def pilot(src, video: Path, start: int, stop: int, keys: set[int], method, layer: rl.LayerSettings, *,
          calibration: str, blocks: bool, direct: dict | None = None, direct_seed: float | None = None,
          hints: dict | None = None, halves: dict | None = None,
          extend: bool = False) -> tuple[str, bool, int | None, float, dict]:
    """Choose the layer's predictor and (for --target-psnr) its constant x265 QP on the clip's first frames.

    Each candidate predictor codes PILOT_FRAMES frames closed loop, as the main pass would at the
    base scale: for a target, the largest QP (bisection over 0..51) at which every frame reaches
    target + AIM_DB; then the predictor whose pilot costs fewer bytes (at a fixed CRF: bytes x
    2^((best PSNR - PSNR) / 6), the slope of a codec at high rate). A constant QP, not a CRF:
    measured on the test split, x265's per-frame PSNR at a constant QP (I-frames at the same QP)
    spreads 0.5 dB where a CRF's spreads 2-8 dB, at the same mean rate for the same mean PSNR,
    so holding every frame at the target costs less. The chain is tried with and without block
    refinement (its weights' bytes counted): where the prediction alone already reaches the target
    they are bytes for nothing. The chain's per-frame scale and the top-up passes of the main pass
    then hold each frame at the target. Returns (predictor, refinement, QP or None, the factor on
    the base scale, report): the bisection runs in half QP steps, the half step as a scale 2^(1/12)
    coarser, since direct coding keeps one scale for the clip (it must not move between frames).
    Under a target, direct coding is always probed (first): the chain's QP is capped at
    CHAIN_QP_HEADROOM above its. ``direct``: an earlier pilot's direct entry on the same frames, reused
    (``direct_seed``: that pilot's seed for the main pass's controller, should direct coding be chosen).
    ``hints``: per predictor, the IDR's quantiser step (a steered layer's: its absolute QP) its trials
    chose (filled in; see code_layer): the first probe of a predictor runs the trials, the later ones
    code their IDR at that step (the trials, about 0.5 s each at 1600x900, had made the sRGB pilots
    45 s longer). ``halves``: per candidate, the half-step a neighbouring search found (filled in):
    each search starts there (search_half). ``extend``: the video holds the clip's every frame (the
    main pass's pilot), so a close call is coded again on more of them (PILOT_EXTEND_RATIO).
    """
    import tempfile

    n = min(PILOT_FRAMES, stop - start)
    with VideoReader(video, src.info.width, src.info.height) as reader:  # each prepared once for every probe
        frames = [(i, rgb, mosaic, prepare_frame(rgb, mosaic, src.info))
                  for i, rgb, mosaic in _frames(src, reader, start, start + n)]
    own_maps: dict = {}  # each intra frame's own map, fitted once for every probe
    preds = ["direct", "chain"] if layer.predictor == "auto" else [layer.predictor]
    candidates = [c for p in preds for c in ((["chain+blocks"] if blocks else []) + ["chain"] if p == "chain" else [p])]
    info = src.info
    target = layer.target_psnr is not None and not layer.lossless
    probes = (["direct"] if target and "direct" not in candidates else []) + candidates  # direct first: the cap
    out: dict = {"frames": n}
    seeds: dict = {}  # per candidate, its controller's seed from its first P-frame (the main pass's own)
    hints = {} if hints is None else hints
    halves = {} if halves is None else halves  # per candidate, the half-step its last search found
    with tempfile.TemporaryDirectory(prefix="rawvid-pilot-") as td:
        def probe(cand, qp, mult=1.0):
            pred = cand.split("+")[0]
            nbytes, psnrs, seed = _probe(frames, info, keys, method, layer, pred, layer.crf, qp, calibration,
                                         cand.endswith("+blocks"), Path(td), stop - start, mult,
                                         hints.setdefault(pred, {}), own_maps)
            finite = [p for p in psnrs if math.isfinite(p)]
            return nbytes, (min(finite) if finite else math.inf), seed

        for pred in probes:
            if pred == "direct" and direct is not None and target:
                out["direct"], seeds["direct"] = dict(direct), direct_seed
                continue
            seed = None
            if not target:
                qp, mult = None, 1.0
                nbytes, worst, _ = probe(pred, None)
            else:
                aim = layer.target_psnr + rctl.AIM_DB
                top = 2 * 51
                if pred != "direct":
                    d = out["direct"]
                    # steered, direct coding's IDR took its own QP (finer: its P-frames then reach the
                    # target at a coarser one): the cap is over the finer of the two
                    anchor = min(d["qp"], math.floor(d.get("intra_qp", d["qp"])))
                    qtop = min(top, 2 * anchor + (d["scale_mult"] > 1) + 2 * CHAIN_QP_HEADROOM)
                    top = min(top, qtop + 2 * CHAIN_SCALE_HEADROOM)
                else:
                    qtop = top
                # half QP steps: QP q and the scale x 2^(1/12) for q + 1/2 (x265's step doubles every 6 QP)
                guess = halves.get(pred, halves.get("chain+blocks") if pred == "chain" else None)
                last: list = []  # the last probe's (bytes, worst PSNR, seed)

                def reaches(half: int) -> tuple[bool, tuple]:  # (called within this iteration only)
                    last[:] = [probe(pred, *half_step(half, qtop))]
                    return last[0][1] >= aim, (half, *last[0])

                def cap() -> int | None:  # steered: P-frames within IP_QP_GAP of the IDR
                    idr_qp = hints.get(pred, {}).get("qp")
                    return None if idr_qp is None else 2 * math.floor(idr_qp + rctl.IP_QP_GAP) + 1

                best = search_half(reaches, top, guess, cap)
                if best is None:  # not even QP 0: the top-up passes will have to do it
                    best = (0, *last[0])
                half, nbytes, worst, seed = best
                halves[pred] = half
                qp, mult = half_step(half, qtop)
            out[pred] = {"qp": qp, "scale_mult": mult, "bytes": nbytes, "worst_psnr_black": worst}
            if "qp" in hints.get(pred, {}):  # a steered layer's IDR: its absolute QP
                out[pred]["intra_qp"] = round(hints[pred]["qp"], 4)
            seeds[pred] = seed
        if extend and target and "direct" in candidates and len(candidates) > 1:
            candidates = _extend(src, video, start, stop, keys, method, layer, calibration, out, seeds, hints,
                                 own_maps, candidates, Path(td))
    top = max(out[k]["worst_psnr_black"] for k in candidates)
    for k in candidates:
        v = out[k]
        gap = 0.0 if not math.isfinite(top) or target else top - v["worst_psnr_black"]
        v["cost"] = v["bytes"] * 2 ** (min(gap, 12.0) / 6)
    chosen = min(candidates, key=lambda k: out[k]["cost"])
    out["chosen"] = chosen
    out["seed"] = seeds.get(chosen)  # for chain_pass, which seeds its controller with it (not stored)
    return chosen.split("+")[0], chosen.endswith("+blocks"), out[chosen]["qp"], out[chosen]["scale_mult"], out


def _extend(src, video: Path, start: int, stop: int, keys: set[int], method, layer: rl.LayerSettings,
            calibration: str, out: dict, seeds: dict, hints: dict, own_maps: dict, candidates: list[str],
            folder: Path) -> list[str]:
    """A close call between direct coding and the chain (PILOT_EXTEND_RATIO): both coded again on
    PILOT_EXTEND_FRAMES frames at the QP their searches found, with the main pass's rate control;
    their entries in ``out`` take those bytes. Returns the candidates left to choose from."""
    chain = min((k for k in candidates if k != "direct"), key=lambda k: out[k]["bytes"])
    ratio = out["direct"]["bytes"] / max(out[chain]["bytes"], 1.0)
    n = min(PILOT_EXTEND_FRAMES, stop - start)
    if not PILOT_EXTEND_RATIO or n <= out["frames"] or not 1 / PILOT_EXTEND_RATIO <= ratio <= PILOT_EXTEND_RATIO:
        return candidates
    with VideoReader(video, src.info.width, src.info.height) as reader:
        frames = [(i, rgb, mosaic, prepare_frame(rgb, mosaic, src.info))
                  for i, rgb, mosaic in _frames(src, reader, start, start + n)]
    for k in ("direct", chain):
        v, pred = out[k], k.split("+")[0]
        nbytes, psnrs, _ = _probe(frames, src.info, keys, method, layer, pred, layer.crf, v["qp"], calibration,
                                  k.endswith("+blocks"), folder, stop - start, v["scale_mult"],
                                  hints.setdefault(pred, {}), own_maps, control_seed=seeds.get(k), control=True)
        v["first_bytes"], v["bytes"] = v["bytes"], nbytes
        v["worst_psnr_black"] = min(p for p in psnrs if math.isfinite(p)) if any(map(math.isfinite, psnrs)) \
            else math.inf
    out["extended"] = {"frames": n, "ratio": round(ratio, 4)}
    return ["direct", chain]


def chain_pass(src, video: Path, start: int, stop: int, keys: set[int], tdir: Path, *, calibration: str,
               method=None, blocks: bool = False, gains: bool = False, layer: rl.LayerSettings | None = None,
               model: str | None = None, progress: Callable | None = None, unclip=None,
               reuse: dict | None = None):
    """Calibration, refinement and RAW layer for frames [start, stop): (calib, refine, LayerState) for the manifest.

    ``method``: the chain's predictor (with a layer always one: the network, or global-fit without
    weights); ``unclip``: the clip's NoiseModel when predictions are unclipped at black (as the decoder will);
    ``reuse``: what the sRGB pilot found on the same frames: its direct-coding pilot ("entry", "hint":
    the IDR step its trials found, "seed"), reused as it is (it codes the RAW alone, whatever the sRGB),
    and "halves", the half-steps of its searches at the chosen CRF, where this pilot's start."""
    from .container import sha256_file
    from .methods import CURVE_KNOTS
    from .refine import BLOCK, GAINS, LEVELS, pack

    count = stop - start
    predictor, crf, qp, mult, report = "chain", None, None, 1.0, None
    hints: dict = {}  # the pilot's IDR quantiser steps, per predictor: the main pass's first trial starts there
    reuse = reuse or {}
    direct, direct_seed, halves = reuse.get("entry"), reuse.get("seed"), dict(reuse.get("halves", {}))
    if reuse.get("hint"):
        hints["direct"] = dict(reuse["hint"])
    if method is not None:
        method.unclip = unclip
    if layer is not None:
        predictor, crf = layer.predictor, layer.crf
        if predictor == "auto" or layer.target_psnr is not None or (blocks and predictor == "chain"):
            predictor, blocks, qp, mult, report = pilot(src, video, start, stop, keys, method, layer,
                                                   calibration=calibration, blocks=blocks, hints=hints, direct=direct,
                                                   direct_seed=direct_seed, halves=halves, extend=True)
    cp = ChainPass(src.info, count, keys, method=method if predictor == "chain" else None, calibration=calibration,
                   blocks=blocks and predictor == "chain", gains=gains, layer=layer, predictor=predictor,
                   layer_path=tdir / LAYER_NAME, crf=crf, qp=qp, scale_mult=mult, intra_hint=hints.get(predictor))
    seed = report.pop("seed", None) if report else None
    # the pilot coded the main pass's own first P-frame (the same IDR, the same prediction) at this QP
    if cp.oc is not None and seed is not None:
        cp.oc.seed(seed)
    elif cp.rc is not None and seed is not None:
        cp.rc.gain = seed
    # the source and the video are read and prepared one to three frames ahead, in a thread (as decode does)
    reader = VideoReader(video, src.info.width, src.info.height)
    ahead = ReadAhead(_frames(src, reader, start, stop), lambda f: prepare_frame(f[1], f[2], src.info))
    try:
        while (item := ahead.next()) is not None:
            (i, rgb, mosaic), prepared = item
            cp.step(i, rgb, mosaic, prepared)
            if progress:
                progress(i + 1, count, "refining" if layer is None else "RAW layer")
        cp.close()
    except BaseException:
        cp.abort()
        raise
    finally:
        reader.close()
        ahead.close()
    if cp.st is not None:
        cp.st.pilot = rounded(report)
    calib = refine = None
    if calibration == "per-frame" or (calibration == "adaptive" and cp.changes):  # adaptive, no change: keyframe
        arr = np.asarray(cp.rows, dtype="<f2").reshape(len(cp.rows), 3 * CURVE_KNOTS + 16)
        (tdir / CALIBRATION_NAME).write_bytes(arr.tobytes())
        calib = {"mode": calibration, "file": CALIBRATION_NAME, "frames": count,
                 "values_per_frame": arr.shape[1], "knots": CURVE_KNOTS, "dtype": "float16-le"}
        if calibration == "adaptive":
            calib.update(changes=cp.changes, gain_db=ADAPT_GAIN_DB)
    if cp.maps is not None:
        from .weights import model_label, resolve_model

        (tdir / REFINE_NAME).write_bytes(pack(cp.maps))
        refine = {"mode": "blocks", "file": REFINE_NAME, "frames": count, "grid": list(cp.maps.shape[-2:]),
                  "block": 2 * BLOCK, "levels": list(LEVELS), "dtype": "uint8 zlib",
                  "model": model_label(model), "model_sha256": sha256_file(resolve_model(model))}
        if cp.gains:  # per frame: the weights, then the four packed planes' gains (format 5)
            refine["gains"] = list(GAINS)
    if cp.st is not None and cp.st.predictor == "chain":
        rows = [cp.st.maps[i] for i in cp.st.intra if i in cp.st.maps]
        (tdir / LAYER_MAPS_NAME).write_bytes(b"".join(np.asarray(r, dtype="<f2").tobytes() for r in rows))
    return calib, refine, cp.st
