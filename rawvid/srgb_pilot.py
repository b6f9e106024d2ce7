"""With a RAW layer under ``--target-psnr``: the sRGB track's CRF, chosen jointly with the layer.

The sRGB track is then both the preview and the predictor's input. A better sRGB costs more
bytes and leaves the layer less to code; which side wins depends on the clip (how much its
sRGB costs, how well it predicts the RAW) and on the target. Measured on the test split
(``benchmarks/srgb_crf_sweep.py``), the CRF that makes the smallest whole file ranged from 24
to 36 between clips and targets. So the encoder tries each candidate CRF on the clip's first
frames: it codes them as the sRGB track would be coded, runs the RAW layer's own pilot
(:func:`rawvid.layer_pilot.pilot`, closed loop, at the target) on what the decoder would see, and
keeps the CRF whose foretold whole file (sRGB plus layer, each extrapolated to the clip) is
smallest. Direct coding of the RAW does not depend on the sRGB: it is probed once.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from . import rawlayer as rl
from .layer_pilot import PILOT_FRAMES, pilot
from .video import VideoWriter

#: the CRFs tried when the user gives none (H.265 4:4:4; bench: the best per clip and target was among them)
CANDIDATE_CRFS = (24, 28, 32, 36)
#: the sRGB CRF of the other RAW layers (--raw-crf, --lossless-raw): the layer carries the fidelity
LAYERED_SRGB_CRF = 32
#: a candidate CRF's chain is coded again without the quad transform only where its layer is at least this
#: share of the foretold file (the transform moves the layer by 0-25%: under a fifth of the file, a few
#: percent of it). At every CRF, each of the four probes cost the default encode 3-6% (1600x900, 24
#: frames, target 45 dB, a layer 2-20% of the file: 0.537 -> 0.464 frames/s allowing for the VM)
UNTRANSFORMED_SHARE = 0.2


def packet_sizes(path: Path) -> list[int]:
    """Bytes of each video packet of a file, in decode order (the first is the IDR picture)."""
    import av

    with av.open(str(path)) as c:
        return [p.size for p in c.demux(c.streams.video[0]) if p.size]


#: x265's default keyframe interval, which the sRGB track keeps: an intra picture at least this often
SRGB_KEYINT = 250
#: the sRGB frames each candidate CRF codes to foretell the track's bytes (the layer's pilot reads
#: the first PILOT_FRAMES of them). x265's CRF spends less on the last frames of a short encode
#: (nothing after them to reference them), so a short pilot underestimates the track: measured on the
#: 12 scenario clips x 4 CRFs against 12-frame encodes, 4 frames foretold -20.9% (geometric mean; the
#: worst -55%), 8 frames -11.4% (mean error 13% against 28%). But the error is much the same at every
#: CRF, so the choice hardly moves: 8 frames made the whole file 1.90% over the best fixed CRF where 4
#: made it 1.64% (36 points; benchmarks/srgb_crf_sweep.py --srgb-pilot-frames). Kept at 4.
SRGB_PILOT_FRAMES = 4


def foretell(sizes: list[int], count: int) -> float:
    """A clip's bytes from its first frames' packets: the first (intra) once per SRGB_KEYINT frames, the
    mean of the rest for every other frame."""
    if not sizes:
        return 0.0
    if count <= 1 or len(sizes) == 1:
        return float(sizes[0]) * max(count, 1)
    n_intra = math.ceil(count / SRGB_KEYINT)
    return float(sizes[0]) * n_intra + float(np.mean(sizes[1:])) * (count - n_intra)


def choose_srgb_crf(src, rgbs: list[np.ndarray], video, start: int, stop: int, keys: set[int], method,
                    layer: rl.LayerSettings, *, calibration: str, blocks: bool, candidates: tuple[int, ...],
                    work: Path, progress=None) -> tuple[int, dict]:
    """The candidate CRF with the smallest foretold whole file, and the report (bytes foretold per CRF).

    ``rgbs``: the rendered sRGB of the clip's first frames (at least the pilot's); ``video``: the
    sRGB track's VideoSettings, whose CRF is varied; ``method``: the chain's predictor, with the
    clip's ``unclip`` already set, as the main pass will run it."""
    info = src.info
    count = stop - start
    n = min(PILOT_FRAMES, count, len(rgbs))
    m = min(SRGB_PILOT_FRAMES, count, len(rgbs))  # coded to foretell the sRGB track
    tries = ["chain", "direct"] if layer.predictor == "auto" else [layer.predictor]
    report: dict = {"frames": n, "candidates": {}}
    direct: dict | None = None  # the RAW itself: the same whatever the sRGB, probed once
    direct_seed = None
    halves: dict = {}  # per candidate, the half-step its last search found: the next CRF's search starts there
    found: dict = {}  # per CRF, those half-steps after its pilots
    hints: dict = {}  # the IDR's quantiser step, per predictor: each CRF's trials start from the last one's
    # the chain's residual is coded with the quad transform and, where the layer weighs in the file
    # (UNTRANSFORMED_SHARE), again without it (layer_pilot._untransformed): a residual of noise the
    # transform spreads (imx135 field016 at 2 and 4 dB over its floor, costed transformed only, went to
    # direct coding behind a coarser preview, the file 3-4% larger than with the chain untransformed
    # behind CRF 24). The verdict moves with the preview (infiniteisp outdoor1 3 dB under: as they are
    # behind CRF 24, transformed behind 36), so each CRF has its own
    chain = dataclasses.replace(layer, predictor="chain")
    for k, crf in enumerate(candidates):
        if progress:
            progress(k, len(candidates), "choosing the sRGB CRF")
        path = work / f"srgb-pilot-{crf}.mkv"
        with VideoWriter(path, info.width, info.height, info.fps, dataclasses.replace(video, crf=crf)) as w:
            for rgb in rgbs[:m]:
                w.write(rgb)
        srgb = foretell(packet_sizes(path), count)
        if direct is None:
            rep = pilot(src, path, start, stop, keys, method, dataclasses.replace(layer, predictor="direct"),
                        calibration=calibration, blocks=False, hints=hints, halves=halves)[4]
            direct, direct_seed = rep["direct"], rep.get("seed")
        costs = {"direct": direct["bytes"]} if "direct" in tries else {}
        chain_transform = None
        if "chain" in tries:  # (the pilot codes nothing again where the chain is untransformed or lossless)
            rep = pilot(src, path, start, stop, keys, method, chain, calibration=calibration, blocks=blocks,
                        direct=direct, hints=hints, halves=halves,
                        untransformed=lambda b, s=srgb: b >= UNTRANSFORMED_SHARE * (s + b))[4]
            costs["chain"] = rep[rep["chosen"]]["bytes"]
            chain_transform = rep["transform"]
        found[crf] = dict(halves)
        best = min(costs, key=costs.get)
        report["candidates"][str(crf)] = {"srgb_bytes": round(srgb), "layer_bytes": round(costs[best]),
                                          "predictor": best, "chain_transform": chain_transform}
        path.unlink(missing_ok=True)
    if progress:
        progress(len(candidates), len(candidates), "choosing the sRGB CRF")
    total = {int(k): v["srgb_bytes"] + v["layer_bytes"] for k, v in report["candidates"].items()}
    chosen = min(total, key=lambda k: (total[k], -k))  # a tie goes to the cheaper preview
    report["chosen"] = chosen
    # for the main pass's pilot: direct coding (it does not depend on the sRGB: its entry, IDR step and
    # controller seed) and where its searches start (the half-steps found at the chosen CRF)
    report["reuse"] = {"halves": found.get(chosen, {})}
    if direct is not None:
        report["reuse"].update(entry=direct, hint=dict(hints.get("direct", {})), seed=direct_seed)
    return chosen, report
