"""The RAW layer's pilot: which predictor (the chain's residual or the RAW itself) and, under
--target-psnr, which x265 QP, chosen by coding the clip's first frames closed loop every way.

Each probe runs the main pass's own code (rawvid.sideinfo.ChainPass, rawvid.layer_coder) on
throwaway encoders, so what it foretells is what the main pass will make.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import numpy as np

from . import ratecontrol as rctl, rawlayer as rl
from .sideinfo import ChainPass, prepare_frame, read_frames
from .video import VideoReader

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
#: half an x265 QP step, as a factor on the scale
HALF_QP = 2 ** (1 / 12)
#: under --target-psnr the chain's QP is at most this many QP above the one at which coding the RAW
#: itself (direct) reaches the target, both QPs of pictures of the same kind (a Hadamard picture spans
#: twice the range: 6 QP lower holds as many steps across it). Counted as an untransformed picture's QP
#: for a transformed chain (6 QP looser, session 19, 2eea435), the rotating and zooming 10-bit scenario
#: clip below fell 0.7-1.5 dB under its target on frames 28-31 of 120 after 8 passes (6 dB under its
#: floor, sRGB CRF 32), as it had at a headroom of 6 in session 12. Where the first frames' prediction alone reaches it, any QP
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
    cp.seed(control_seed)
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


def _worst(psnrs: list[float]) -> float:
    """The lowest finite PSNR of a probe's frames (inf: every frame lossless or none)."""
    return min((p for p in psnrs if math.isfinite(p)), default=math.inf)


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
          extend: bool = False, untransformed: bool | Callable[[float], bool] | None = None
          ) -> tuple[str, bool, int | None, float, dict]:
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
    ``untransformed``: a chosen chain coded with the quad transform is coded again without it
    (_untransformed); by default in the main pass's pilot only (``extend``); a callable: where it
    says so of the chosen entry's bytes.
    """
    import tempfile

    n = min(PILOT_FRAMES, stop - start)
    with VideoReader(video, src.info.width, src.info.height) as reader:  # each prepared once for every probe
        frames = [(i, rgb, mosaic, prepare_frame(rgb, mosaic, src.info))
                  for i, rgb, mosaic in read_frames(src, reader, start, start + n)]
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
        def probe(cand, qp, mult=1.0, lay=layer):
            pred = cand.split("+")[0]
            nbytes, psnrs, seed = _probe(frames, info, keys, method, lay, pred, lay.crf, qp, calibration,
                                         cand.endswith("+blocks"), Path(td), stop - start, mult,
                                         hints.setdefault(pred, {}), own_maps)
            return nbytes, _worst(psnrs), seed

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
                    # in the chain's own picture's QP: a transformed picture spans twice the range
                    # (rl.transform_gain), so the same number of steps across it lies 6 QP lower
                    anchor += round(6 * math.log2(rl.transform_gain(d.get("transform", "none"))
                                                  / rl.transform_gain(rl.layer_transform(layer, "chain", info))))
                    # never under QP 0 (x265 crashed on a negative QP: direct coding at QP 1, untransformed,
                    # anchored a transformed chain at -5)
                    qtop = max(0, min(top, 2 * anchor + (d["scale_mult"] > 1) + 2 * CHAIN_QP_HEADROOM))
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
            if pred == "direct":
                out[pred]["transform"] = rl.layer_transform(layer, pred, info)
            if "qp" in hints.get(pred, {}):  # a steered layer's IDR: its absolute QP
                out[pred]["intra_qp"] = round(hints[pred]["qp"], 4)
            seeds[pred] = seed
        if extend and target and "direct" in candidates and len(candidates) > 1:
            candidates, coded = _extend(src, video, start, stop, keys, method, layer, calibration, out, seeds,
                                        hints, own_maps, candidates, frames, Path(td))
        top = max(out[k]["worst_psnr_black"] for k in candidates)
        for k in candidates:
            v = out[k]
            gap = 0.0 if not math.isfinite(top) or target else top - v["worst_psnr_black"]
            v["cost"] = v["bytes"] * 2 ** (min(gap, 12.0) / 6)
        chosen = min(candidates, key=lambda k: out[k]["cost"])
        out["transform"] = rl.layer_transform(layer, chosen.split("+")[0], info)
        # by default the main pass's pilot only (``extend``): the sRGB pilot runs this one for every candidate
        # CRF, and the probe at each cost 23% of the encode (1600x900, 24 frames, target 45 dB: 0.671 -> 0.516
        # frames/s); it asks for it where the layer weighs in the file (srgb_pilot.UNTRANSFORMED_SHARE)
        again_untransformed = extend if untransformed is None else untransformed
        if callable(again_untransformed):
            again_untransformed = again_untransformed(out[chosen]["bytes"])
        if again_untransformed and chosen != "direct" and out["transform"] != "none" and not layer.lossless:
            v = out[chosen]

            def again(lay: rl.LayerSettings) -> tuple:
                """The chosen candidate coded as it was, with ``lay``'s transform: a close call's entry, as
                _extend coded it (its frames, with rate control, seeded by the 4-frame probe's own)."""
                nbytes, worst, seed = probe(chosen, v["qp"], v["scale_mult"], lay)
                if "first_bytes" not in v:
                    return nbytes, worst, seed
                nbytes, psnrs, _ = _probe(coded, info, keys, method, lay, chosen.split("+")[0], lay.crf, v["qp"],
                                          calibration, chosen.endswith("+blocks"), Path(td), stop - start,
                                          v["scale_mult"], hints.setdefault(chosen.split("+")[0], {}), own_maps,
                                          control_seed=seed, control=True)
                return nbytes, _worst(psnrs), seed

            _untransformed(out, chosen, seeds, layer, target, again)
    out["chosen"] = chosen
    out["seed"] = seeds.get(chosen)  # for chain_pass, which seeds its controller with it (not stored)
    return chosen.split("+")[0], chosen.endswith("+blocks"), out[chosen]["qp"], out[chosen]["scale_mult"], out


def _untransformed(out: dict, chosen: str, seeds: dict, layer: rl.LayerSettings, target: bool,
                   probe: Callable) -> None:
    """The chain's residual coded again without the quad transform, at the QP and scale its search
    found (a close call's entry as _extend coded it); kept (``out["transform"] = "none"``, the chosen
    entry taking its bytes) where it costs less for the same quality. The transform compacts the Bayer phases' shared signal; a residual that is
    mostly noise, or whose phases' errors differ, it can spread instead: measured with the preview at
    CRF 28 on the 10 test clips, 16 frames, 5 targets, the chain's layer with it 0.7-45.6% smaller on
    most points but 12-24% larger on imx135 field016 at 0 to +4 dB over its floor (4 frames at QP 10:
    56.4 KB transformed, 41.5 KB as they are at QP 11)."""
    v = out[chosen]
    nbytes, worst, seed = probe(dataclasses.replace(layer, transform="none"))
    if target:  # at the QP's aim; a close call's entries with rate control: within the top-ups' band
        floor = layer.target_psnr - rctl.TOP_UP_DB if "first_bytes" in v else layer.target_psnr + rctl.AIM_DB
        cost = nbytes if worst >= floor else math.inf
    else:  # the same quality: bytes x 2^(PSNR short of the transformed / 6), as the predictors are compared
        gap = min(max(v["worst_psnr_black"] - worst, -12.0), 12.0)
        cost = v["cost"] / max(v["bytes"], 1.0) * nbytes * 2 ** (gap / 6)
    v["untransformed"] = {"bytes": nbytes, "worst_psnr_black": worst}
    if cost < v["cost"]:
        v["transformed_bytes"], v["bytes"], v["worst_psnr_black"], v["cost"] = v["bytes"], nbytes, worst, cost
        out["transform"] = "none"
        seeds[chosen] = seed


def _extend(src, video: Path, start: int, stop: int, keys: set[int], method, layer: rl.LayerSettings,
            calibration: str, out: dict, seeds: dict, hints: dict, own_maps: dict, candidates: list[str],
            frames: list, folder: Path) -> list[str]:
    """A close call between direct coding and the chain (PILOT_EXTEND_RATIO): both coded again on
    PILOT_EXTEND_FRAMES frames at the QP their searches found, with the main pass's rate control;
    their entries in ``out`` take those bytes. Returns the candidates left to choose from and the
    frames coded. ``frames``: the pilot's, prepared; the frames after them are read and prepared here."""
    chain = min((k for k in candidates if k != "direct"), key=lambda k: out[k]["bytes"])
    ratio = out["direct"]["bytes"] / max(out[chain]["bytes"], 1.0)
    n = min(PILOT_EXTEND_FRAMES, stop - start)
    if not PILOT_EXTEND_RATIO or n <= out["frames"] or not 1 / PILOT_EXTEND_RATIO <= ratio <= PILOT_EXTEND_RATIO:
        return candidates, frames
    with VideoReader(video, src.info.width, src.info.height) as reader:
        frames = frames + [(i, rgb, mosaic, prepare_frame(rgb, mosaic, src.info))
                           for i, rgb, mosaic in read_frames(src, reader, start, start + n) if i >= len(frames)]
    for k in ("direct", chain):
        v, pred = out[k], k.split("+")[0]
        nbytes, psnrs, _ = _probe(frames, src.info, keys, method, layer, pred, layer.crf, v["qp"], calibration,
                                  k.endswith("+blocks"), folder, stop - start, v["scale_mult"],
                                  hints.setdefault(pred, {}), own_maps, control_seed=seeds.get(k), control=True)
        v["first_bytes"], v["bytes"] = v["bytes"], nbytes
        v["worst_psnr_black"] = _worst(psnrs)
    out["extended"] = {"frames": n, "ratio": round(ratio, 4)}
    return ["direct", chain], frames


def keyframe_qp(src, video: Path, start: int, layer: rl.LayerSettings) -> tuple[int, dict, dict]:
    """The x265 QP of a keyframes-only layer (lossy keyframes in the paper's mode): the coarsest at which
    the first frame, predicted from its own sRGB through its fitted map and coded as an IDR at the base
    scale, reaches the target + AIM_DB; each keyframe's scale is then chosen by trial encodes at that QP
    (rawvid.layer_coder), which covers the half QP step between two QPs. search_half over QP 0..51 by
    trial encodes of that one picture (about half a second each at 1600x900): (QP, report, the first
    frame's own map as ChainPass caches it, {0: (map, row)}, so that the main pass does not fit it again)."""
    from .bayer import pack as bayer_pack
    from .chain import fit_own_map, own_prediction
    from .layer_coder import scale_bounds
    from .steering import X265_QP_MAX
    from .video import fps_fraction

    info = src.info
    with VideoReader(video, info.width, info.height) as reader:
        _, rgb, mosaic = next(read_frames(src, reader, start, start + 1))
    srgb, truth = prepare_frame(rgb, mosaic, info)
    true_int = bayer_pack(mosaic, info.cfa)
    own = fit_own_map(srgb, truth)
    pred = own_prediction(own[1], srgb, info)
    res = rl.analyse(true_int.astype(np.int64) - pred, layer.transform)
    base = scale_bounds(info, "chain", layer.transform)[1]
    aim = layer.target_psnr + rctl.AIM_DB
    code = rl.to_code(res, base)
    rate = fps_fraction(info.fps)
    trials: dict[int, float] = {}

    def reaches(q: int) -> tuple[bool, int]:
        dec = rl.trial_idr(layer, code, info.width, info.height, rate, qp=q)
        recon = rl.reconstruct(pred, dec, base, info.bits, layer.transform)
        trials[q] = round(rl.psnr_black(recon, true_int, info.black, info.white), 3)
        return trials[q] >= aim, q

    # None: even QP 0 at the base scale falls short, and the keyframes' scales go finer from there
    q = search_half(reaches, X265_QP_MAX) or 0
    return q, {"keyframes_only": {"qp": q, "aim": round(aim, 3), "trials": sorted(trials.items())}}, {0: own}
