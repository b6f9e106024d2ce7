"""The encoder's second pass: its own video decoded back, run through the decoder's chain.

What it produces, all chosen against the true RAW the encoder holds:

* calibration: a frame's global sRGB-to-RAW map (115 float16 values, 230 bytes), for every
  frame (per-frame) or where it beats the map in force (adaptive);
* block refinement: per 32x32 block, how far to trust the network over global-fit;
* the RAW layer (rawvid.rawlayer): closed loop, each frame's residual against the chain's
  prediction is coded (rawvid.layer_coder) and the chain continues from the reconstruction,
  as the decoder's will. Intra frames (every IDR, and frames where the chain has drifted far)
  are predicted from their own sRGB through a map fitted on the true RAW. Which predictor and
  QP: the pilot (rawvid.layer_pilot), which runs this module's ChainPass on the first frames.
"""
from __future__ import annotations

import dataclasses

import math
from pathlib import Path
from typing import Callable

import numpy as np

from . import ratecontrol as rctl, rawlayer as rl
from .bayer import normalise, pack as bayer_pack, raw_planes, srgb_half
from .chain import direct_prediction, fit_own_map, own_prediction, predict_frame
from .layer_coder import LAYER_MAPS_NAME, LAYER_NAME, LayerState, code_layer, scale_bounds
from .manifest import rounded
from .metrics import psnr
from .pipeline import ReadAhead
from .ratecontrol import OffsetController
from .steering import X265_QP_MAX
from .video import VideoReader

CALIBRATION_NAME = "calibration.f16"
REFINE_NAME = "refine.u8.zlib"
#: adaptive calibration stores a frame's own map where its global fit beats the map in force by
#: more than this (dB). Measured on the scenario clips (32 frames, default mode): 0.1 dB kept 2.75
#: maps a clip for 42.32 dB, a map every frame 42.29, 0.5 dB 1.0 map and 42.28, none 41.50.
ADAPT_GAIN_DB = 0.1
#: adaptive calibration fits every frame's own map on this many pixels: 0.04 s a 1600x900 frame
#: here against 0.18 s for the 200,000 of an intra frame's map
ADAPT_SAMPLES = 50_000
#: an intra frame replaces a chained one when its prediction is this much better (dB)
INTRA_GAIN_DB = 1.0


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
            layer = dataclasses.replace(layer, transform=rl.layer_transform(layer, predictor, info))
            # direct coding under a target: its QP steered per frame (its scale cannot move, see below)
            steered = predictor == "direct" and layer.target_psnr is not None and not layer.lossless \
                and qp is not None
            self.st = LayerState(layer, predictor, crf=crf, qp=qp, steered=steered)
            self.writer = rl.LayerWriter(layer_path, info.width, info.height, info.fps, info.bits, layer, crf, qp,
                                         steered)
            lo, self.base_scale, hi = scale_bounds(info, predictor, layer.transform)
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
        #: lossy keyframes in the paper's mode: only the IDRs have pictures, the rest is the chain alone
        self.keyframes_only = layer is not None and layer.keyframes_only

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
            if p_pred < self.last_intra_psnr - INTRA_GAIN_DB and not self.keyframes_only:  # drifted: a fresh start?
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
        if self.keyframes_only and not idr:  # no picture: the decoder's frame is the prediction, as here
            st.scales.append([])
            st.gains.append(None)
            recon = pred
        else:
            recon = code_layer(self.writer, self.rc, st, i, idr, pred, true_int, info, self.min_scale,
                               self.base_scale, p_pred, self.intra_aim, self.bounds, self.intra_hint, self.oc,
                               fresh=intra and not idr)
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

    def seed(self, value: float | None) -> None:
        """Start the rate control where a pilot's probe of the same first P-frame left it: a steered
        layer's QP offset from that frame's PSNR, otherwise the distortion model's gain (None: as it is)."""
        if value is None:
            return
        if self.oc is not None:
            self.oc.seed(value)
        elif self.rc is not None:
            self.rc.gain = value

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


def read_frames(src, reader, start: int, stop: int):
    """(index in the range, decoded sRGB, true mosaic) of frames [start, stop): the source beside its video."""
    for fr, rgb in zip(src.frames(start, stop), reader):
        yield fr.index - start, rgb, fr.mosaic


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
    own_maps = None  # intra frames' own maps a pilot fitted already (ChainPass.own_maps)
    reuse = reuse or {}
    direct, direct_seed, halves = reuse.get("entry"), reuse.get("seed"), dict(reuse.get("halves", {}))
    if reuse.get("hint"):
        hints["direct"] = dict(reuse["hint"])
    if method is not None:
        method.unclip = unclip
    if layer is not None and layer.keyframes_only:  # lossy keyframes: one QP for the intra pictures, no pilot
        from .layer_pilot import keyframe_qp

        predictor = "chain"
        qp, report, own_maps = keyframe_qp(src, video, start, layer)
    elif layer is not None:
        predictor, crf = layer.predictor, layer.crf
        if predictor == "auto" or layer.target_psnr is not None or (blocks and predictor == "chain"):
            from .layer_pilot import pilot  # (it runs this module's ChainPass)

            predictor, blocks, qp, mult, report = pilot(src, video, start, stop, keys, method, layer,
                                                   calibration=calibration, blocks=blocks, hints=hints, direct=direct,
                                                   direct_seed=direct_seed, halves=halves, extend=True)
            layer = dataclasses.replace(layer, transform=report.get("transform", layer.transform))
    cp = ChainPass(src.info, count, keys, method=method if predictor == "chain" else None, calibration=calibration,
                   blocks=blocks and predictor == "chain", gains=gains, layer=layer, predictor=predictor,
                   layer_path=tdir / LAYER_NAME, crf=crf, qp=qp, scale_mult=mult, intra_hint=hints.get(predictor),
                   own_maps=own_maps)
    seed = report.pop("seed", None) if report else None
    # the pilot coded the main pass's own first P-frame (the same IDR, the same prediction) at this QP
    cp.seed(seed)
    # the source and the video are read and prepared one to three frames ahead, in a thread (as decode does)
    reader = VideoReader(video, src.info.width, src.info.height)
    ahead = ReadAhead(read_frames(src, reader, start, stop), lambda f: prepare_frame(f[1], f[2], src.info))
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
