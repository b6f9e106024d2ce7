"""``rawvid bench --rd``: rate-distortion of rawvid's modes against coding the Bayer planes directly.

Every codec, rawvid's modes and the references alike, has one small interface (after
CompressAI's bench codecs): ``run(clip frames) -> RDPoint`` with the bytes it stored and
the frames it gives back, scored against the true RAW. Rates are bits per Bayer sample
(frames x width x height) counting every byte: for rawvid the whole .rvd (``bpp``) and
everything but the sRGB track (``bpp_raw``: the .rvd's size minus that of its sRGB track
remuxed alone into Matroska, i.e. the RAW layer, keyframes, side information, manifest and
the framing they add); a reference has no sRGB track, so its two rates are the same.

Quality: black-subtracted PSNR pooled over the clip (10 log10 of 1 / the mean squared
error of all frames; lossless frames count as zero error), the paper's protocol (divided
by 2^bits - 1, no black subtraction) pooled the same way, and the lowest frame's PSNR.

References:
* ``x265-bayer``: the four CFA planes tiled 2x2 into one 12-bit grey picture (14-bit
  data shifted to 12 bits, 10-bit data spread over them), x265 with the RAW layer's settings
  (PSNR-tuned, no B-frames), a CRF ladder and a constant-QP one (moved up for depths under 12);
* ``x265-hadamard``: the same, CRF ladder, on the Hadamard transform of each 2x2 quad, as the RAW layer
  codes from format 6 (rawvid.rawlayer.analyse): how much of the layer's gain is the transform alone;
* ``jpegxl``: JPEG XL per frame on the same tiles at the source's bit depth (imagecodecs);
* ``ffv1-bayer``: FFV1 lossless on the tiles (16-bit grey);
* ``lj92-dng``: lossless-JPEG DNGs, what MLV and CinemaDNG store.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import rawlayer as rl
from .bayer import pack, unpack
from .noise import measure_clip_noise

#: --target-psnr ladder, in dB relative to each clip's measured noise floor.
DEFAULT_TARGETS = (-6.0, -3.0, 0.0, 2.0, 4.0)
#: The direct coder's ladders. Dense where the curves bend: near the noise floor x265's rate
#: climbs steeply (on a test clip, QP 9 -> 8 -> 7: 0.22 -> 0.32 -> 0.49 bits per sample for
#: +0.5 and +0.7 dB), and log-rate is concave in PSNR there, so a chord between sparse points
#: (the ladders were 30/24/18/12/8/4 and 36/30/24/18/12/8/4/1) under-states the direct coder's
#: rate between them (by 7% at 41.6 dB on that clip: 0.373 against 0.399 measured).
DEFAULT_X265_CRFS = (30, 27, 24, 21, 18, 15, 12, 10, 8, 6, 4, 2)
#: Every QP from 27 down: with steps of 2-3 the chord still bent on a test clip near its floor (QP 21 -> 18:
#: 0.20 -> 0.64 bits per sample for +2.0 dB; the chord put 0.278 at 41.2 dB, where CRF 18 measured 0.336).
DEFAULT_X265_QPS = (36, 33, 30, *range(27, 0, -1))
#: the two ladders of direct coding the RAW layer is measured against (the issue's references)
REFERENCES = ("x265-bayer", "x265-bayer-qp")
#: direct coding with the layer's transform: a stronger reference, reported beside them
TRANSFORMED_REFERENCE = "x265-hadamard"
#: the paper's mode with lossy keyframes (rawvid encode --keyframe-psnr), and its keyframes' PSNR ladder
#: relative to each clip's noise floor
LOSSY_KEY_CURVE = "rawvid-paper-lossykey"
DEFAULT_KEYFRAME_TARGETS = (4.0, 8.0, 12.0)
DEFAULT_JXL_DISTANCES = (2.0, 1.0, 0.5, 0.25)
#: x265-hadamard's CRFs: its scale is twice as coarse, so its ladder sits 6 lower (QP 0 tops out near
#: 54-55 dB, rawvid.rawlayer.DIRECT_FLOOR_K)
DEFAULT_HADAMARD_CRFS = (27, 24, 21, 18, 15, 12, 9, 6, 4, 2, 0)


@dataclass
class RDPoint:
    codec: str  # the curve: x265-bayer, rawvid-target, rawvid-paper, ...
    setting: str
    clip: str
    bpp: float  # whole file, bits per Bayer sample
    bpp_raw: float  # everything but the sRGB track
    psnr_black: float
    psnr_paper: float
    min_frame_psnr_black: float
    frames: int
    encode_s: float = 0.0
    decode_s: float = 0.0
    lossless: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class ClipData:
    """A clip's true RAW, in memory (the bench clips are small)."""

    name: str
    info: object
    mosaics: list
    noise_floor: float
    noise: dict


def load_clip(name: str, src, max_frames: int | None) -> ClipData:
    stop = src.frame_count if max_frames is None else min(max_frames, src.frame_count)
    mosaics = [fr.mosaic.copy() for fr in src.frames(0, stop)]
    model, floor = measure_clip_noise(mosaics[0], src.info)  # as the encoder measures it
    return ClipData(name, src.info, mosaics, floor, model.to_dict())


def score(clip: ClipData, frames: list[np.ndarray]) -> dict:
    """Pooled black-subtracted and paper PSNR, and the worst frame, of decoded mosaics."""
    info = clip.info
    span = float(info.white - info.black)
    full = float((1 << info.bits) - 1)
    if len(frames) != len(clip.mosaics):
        raise ValueError(f"{clip.name}: {len(frames)} frames decoded, {len(clip.mosaics)} expected")
    mses = [float(np.mean((f.astype(np.float64) - t) ** 2)) for f, t in zip(frames, clip.mosaics)]
    pooled = float(np.mean(mses))

    def db(mse: float, peak: float) -> float:
        return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)

    return {"psnr_black": db(pooled, span), "psnr_paper": db(pooled, full),
            "min_frame_psnr_black": min(db(m, span) for m in mses),
            "frame_psnr_black": [round(db(m, span), 3) if m else None for m in mses]}


def _samples(clip: ClipData) -> int:
    return len(clip.mosaics) * clip.info.width * clip.info.height


# --------------------------------------------------------------------------- references
def _tiles(clip: ClipData) -> list[np.ndarray]:
    return [rl.tile(pack(m, clip.info.cfa)) for m in clip.mosaics]


def _untile(clip: ClipData, img: np.ndarray) -> np.ndarray:
    return unpack(rl.untile(img), clip.info.cfa)


def x265_bayer(clip: ClipData, crf: float | None = None, preset: str = "fast", qp: int | None = None,
               transform: str = "none") -> RDPoint:
    """x265 straight on the tiled Bayer planes (12-bit grey, inter, the RAW layer's settings), at a
    CRF or at a constant QP (I-frames at the same QP, as the layer codes a target); ``hadamard``: on
    the transform of each 2x2 quad, around mid-scale at twice the scale, as the layer's direct coding."""
    info = clip.info
    shift = rl.full_range_scale(info.bits)  # a RAW under 12 bits spread over the codes, as rawvid's direct coding
    mid = float(1 << (info.bits - 1))
    h, w = info.height, info.width
    settings = rl.LayerSettings(crf=24.0 if crf is None else crf, preset=preset)
    t0 = time.perf_counter()
    enc = rl._open_encoder(settings, w, h, Fraction(25), crf=crf, qp=qp)
    packets = []
    for i, t in enumerate(_tiles(clip)):
        if transform == "none":
            code = np.clip(np.rint(t / shift), 0, rl.X265_MAX).astype(np.uint16)
        else:
            code = rl.to_code(rl.analyse(rl.untile(t.astype(np.float64) - mid), transform), 2 * shift)
        packets += enc.encode(rl._frame(code, "gray12le", i, i == 0))
    packets += enc.encode(None)
    enc_s = time.perf_counter() - t0
    nbytes = sum(p.size for p in packets)
    t0 = time.perf_counter()
    dec = rl._decoder("hevc", enc.extradata, w, h)
    out = []
    for p in packets:
        out += [f.to_ndarray() for f in dec.decode(p)]
    out += [f.to_ndarray() for f in dec.decode(None)]
    if transform == "none":
        frames = [_untile(clip, np.clip(np.rint(o.astype(np.float64) * shift), 0, (1 << info.bits) - 1)
                          .astype(np.uint16)) for o in out]
    else:
        frames = [unpack(np.clip(mid + rl.synthesise(o, 2 * shift, transform), 0, (1 << info.bits) - 1)
                         .astype(np.uint16), info.cfa) for o in out]
    dec_s = time.perf_counter() - t0
    s = score(clip, frames)
    bpp = 8 * nbytes / _samples(clip)
    name = TRANSFORMED_REFERENCE if transform != "none" else "x265-bayer" if qp is None else "x265-bayer-qp"
    return RDPoint(name, f"crf {crf:g}" if qp is None else f"qp {qp}",
                   clip.name, bpp, bpp, s["psnr_black"], s["psnr_paper"],
                   s["min_frame_psnr_black"], len(frames), enc_s, dec_s,
                   extra={"frame_psnr_black": s["frame_psnr_black"]})


def ladder(qs, bits: int) -> list:
    """A CRF or QP ladder for a ``bits``-deep RAW: under 12 bits the RAW is spread over the codes,
    which moves a quality 6 QP per bit up; the ladder is then the given one and that one moved
    (the same qualities again, and finer ones than QP 0 reached unspread)."""
    qs = list(qs)
    if bits >= 12:
        return qs
    up = 6 * (12 - bits)
    return sorted(set(qs) | {min(51, q + up) for q in qs}, reverse=True)


def x265_ladders(clip: ClipData, crfs=DEFAULT_X265_CRFS, qps=DEFAULT_X265_QPS) -> list[RDPoint]:
    """x265 on the Bayer planes at every CRF and every constant QP of the two ladders (for the clip's depth)."""
    bits = clip.info.bits
    return [x265_bayer(clip, q) for q in ladder(crfs, bits)] + [x265_bayer(clip, qp=q) for q in ladder(qps, bits)]


def jpegxl(clip: ClipData, distance: float) -> RDPoint:
    """JPEG XL per frame on the tiled planes at the source's bit depth."""
    import imagecodecs

    t0 = time.perf_counter()
    blobs = [imagecodecs.jpegxl_encode(t, distance=distance, bitspersample=clip.info.bits, effort=3)
             for t in _tiles(clip)]
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = [_untile(clip, imagecodecs.jpegxl_decode(b)) for b in blobs]
    dec_s = time.perf_counter() - t0
    s = score(clip, frames)
    bpp = 8 * sum(len(b) for b in blobs) / _samples(clip)
    return RDPoint("jpegxl", f"distance {distance:g}", clip.name, bpp, bpp, s["psnr_black"], s["psnr_paper"],
                   s["min_frame_psnr_black"], len(frames), enc_s, dec_s)


def ffv1_bayer(clip: ClipData) -> RDPoint:
    """FFV1 lossless on the tiled planes (16-bit grey)."""
    settings = rl.LayerSettings(codec="ffv1")
    h, w = clip.info.height, clip.info.width
    t0 = time.perf_counter()
    enc = rl._open_encoder(settings, w, h, Fraction(25))
    packets = []
    for i, t in enumerate(_tiles(clip)):
        packets += enc.encode(rl._frame(t.astype(np.uint16), "gray16le", i, False))
    packets += enc.encode(None)
    enc_s = time.perf_counter() - t0
    dec = rl._decoder("ffv1", enc.extradata, w, h)
    frames = []
    for p in packets:
        frames += [_untile(clip, f.to_ndarray()) for f in dec.decode(p)]
    s = score(clip, frames)
    bpp = 8 * sum(p.size for p in packets) / _samples(clip)
    return RDPoint("ffv1-bayer", "lossless", clip.name, bpp, bpp, s["psnr_black"], s["psnr_paper"],
                   s["min_frame_psnr_black"], len(frames), enc_s, 0.0, lossless=math.isinf(s["psnr_black"]))


def lj92_dng(clip: ClipData) -> RDPoint:
    from .dng import encode_dng

    t0 = time.perf_counter()
    nbytes = sum(len(encode_dng(m, clip.info, compress=True)) for m in clip.mosaics)
    bpp = 8 * nbytes / _samples(clip)
    return RDPoint("lj92-dng", "lossless", clip.name, bpp, bpp, math.inf, math.inf, math.inf, len(clip.mosaics),
                   time.perf_counter() - t0, 0.0, lossless=True)


# --------------------------------------------------------------------------- rawvid
def preview_bytes(rvd_path: Path, work: Path) -> int:
    """Bytes of the sRGB track alone as a Matroska file (stream copy): the file a preview would be.

    The RAW part of an .rvd is everything it holds beyond that: the RAW layer's packets, the
    keyframes, the side information, the manifest and the framing they add.
    """
    import subprocess

    from .video import ffmpeg_exe

    out = work / "preview.mkv"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(rvd_path), "-map", "0:v:0",
                    "-c", "copy", "-f", "matroska", str(out)], check=True, capture_output=True)
    n = out.stat().st_size
    out.unlink()
    return n


def rawvid_point(clip: ClipData, open_src, codec: str, setting: str, opts, work: Path, device: str = "auto",
                 max_frames: int | None = None) -> RDPoint:
    """Encode with rawvid, decode with its defaults, score every frame (keyframes included)."""
    from .codec import DecodeOptions, decode, encode, frame_name
    from .container import RvdFile
    from .dng import read_dng

    rvd_path = work / "rd.rvd"
    out = work / "rd-frames"
    shutil.rmtree(out, ignore_errors=True)
    opts.stop = len(clip.mosaics)
    t0 = time.perf_counter()
    with open_src() as src:
        encode(src, rvd_path, opts, force=True)
    enc_s = time.perf_counter() - t0
    sizes = RvdFile(rvd_path).sizes()
    manifest = RvdFile(rvd_path).manifest
    raw_part = sizes["file_bytes"] - preview_bytes(rvd_path, work)
    t0 = time.perf_counter()
    dec = decode(rvd_path, out, DecodeOptions(device=device))
    dec_s = time.perf_counter() - t0
    frames = [read_dng(out / frame_name(dec.clip, i))[0] for i in range(len(clip.mosaics))]
    s = score(clip, frames)
    shutil.rmtree(out, ignore_errors=True)
    extra = {"frame_psnr_black": s["frame_psnr_black"], "srgb_bpp": sizes["video_bits_per_pixel"],
             "srgb_crf": manifest["video"].get("crf")}
    if manifest["video"].get("crf_pilot"):
        extra["srgb_pilot"] = manifest["video"]["crf_pilot"]
    lay = manifest.get("raw_layer")
    if lay:
        extra.update(passes=[len(x) for x in lay["scales"]], intra=lay["intra"], target=lay.get("target_psnr"),
                     predictor=lay["predictor"]["mode"], refine=(manifest.get("refine") or {}).get("mode"),
                     crf=lay.get("crf"), qp=lay.get("qp"), pilot=lay.get("pilot"),
                     transform=lay.get("transform", "none"))
    rvd_path.unlink(missing_ok=True)
    return RDPoint(codec, setting, clip.name, sizes["bits_per_pixel"], 8 * raw_part / _samples(clip),
                   s["psnr_black"], s["psnr_paper"], s["min_frame_psnr_black"], len(frames), enc_s, dec_s,
                   lossless=math.isinf(s["psnr_black"]), extra=extra)


# --------------------------------------------------------------------------- BD-rate
def bd_rate(ref: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjontegaard delta rate (%) of ``test`` against ``ref``: (bpp, psnr) points, finite PSNR only.

    A cubic (fewer points: lower order) of log-rate over PSNR for each curve, integrated over
    the PSNR range both cover; negative means ``test`` needs fewer bits.
    """
    ref = sorted((r, p) for r, p in ref if r > 0 and math.isfinite(p))
    test = sorted((r, p) for r, p in test if r > 0 and math.isfinite(p))
    if len(ref) < 2 or len(test) < 2:
        return None
    lo = max(min(p for _, p in ref), min(p for _, p in test))
    hi = min(max(p for _, p in ref), max(p for _, p in test))
    if hi <= lo:
        return None

    def integral(pts):
        p = np.array([q for _, q in pts])
        r = np.log(np.array([r for r, _ in pts]))
        order = min(3, len(pts) - 1)
        poly = np.polyint(np.polyfit(p, r, order))
        return (np.polyval(poly, hi) - np.polyval(poly, lo)) / (hi - lo)

    return float((math.exp(integral(test) - integral(ref)) - 1) * 100)


def summarise(points: list[RDPoint], floors: dict[str, float]) -> dict:
    """BD-rates of every curve against each x265-bayer ladder (CRF, constant QP), per clip and
    averaged; RAW part and whole file."""
    by_clip: dict[str, dict[str, list[RDPoint]]] = {}
    for p in points:
        by_clip.setdefault(p.clip, {}).setdefault(p.codec, []).append(p)
    out: dict = {"noise_floor_db": floors}
    for ref_name in REFERENCES + (TRANSFORMED_REFERENCE,):
        table: dict[str, dict] = {}
        for clip, curves in by_clip.items():
            ref = curves.get(ref_name, [])
            for codec, pts in curves.items():
                if codec == ref_name:
                    continue
                row = table.setdefault(codec, {"raw": {}, "file": {}})
                for key, rate in (("raw", "bpp_raw"), ("file", "bpp")):
                    row[key][clip] = bd_rate([(getattr(p, rate), p.psnr_black) for p in ref],
                                             [(getattr(p, rate), p.psnr_black) for p in pts])
        for row in table.values():
            for k in ("raw", "file"):
                vals = [v for v in row[k].values() if v is not None]
                row[f"mean_{k}"] = float(np.mean(vals)) if vals else None
        out[f"bd_rate_vs_{ref_name.replace('-', '_')}_percent"] = table
    return out


def _rate_at(points: list[RDPoint], clip: str, codec: str, psnr: float, key: str = "psnr_black") -> float | None:
    """A reference curve's RAW rate at a PSNR (``key``: pooled, or its worst frame's; log-interpolated;
    None outside the curve)."""
    ref = sorted((getattr(q, key), q.bpp_raw) for q in points if q.clip == clip and q.codec == codec)
    ref = [(a, b) for a, b in ref if math.isfinite(a) and b > 0]
    if len(ref) >= 2 and ref[0][0] <= psnr <= ref[-1][0]:
        return float(np.exp(np.interp(psnr, [a for a, _ in ref], [math.log(b) for _, b in ref])))
    return None


def _saving(rate: float, refs: list[float | None]) -> float | None:
    """Percent saved against the lowest of the references' rates (None: none reaches the point)."""
    known = [v for v in refs if v is not None]
    return None if not known else (1 - rate / min(known)) * 100


def savings_at_targets(points: list[RDPoint], floors: dict[str, float]) -> list[dict]:
    """For every --target-psnr point: each x265-bayer ladder's rate at the same pooled PSNR (log-interpolated)
    and the saving against the stronger of the two (the lower rate); and the same at the same worst frame
    (a ladder's constant QP or CRF lets a hard frame, an exposure step or a cut, fall several dB under the
    clip's mean, which --target-psnr does not: its rate to hold every frame as rawvid does)."""
    rows = []
    for p in points:
        if not p.codec.startswith("rawvid-target"):
            continue
        x_crf, x_qp = (_rate_at(points, p.clip, r, p.psnr_black) for r in REFERENCES)
        w_crf, w_qp = (_rate_at(points, p.clip, r, p.min_frame_psnr_black, "min_frame_psnr_black")
                       for r in REFERENCES)
        rows.append({"clip": p.clip, "codec": p.codec, "target": p.extra.get("target"), "floor": floors.get(p.clip),
                     "target_minus_floor": None if p.extra.get("target") is None else
                     round(p.extra["target"] - floors.get(p.clip, 0), 2),
                     "psnr_black": p.psnr_black, "min_frame": p.min_frame_psnr_black, "bpp_raw": p.bpp_raw,
                     "x265_bayer_bpp_same_psnr": x_crf, "x265_bayer_qp_bpp_same_psnr": x_qp,
                     "saving_percent": _saving(p.bpp_raw, [x_crf, x_qp]),
                     "x265_bayer_bpp_same_worst_frame": w_crf, "x265_bayer_qp_bpp_same_worst_frame": w_qp,
                     "saving_same_worst_frame_percent": _saving(p.bpp_raw, [w_crf, w_qp]),
                     "saving_vs_x265_hadamard_percent": _saving(p.bpp_raw, [
                         _rate_at(points, p.clip, TRANSFORMED_REFERENCE, p.psnr_black)])})
    return rows


def to_json(points: list[RDPoint]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(p).items()} | (
        {"lossless": True} if p.lossless else {}) for p in points]


def distinct_colour(plt, i: int):
    """The i-th of 20 colours: tab20's ten strong hues first, then their light partners."""
    return plt.get_cmap("tab20")((2 * i) % 20 + (2 * i // 20) % 2)


def plot(points: list[RDPoint], floors: dict[str, float], path: Path, rate: str = "bpp_raw") -> Path:
    """One RD panel per clip: bits per Bayer sample (log) against black-subtracted PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = sorted({p.clip for p in points})
    cols = min(3, len(clips))
    rows = -(-len(clips) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    codecs = sorted({p.codec for p in points})  # one colour per curve in every panel (tab10 repeats after 10)
    colour = {c: distinct_colour(plt, i) for i, c in enumerate(codecs)}
    for ax, clip in zip(axes.ravel(), clips):
        curves: dict[str, list[RDPoint]] = {}
        for p in points:
            if p.clip == clip:
                curves.setdefault(p.codec, []).append(p)
        top = max([p.psnr_black for p in points if p.clip == clip and math.isfinite(p.psnr_black)] + [floors[clip]])
        for codec, pts in sorted(curves.items()):
            pts = sorted(pts, key=lambda q: getattr(q, rate))
            ys = [p.psnr_black if math.isfinite(p.psnr_black) else top + 3 for p in pts]
            ax.plot([getattr(p, rate) for p in pts], ys, "o-" if len(pts) > 1 else "s", label=codec, ms=4,
                    c=colour[codec])
        ax.axhline(floors[clip], ls="--", c="grey", lw=0.8, label="noise floor")
        ax.axhline(top + 3, ls=":", c="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_title(clip, fontsize=9)
        ax.set_xlabel("bits per Bayer sample" + (" (RAW part)" if rate == "bpp_raw" else " (whole file)"))
        ax.set_ylabel("PSNR black-subtracted (dB); top line = lossless")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(clips):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_savings(savings: list[dict], path: Path) -> Path:
    """The RAW part's saving against x265 on the Bayer planes per clip, against target - noise floor.

    A row per rawvid curve (the encoder's preview, a preview given with --crf, ...), two panels
    each: at the same pooled PSNR and at the same worst frame; a colour per clip in every panel;
    the 30% and 0 lines are the bars of a layered codec (30% or more well under the floor, never
    larger above it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codecs = sorted({r["codec"] for r in savings}) or ["-"]
    clips = sorted({r["clip"] for r in savings})
    colour = {c: distinct_colour(plt, i) for i, c in enumerate(clips)}
    fig, axes = plt.subplots(len(codecs), 2, figsize=(12, 3.4 * len(codecs) + 0.4), sharey=True, sharex=True,
                             squeeze=False)
    for row, codec in enumerate(codecs):
        for ax, key, title in ((axes[row][0], "saving_percent", "at the same pooled PSNR"),
                               (axes[row][1], "saving_same_worst_frame_percent", "at the same worst frame")):
            curves: dict[str, list[tuple[float, float]]] = {}
            for r in savings:
                if r["codec"] == codec and r.get(key) is not None:
                    curves.setdefault(r["clip"], []).append((r["target_minus_floor"], r[key]))
            for clip, xy in sorted(curves.items()):
                xy.sort()
                ax.plot([x for x, _ in xy], [y for _, y in xy], "o-", ms=3.5, lw=1, c=colour[clip],
                        label=clip.split("/")[-1])
            ax.axhline(30, ls="--", c="grey", lw=0.8)
            ax.axhline(0, c="k", lw=0.8)
            ax.axvline(0, ls=":", c="grey", lw=0.8)
            ax.set_title(f"{codec}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel("RAW part saving vs x265-bayer (%)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("target - the clip's noise floor (dB)")
    handles = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center left", bbox_to_anchor=(0.83, 0.5))
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the sweep
@dataclass
class RDOptions:
    targets: tuple[float, ...] = DEFAULT_TARGETS  # relative to each clip's noise floor
    paper_crfs: tuple[int, ...] = (16, 24, 32)
    srgb_crf: int = 16  # the sRGB track of the paper's default point
    #: the sRGB track of the layered modes, one --target-psnr curve each; 0: the encoder's own choice
    #: (rawvid.srgb_pilot, what ``rawvid encode --target-psnr`` does without --crf)
    layer_srgb_crfs: tuple[int, ...] = (0,)
    x265_crfs: tuple[float, ...] = DEFAULT_X265_CRFS
    x265_qps: tuple[int, ...] = DEFAULT_X265_QPS
    hadamard_crfs: tuple[float, ...] = DEFAULT_HADAMARD_CRFS
    jxl_distances: tuple[float, ...] = DEFAULT_JXL_DISTANCES
    #: the paper's mode with lossy keyframes (``rawvid encode --keyframe-psnr``), the keyframes' PSNR relative
    #: to each clip's noise floor, at the paper's sRGB CRF (the first of paper_crfs)
    keyframe_targets: tuple[float, ...] = DEFAULT_KEYFRAME_TARGETS
    lossless: bool = True
    default_point: bool = True  # the paper's default (sRGB CRF 16, block refinement)
    max_frames: int | None = None
    device: str = "auto"
    #: only these curves (codec names: x265-bayer, rawvid-lossless, ...); None: every one
    curves: tuple[str, ...] | None = None
    #: the paper's mode (lossless and lossy keyframes) at each RAW keyframe interval (0: the first frame
    #: only); a curve per interval, ``-kfiN`` after its name
    keyframe_intervals: tuple[int, ...] = (0,)


#: every curve run_rd can draw, by codec name
CURVES = ("x265-bayer", "x265-bayer-qp", "x265-hadamard", "jpegxl", "ffv1-bayer", "lj92-dng", "rawvid-paper",
          "rawvid-paper-lossykey", "rawvid-default", "rawvid-target", "rawvid-lossless")


def target_options(target: float, srgb_crf: int = 0, predictor: str = "auto", chroma: str = "444",
                   transform: str = "hadamard"):
    """EncodeOptions of `rawvid encode --target-psnr TARGET`: the sRGB at ``srgb_crf`` (``--crf``) or,
    0, chosen by the encoder among rawvid.srgb_pilot.CANDIDATE_CRFS (no ``--crf``); ``transform``:
    the layer's (rawvid.rawlayer.TRANSFORMS; ``none``: as before format 6)."""
    from .codec import EncodeOptions
    from .rawlayer import LayerSettings
    from .srgb_pilot import CANDIDATE_CRFS, LAYERED_SRGB_CRF
    from .video import VideoSettings

    return EncodeOptions(video=VideoSettings.make(crf=srgb_crf or LAYERED_SRGB_CRF, chroma=chroma),
                         srgb_crfs=() if srgb_crf else CANDIDATE_CRFS,
                         raw_layer=LayerSettings(target_psnr=target, predictor=predictor, transform=transform))


def lossy_key_options(keyframe_psnr: float, srgb_crf: int = 16, device: str = "auto", keyframe_interval: int = 0):
    """EncodeOptions of the paper's mode (no refinement, keyframe calibration) with lossy keyframes:
    `rawvid encode --keyframe-psnr DB --refine off --calibration keyframe --crf N --keyframe-interval K`."""
    from .codec import EncodeOptions
    from .rawlayer import LayerSettings
    from .video import VideoSettings

    return EncodeOptions(video=VideoSettings.make(crf=srgb_crf), calibration="keyframe", refine="off", device=device,
                         keyframe_interval=keyframe_interval,
                         raw_layer=LayerSettings(target_psnr=keyframe_psnr, keyframes_only=True))


def curve_base(codec: str) -> str:
    """A curve's name without its variant (``-kfi30``: a keyframe interval, ``-srgb24``: a fixed preview)."""
    import re

    return re.sub(r"-(kfi\d+|srgb\w+)$", "", codec)


def run_rd(clips, opts: RDOptions, work: Path, progress=None) -> dict:
    """Every rawvid mode and every reference on every clip; points, BD-rates and target savings."""
    from .codec import EncodeOptions
    from .rawlayer import LayerSettings
    from .srgb_pilot import CANDIDATE_CRFS, LAYERED_SRGB_CRF
    from .video import VideoSettings

    points: list[RDPoint] = []
    floors: dict[str, float] = {}
    for n, c in enumerate(clips):
        with c.open() as src:
            data = load_clip(c.name, src, opts.max_frames)
        floors[c.name] = data.noise_floor
        jobs = []
        jobs += [("x265-bayer", (lambda q=q: x265_bayer(data, q))) for q in opts.x265_crfs]
        jobs += [("x265-bayer-qp", (lambda q=q: x265_bayer(data, qp=q))) for q in opts.x265_qps]
        jobs += [(TRANSFORMED_REFERENCE, (lambda q=q: x265_bayer(data, q, transform="hadamard")))
                 for q in opts.hadamard_crfs]
        jobs += [("jpegxl", (lambda d=d: jpegxl(data, d))) for d in opts.jxl_distances]
        if opts.lossless:
            jobs += [("ffv1-bayer", lambda: ffv1_bayer(data)), ("lj92-dng", lambda: lj92_dng(data))]

        def mode(codec, setting, **kw):
            video = VideoSettings.make(crf=kw.pop("crf", opts.srgb_crf))
            return (codec, lambda: rawvid_point(data, c.open, codec, setting,
                                                EncodeOptions(video=video, device=opts.device, **kw), work,
                                                opts.device))

        q = opts.paper_crfs[0] if opts.paper_crfs else opts.srgb_crf
        for kfi in opts.keyframe_intervals:
            sfx = f"-kfi{kfi}" if kfi else ""
            jobs += [mode(f"rawvid-paper{sfx}", f"srgb crf {q_}", crf=q_, calibration="keyframe", refine="off",
                          keyframe_interval=kfi) for q_ in opts.paper_crfs]
            for d in opts.keyframe_targets:
                t = round(data.noise_floor + d, 2)
                jobs.append((LOSSY_KEY_CURVE + sfx, lambda t=t, d=d, kfi=kfi, sfx=sfx, q=q: rawvid_point(
                    data, c.open, LOSSY_KEY_CURVE + sfx, f"keyframes {t:g} dB (floor {d:+g}), srgb crf {q}",
                    lossy_key_options(t, q, opts.device, kfi), work, opts.device)))
        if opts.default_point:
            jobs.append(mode("rawvid-default", f"srgb crf {opts.srgb_crf}"))
        for q in opts.layer_srgb_crfs:
            name = "rawvid-target" if q == opts.layer_srgb_crfs[0] else f"rawvid-target-srgb{q or 'auto'}"
            for d in opts.targets:
                t = round(data.noise_floor + d, 2)
                jobs.append(mode(name, f"target {t:g} dB (floor {d:+g}), srgb crf {q or 'auto'}",
                                 crf=q or LAYERED_SRGB_CRF, srgb_crfs=() if q else CANDIDATE_CRFS,
                                 raw_layer=LayerSettings(target_psnr=t)))
        if opts.lossless:
            q = next((q for q in opts.layer_srgb_crfs if q), LAYERED_SRGB_CRF)
            jobs.append(mode("rawvid-lossless", f"lossless raw, srgb crf {q}", crf=q,
                             raw_layer=LayerSettings(codec="ffv1")))
        if opts.curves is not None:  # a curve's variants (-kfiN, -srgbN) go with it
            jobs = [(codec, job) for codec, job in jobs if curve_base(codec) in opts.curves]
        for k, (codec, job) in enumerate(jobs):
            if progress:
                progress(f"{c.name}: {codec}", k, len(jobs), n, len(clips))
            points.append(job())
    return {"points": to_json(points), "summary": summarise(points, floors),
            "target_savings": savings_at_targets(points, floors), "_points": points, "floors": floors}
