"""The RAW layer: a second video track coding what the de-rendering did not predict.

Every frame's Bayer planes [R, Gr, Gb, B] are tiled 2x2 into one grey picture the size
of the mosaic (R | Gr over Gb | B), and the track codes the residual

    true RAW - prediction

where the prediction is the decoder's own chain (network, block refinement and
calibration as without a layer) or, at an intra frame, the frame's own sRGB through a
global map the encoder fitted on the true RAW. It is closed loop: both sides continue
the chain from the reconstruction (prediction + decoded residual), never from the truth.

Two codecs, each frame by frame in-process through PyAV:

* ``x265``: HEVC Main 12 4:0:0 (``gray12le``), no B-frames, no lookahead, so every
  packet decodes before the next frame is predicted. The residual mapping is
  ``code = clip(round(residual / scale) + 2048, 0, 4095)`` and
  ``recon = clip(pred + round((code - 2048) * scale), 0, 2^bits - 1)``; ``scale`` is
  per frame (and per pass), stored in the manifest: it is the rate controller's knob.
* ``ffv1``: lossless, ``gray16le``, ``code = (true - pred + 32768) mod 65536``; the
  reconstruction is the source, bit for bit.
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import FormatError

LAYOUT = "planes tiled 2x2: R Gr / Gb B"
X265_OFFSET, X265_MAX = 2048, 4095
FFV1_OFFSET = 32768
#: x265 settings of the layer: PSNR-tuned (no psycho-visual or adaptive quantisation), zero
#: latency (no B-frames, no lookahead, one frame thread), no scene-cut I-frames (the encoder
#: places IDRs itself), no version SEI (2 KB a frame with repeated headers).
X265_PARAMS = ("bframes=0:rc-lookahead=0:frame-threads=1:cutree=0:scenecut=0:psy-rd=0:psy-rdoq=0:aq-mode=0:"
               "info=0:open-gop=0:keyint=100000:min-keyint=1:log-level=error")
#: Bounds of the per-frame scale (DN per code step). Under ``--target-psnr`` the encoder picks the
#: clip's x265 CRF on its first frames (the coarse knob, RD-efficient) and moves the scale
#: within SCALE_RANGE of the bit depth's own scale per frame (the fine knob).
MIN_SCALE, MAX_SCALE = 1.0 / 16, 1024.0
SCALE_RANGE = (0.125, 4.0)
MAX_PASSES = 4
#: ``--target-psnr``: the controller aims this far above the target, and tops a frame up with
#: another pass when it lands more than TOP_UP_DB under it (the promise: within 0.3 dB, never 0.5 under).
#: The distortion model below foretells a frame's PSNR with 0.075 dB RMS error (test split, 3 targets,
#: 10 clips; max 0.28): aiming 0.1 above keeps nearly every frame inside the band.
AIM_DB, TOP_UP_DB = 0.1, 0.3
#: where the scale cannot move (direct coding), a top-up only holds the floor: measured on a test clip
#: drifting 0.05 dB a frame, topping up at 0.3 dB under cost 13% more bytes
FLOOR_TOP_UP_DB = 0.45
#: the distortion model: 8x8 DCT coefficients of the residual, at most this many of them (a regular
#: subsample of blocks on large frames), and the dead zone: a coefficient whose energy is under
#: MODEL_DEADZONE x the quantiser's noise power is lost whole (fitted: RMS error 0.143 dB at 1, 0.092 at 3,
#: 0.075 at 6, 0.078 at 10; blocks of 4 and 16 did worse)
MODEL_BLOCK, MODEL_SAMPLES, MODEL_DEADZONE = 8, 1 << 18, 6.0
#: at most this many trial encodes choose an intra frame's scale
INTRA_TRIALS = 3
#: the model's gain of a P-frame over the IDR before it, until a P-frame is seen (x265's I/P QP ratio,
#: 1.4: about 3 QP, a factor 2 on the quantiser's noise power)
IP_GAIN = 2.0
#: a top-up pass is at least this much finer than the pass before it
TOP_UP_STEP = 0.9
#: the scale only grows when a frame lands this far above the aim
GROW_DB = 0.5


# --------------------------------------------------------------------------- pure mappings
def tile(planes: np.ndarray) -> np.ndarray:
    """4 x h x w planes [R, Gr, Gb, B] -> one 2h x 2w picture (R Gr / Gb B)."""
    return np.block([[planes[0], planes[1]], [planes[2], planes[3]]])


def untile(img: np.ndarray) -> np.ndarray:
    """Inverse of :func:`tile`."""
    h, w = img.shape[0] // 2, img.shape[1] // 2
    return np.stack([img[:h, :w], img[:h, w:], img[h:, :w], img[h:, w:]])


def base_scale(bits: int) -> float:
    """The scale that maps a ``bits``-deep RAW onto 12 bits (1 for 12-bit and below)."""
    return float(2 ** max(0, bits - 12))


def round_scale(s: float) -> float:
    """Scales are stored with 4 significant digits, so the manifest holds exactly what was used."""
    s = min(max(float(s), MIN_SCALE), MAX_SCALE)
    return float(f"{s:.4g}")


def clamp_scale(s: float, lo: float, hi: float) -> float:
    """A scale within [lo, hi], as stored."""
    return round_scale(min(max(s, lo), hi))


def to_code(residual: np.ndarray, scale: float) -> np.ndarray:
    """Residual (DN) -> 12-bit codes around 2048 (clipped: the closed loop sees the clipping)."""
    q = np.rint(np.asarray(residual, np.float64) / scale) + X265_OFFSET
    return np.clip(q, 0, X265_MAX).astype(np.uint16)


def from_code(code: np.ndarray, scale: float) -> np.ndarray:
    """12-bit codes -> residual in DN (integers, float64)."""
    return np.rint((code.astype(np.float64) - X265_OFFSET) * scale)


def apply_residual(pred: np.ndarray, residual: np.ndarray, bits: int) -> np.ndarray:
    """prediction + residual, clipped to the bit depth (values under black are kept)."""
    return np.clip(pred.astype(np.float64) + residual, 0, (1 << bits) - 1).astype(np.uint16)


def lossless_code(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(true - pred + 32768) mod 65536: exact for any 16-bit values."""
    return ((truth.astype(np.int64) - pred.astype(np.int64) + FFV1_OFFSET) & 0xFFFF).astype(np.uint16)


def lossless_recon(pred: np.ndarray, code: np.ndarray) -> np.ndarray:
    return ((pred.astype(np.int64) + code.astype(np.int64) - FFV1_OFFSET) & 0xFFFF).astype(np.uint16)


def psnr_black(recon: np.ndarray, truth: np.ndarray, black: int, white: int) -> float:
    """Black-subtracted PSNR of integer planes (the bench's protocol)."""
    from .metrics import psnr

    return psnr(recon, truth, peak=float(white - black))


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (rows: frequencies)."""
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


@dataclass(frozen=True)
class Spectrum:
    """A residual's 8x8 DCT coefficient energies, sorted, with their running sum: the distortion model's input."""

    energy: np.ndarray
    cumsum: np.ndarray

    @classmethod
    def of(cls, residual: np.ndarray) -> "Spectrum":
        n = MODEL_BLOCK
        h, w = residual.shape[0] // n, residual.shape[1] // n
        step = max(1, math.ceil(math.sqrt(h * w * n * n / MODEL_SAMPLES)))
        blocks = np.asarray(residual[: h * n, : w * n], np.float64).reshape(h, n, w, n).transpose(0, 2, 1, 3)
        blocks = blocks[::step, ::step].reshape(-1, n, n)
        c = dct_matrix(n)
        e = np.sort(((c @ blocks @ c.T) ** 2).ravel())
        return cls(e, np.cumsum(e))

    @property
    def mean(self) -> float:
        """The residual's mean energy: the distortion when nothing is coded."""
        return float(self.cumsum[-1] / len(self.energy)) if len(self.energy) else 0.0

    def mse(self, t: float) -> float:
        """Foretold MSE when x265's quantiser leaves noise power ``t``: coefficients under the dead zone
        (MODEL_DEADZONE x t) are lost, the others carry ``t``."""
        k = int(np.searchsorted(self.energy, MODEL_DEADZONE * t))
        lost = float(self.cumsum[k - 1]) if k else 0.0
        return (lost + t * (len(self.energy) - k)) / max(1, len(self.energy))

    def gain_at(self, psnr: float, scale: float, peak: float) -> float | None:
        """The quantiser noise power per scale squared that a frame coded at ``scale`` to ``psnr`` shows
        (the model's one learnt number; None where it is not defined)."""
        t = self.noise_power(mse_at(psnr, peak)) if math.isfinite(psnr) else None
        return None if t is None else t / (scale * scale)

    def noise_power(self, mse: float) -> float | None:
        """The quantiser noise power at which :meth:`mse` is ``mse`` (None: no coding needed, or none reaches it)."""
        if mse >= self.mean or mse <= 0:
            return None
        lo, hi = 1e-12, float(self.energy[-1]) + 1.0  # mse(t) rises with t, from 0 to the mean
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if self.mse(mid) < mse else (lo, mid)
        return math.sqrt(lo * hi)


def mse_at(psnr: float, peak: float) -> float:
    """The MSE of a black-subtracted PSNR."""
    return peak * peak * 10 ** (-psnr / 10)


def crc(planes: np.ndarray) -> int:
    """CRC-32 of a reconstruction (uint16 little-endian), to check the decoder rebuilt the encoder's frame."""
    return zlib.crc32(np.ascontiguousarray(planes, dtype="<u2").tobytes())


# --------------------------------------------------------------------------- settings
@dataclass
class LayerSettings:
    """How the RAW layer is coded (``None`` in EncodeOptions: no layer, the paper's design)."""

    codec: str = "x265"  # x265 | ffv1 (lossless)
    target_psnr: float | None = None  # per-frame black-subtracted PSNR to reach (x265, fixed QP, scale varies)
    crf: float | None = None  # fixed quality (x265 CRF, fixed scale)
    preset: str = "fast"
    predictor: str = "auto"  # chain (the de-rendering) | direct (x265 on the Bayer planes) | auto (a pilot decides)

    def __post_init__(self) -> None:
        if self.codec not in ("x265", "ffv1"):
            raise ValueError(f"unknown RAW layer codec {self.codec!r}")
        if self.codec == "x265" and (self.target_psnr is None) == (self.crf is None):
            raise ValueError("an x265 RAW layer needs exactly one of target_psnr and crf")
        if self.target_psnr is not None and not 20.0 <= self.target_psnr <= 90.0:
            raise ValueError(f"--target-psnr {self.target_psnr} is outside 20..90 dB")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise ValueError(f"--raw-crf {self.crf} is outside 0..51")
        if self.predictor not in ("auto", "chain", "direct"):
            raise ValueError(f"unknown RAW layer predictor {self.predictor!r} (auto, chain or direct)")

    @property
    def lossless(self) -> bool:
        return self.codec == "ffv1"

    def codec_options(self, crf: float | None = None, qp: int | None = None) -> tuple[str, str, dict]:
        """(libavcodec encoder, pixel format, options); ``qp``: the constant QP the encoder chose for a target."""
        if self.lossless:
            return "ffv1", "gray16le", {"level": "3", "coder": "range_tab", "context": "0", "g": "1",
                                        "slices": "4", "slicecrc": "1"}
        if qp is not None:  # constant QP, I-frames at the P-frames' QP: steady per-frame quality for a target
            rc = f"qp={int(qp)}:ipratio=1"
        else:
            crf = (self.crf if self.crf is not None else 24.0) if crf is None else crf
            rc = f"crf={crf:.2f}"
        return "libx265", "gray12le", {"preset": self.preset, "forced-idr": "1", "x265-params": f"{rc}:{X265_PARAMS}"}

    def to_dict(self, crf: float | None = None, qp: int | None = None) -> dict:
        """The settings as the manifest records them (``qp``: the one the encoder chose for a target)."""
        enc, fmt, opts = self.codec_options(crf, qp)
        return {"codec": "hevc" if enc == "libx265" else "ffv1", "encoder": enc, "pix_fmt": fmt, "options": opts,
                "target_psnr": self.target_psnr, "crf": self.crf if crf is None else crf, "qp": qp,
                "lossless": self.lossless, "predictor_setting": self.predictor}


def _open_encoder(settings: LayerSettings, width: int, height: int, rate: Fraction, ctx=None,
                  crf: float | None = None, qp: int | None = None):
    import av

    enc, fmt, opts = settings.codec_options(crf, qp)
    if ctx is None:
        ctx = av.CodecContext.create(enc, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, fmt
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    ctx.options = dict(opts)
    ctx.thread_count = 1 if enc == "libx265" else 0
    return ctx


def _decoder(codec_name: str, extradata: bytes | None, width: int = 0, height: int = 0):
    import av

    dec = av.CodecContext.create(codec_name, "r")
    dec.width, dec.height = width, height  # FFV1 needs them before its first packet
    if extradata:
        dec.extradata = extradata
    dec.thread_type = "SLICE"  # frame threads would delay the output by a frame
    return dec


def _frame(img: np.ndarray, fmt: str, pts: int, idr: bool):
    import av

    f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt)
    f.pts = pts
    if idr:
        f.pict_type = av.video.frame.PictureType.I
    return f


def _decode_one(dec, packets, path, what: str) -> np.ndarray:
    frames = []
    for p in packets:
        frames += dec.decode(p)
    if len(frames) != 1:
        raise FormatError(path, f"RAW layer {what}: {len(frames)} pictures decoded from one packet")
    return frames[0].to_ndarray()


# --------------------------------------------------------------------------- writing
class LayerWriter:
    """Encode the layer frame by frame into a Matroska file, decoding every packet back at once."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, bits: int,
                 settings: LayerSettings, crf: float | None = None, qp: int | None = None):
        import av

        from .video import fps_fraction

        self.path, self.width, self.height, self.bits = Path(path), width, height, bits
        self.settings, self.crf, self.qp = settings, crf, qp
        self.rate = fps_fraction(fps)
        self._out = av.open(os.fspath(self.path), "w", format="matroska")
        enc, self.fmt, _ = settings.codec_options(crf, qp)
        self.stream = self._out.add_stream(enc, rate=self.rate)
        _open_encoder(settings, width, height, self.rate, self.stream.codec_context, crf, qp)
        self.stream.time_base = Fraction(1, 1000)
        self._dec = None
        self.pictures = 0
        self.bytes = 0
        self._last_pts = -1

    def _pts(self, index: int) -> int:
        """Milliseconds, strictly increasing (a frame with top-up passes uses the next milliseconds)."""
        pts = max(self._last_pts + 1, int(1000 * index / float(self.rate)))
        self._last_pts = pts
        return pts

    def code(self, img: np.ndarray, index: int, idr: bool) -> np.ndarray:
        """Encode one picture, mux its packet, return what a decoder reads back from it."""
        pts = self._pts(index)
        packets = self.stream.encode(_frame(img, self.fmt, pts, idr))
        if self._dec is None:
            self._dec = _decoder("ffv1" if self.settings.lossless else "hevc", self.stream.codec_context.extradata,
                                 self.width, self.height)
        for p in packets:
            self.bytes += p.size
        dec = _decode_one(self._dec, packets, self.path, f"picture {self.pictures}")
        self._out.mux(packets)
        self.pictures += 1
        return dec

    def trial(self, img: np.ndarray) -> np.ndarray:
        """What this layer's encoder makes of ``img`` coded as an IDR, from a fresh encoder (nothing is
        written): an IDR references nothing, so the layer's own encoder would code it alike."""
        ctx = _open_encoder(self.settings, self.width, self.height, self.rate, None, self.crf, self.qp)
        packets = list(ctx.encode(_frame(img, self.fmt, 0, True))) + list(ctx.encode(None))
        dec = _decoder("hevc", ctx.extradata, self.width, self.height)
        return _decode_one(dec, packets, self.path, "trial picture")

    def close(self) -> None:
        rest = self.stream.encode(None)
        if rest:
            raise FormatError(self.path, f"RAW layer encoder held {len(rest)} packets back")
        self._out.close()

    def abort(self) -> None:
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - already failing; the temp folder goes with it
            pass


# --------------------------------------------------------------------------- rate control
@dataclass
class RateController:
    """Chooses each frame's scale so that its black-subtracted PSNR lands just above the target.

    A distortion model (:class:`Spectrum`) foretells a frame's MSE at a scale from its residual's
    DCT energies and one number learnt on the previous P-frame: the quantiser's noise power per
    scale squared (x265's QP is constant, so it only drifts with content). Measured on the test
    split it foretells a frame's PSNR with 0.075 dB RMS error, where "the last frame's PSNR, moved
    20 log10 dB per factor of scale" missed by 0.25 (max 1.6). Until a P-frame has been seen (and
    without a spectrum) each frame starts from the last one's scale corrected by its miss, the
    slope learnt from the frames. A frame that still lands more than TOP_UP_DB under the target
    gets another pass on its remaining error.
    """

    target: float
    lo: float = MIN_SCALE  # the scales this clip may use
    hi: float = MAX_SCALE
    scale: float | None = None
    peak: float = 1.0  # white - black: PSNR <-> MSE
    #: the model's quantiser noise power per scale squared (None: no P-frame learnt yet)
    gain: float | None = None
    intra_gain: float | None = None  # the same, of the last IDR (x265 codes I-pictures finer)
    #: dB lost per 20 log10 of scale: 1 at high rates, lower where x265 skips most of the residual
    slope: float = 0.8
    last: tuple | None = None  # the last frame's (scale, PSNR, inter), to measure the slope

    def clamp(self, s: float) -> float:
        return clamp_scale(s, self.lo, self.hi)

    def first_guess(self, base: float, spec: Spectrum | None = None) -> float:
        gain = self.gain if self.gain is not None else \
            None if self.intra_gain is None else self.intra_gain * IP_GAIN
        if spec is not None and gain is not None:
            t = spec.noise_power(mse_at(self.target + AIM_DB, self.peak))
            return self.clamp(self.hi if t is None else math.sqrt(t / gain))
        return self.clamp(self.scale if self.scale is not None else base)

    def observe(self, scale: float, psnr: float, inter: bool = True, gain: float | None = None) -> None:
        """Learn from a frame's first pass; the next frame starts from the scale that would have hit the aim.

        ``gain``: the model's gain the frame showed (:meth:`Spectrum.gain_at`), None where unknown."""
        if gain is not None and inter:
            self.gain = gain
        elif gain is not None:
            self.intra_gain = gain
        if inter and self.last is not None and self.last[2]:
            s0, p0, _ = self.last
            ds = 20 * math.log10(scale / s0)
            if abs(ds) > 0.5:  # enough movement to measure the slope (frames differ too: smooth it)
                b = min(max((p0 - psnr) / ds, 0.3), 1.2)
                self.slope = 0.7 * self.slope + 0.3 * b
        self.last = (scale, psnr, inter)
        if not inter:  # an IDR lands higher than the P-frames that follow (x265's I/P ratio): learn nothing
            return
        miss = min(max(psnr - (self.target + AIM_DB), -12.0), 12.0)
        if 0 < miss < GROW_DB:  # close above the aim: hold (growing invites a miss, and a top-up)
            miss = 0.0
        # growing slowly: above the target because the prediction alone is (x265 skips it all), a large
        # scale costs nothing now and a miss on the next frame that the prediction does not cover
        self.scale = self.clamp(scale * min(1.25, 10 ** (miss / (20 * self.slope))))

    def top_up_scale(self, scale: float, psnr: float, attempt: int = 1) -> float:
        """The scale of another pass on a frame's remaining error: finer by the miss (at least by
        TOP_UP_STEP; another pass follows if it is not enough). What a pass leaves is mostly what
        its quantiser skipped, and a slightly finer pass picks up the largest of it: measured on a
        0.5 dB miss, a pass at 0.9x the scale cost a third of the frame's bytes, one at 0.5x
        (+2.2 dB) three times them. A frame still short after a pass (``attempt`` 2, 3) is one the
        clip's QP codes coarsely (the pilot's frames were easier): each further pass steps that
        factor again as many times (measured: a frame predicted 1.5 dB under its target gained
        0.75 dB in three passes of 0.8x and stayed 0.7 dB short)."""
        step = min(TOP_UP_STEP, 10 ** ((psnr - self.target - AIM_DB) / (20 * self.slope)))
        return round_scale(scale * step ** max(1, attempt))


def intra_scale(trial, residual: np.ndarray, aim: float, peak: float, lo: float, hi: float, base: float,
                spec: Spectrum | None = None, slack: float = AIM_DB) -> tuple[float, list[tuple[float, float]]]:
    """The largest scale (within [lo, hi]) at which an intra picture reaches PSNR ``aim`` (less ``slack``),
    by trial encodes.

    An intra picture references nothing, so a fresh encoder codes it as the layer's own would:
    ``trial(scale)`` returns the PSNR. Coded at the P-frames' scale an IDR landed 0.8-3.2 dB above
    the target on every test clip (x265 codes I-pictures finer); on short clips it is the layer's
    largest frame. The first trial is at ``base``; the model (calibrated on the trial) proposes the
    second, the secant through the two trials nearest the aim (PSNR against log scale) the third;
    a trial within ``slack`` of the aim ends the search.
    Returns the scale and the trials [(scale, PSNR)]."""
    spec = spec or Spectrum.of(residual)
    want = spec.noise_power(mse_at(aim, peak))
    trials: list[tuple[float, float]] = []
    s = clamp_scale(base, lo, hi)
    for _ in range(INTRA_TRIALS):
        p = trial(s)
        trials.append((s, p))
        if abs(p - aim) <= slack or not math.isfinite(p):  # within the band, above the target
            break
        if len(trials) >= 2:
            (s0, p0), (s1, p1) = sorted(trials, key=lambda tr: abs(tr[1] - aim))[:2]
            step = 0.0 if abs(p1 - p0) < 1e-6 else (aim - p0) * (math.log(s1) - math.log(s0)) / (p1 - p0)
            nxt = s0 * math.exp(min(max(step, -2.0), 2.0))
        else:
            t = spec.noise_power(mse_at(p, peak))
            nxt = hi if want is None else s if t is None else s * math.sqrt(want / t)
        nxt = clamp_scale(nxt, lo, hi)
        if any(nxt == tr[0] for tr in trials):
            break
        s = nxt
    ok = [tr for tr in trials if tr[1] >= aim - slack]
    return (max(ok)[0] if ok else min(trials)[0]), trials


# --------------------------------------------------------------------------- reading
@dataclass
class LayerInfo:
    """The ``raw_layer`` entry of a manifest, checked (it is untrusted input)."""

    codec: str  # hevc | ffv1
    lossless: bool
    predictor: str  # chain | direct
    scales: list[list[float]]  # per frame, one scale per pass (lossless: [[1.0]] each)
    intra: set[int]
    idr: list[int]
    crcs: list[int]
    maps: dict[int, np.ndarray] = field(default_factory=dict)  # intra frame -> its global map

    @property
    def passes(self) -> list[int]:
        return [len(s) for s in self.scales]

    def load_maps(self, data: bytes, values: int, path) -> None:
        """The intra frames' global maps (float16, in the order of ``intra``), checked."""
        order = sorted(self.intra) if self.predictor == "chain" else []
        if len(data) != 2 * values * len(order):
            raise FormatError(path, f"RAW layer maps hold {len(data)} bytes, expected {2 * values * len(order)}")
        arr = np.frombuffer(data, dtype="<f2").reshape(len(order), values).astype(np.float64)
        if not np.isfinite(arr).all():
            raise FormatError(path, "RAW layer maps hold values that are not finite")
        self.maps = dict(zip(order, arr))


def parse_layer(m: dict, count: int, path) -> LayerInfo | None:
    """Validate the manifest's ``raw_layer`` (types, ranges, lengths) before anything is allocated."""
    lay = m.get("raw_layer")
    if lay is None:
        return None

    def bad(what: str) -> FormatError:
        return FormatError(path, f"RAW layer in the manifest: {what}")

    if not isinstance(lay, dict):
        raise bad("not an object")
    codec = lay.get("codec")
    if codec not in ("hevc", "ffv1"):
        raise bad(f"unknown codec {codec!r}")
    lossless = codec == "ffv1"
    pred = lay.get("predictor")
    if not isinstance(pred, dict) or pred.get("mode") not in ("chain", "direct"):
        raise bad("predictor must be an object with mode chain or direct")
    if pred["mode"] == "chain" and pred.get("method") not in ("network", "global-fit"):
        raise bad("a chain predictor needs method network or global-fit")
    if pred.get("method") == "network" and not isinstance(pred.get("model"), str):
        raise bad("a network predictor must name its model")
    scales = lay.get("scales")
    if not isinstance(scales, list) or len(scales) != count:
        raise bad(f"scales must list {count} frames")
    clean: list[list[float]] = []
    for s in scales:
        if not isinstance(s, list) or not 1 <= len(s) <= MAX_PASSES:
            raise bad("each frame needs 1 to 4 pass scales")
        for v in s:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not MIN_SCALE <= v <= MAX_SCALE:
                raise bad(f"scale {v!r} out of range")
        if lossless and len(s) != 1:
            raise bad("a lossless layer has one pass a frame")
        clean.append([float(v) for v in s])
    idr = lay.get("idr")
    intra = lay.get("intra")
    crcs = lay.get("crc32")
    for name, arr in (("idr", idr), ("intra", intra)):
        if not isinstance(arr, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count
                                                for i in arr):
            raise bad(f"{name} must list frame indices under {count}")
    if 0 not in idr or not set(idr) <= set(intra):
        raise bad("frame 0 must be an IDR and every IDR an intra frame")
    if not isinstance(crcs, list) or len(crcs) != count or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2 ** 32 for c in crcs):
        raise bad(f"crc32 must list {count} 32-bit values")
    if len(set(intra)) != len(intra) or len(set(idr)) != len(idr):
        raise bad("intra and idr must not repeat a frame")
    return LayerInfo(codec, lossless, pred["mode"], clean, set(intra), sorted(idr), crcs)


class LayerReader:
    """The RAW layer track of an .rvd, decoded picture by picture (one per pass, in file order)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, codec: str):
        import av

        self.path, self.width, self.height = Path(path), width, height
        try:  # a damaged file may carry tags that are not UTF-8: they are not ours to trust anyway
            self._in = av.open(os.fspath(self.path), metadata_errors="replace")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
            raise FormatError(self.path, f"cannot open the RAW layer ({e})") from None
        videos = [s for s in self._in.streams if s.type == "video"]
        if len(videos) < 2:
            self._in.close()
            raise FormatError(self.path, "the manifest names a RAW layer but the file has no second video track")
        self.stream = videos[1]
        cc = self.stream.codec_context
        if cc.name != codec or (cc.width, cc.height) != (width, height):
            self._in.close()
            raise FormatError(self.path, f"RAW layer track is {cc.name} {cc.width}x{cc.height}, the manifest says "
                              f"{codec} {width}x{height}")
        self._dec = _decoder(codec, cc.extradata, width, height)
        self._packets = (p for p in self._in.demux(self.stream) if p.size)
        self.read = 0

    def next(self, frame: int) -> np.ndarray:
        """The next picture; a missing or undecodable one names the frame."""
        import av

        p = next(self._packets, None)
        if p is None:
            raise FormatError(self.path, f"RAW layer ends before frame {frame}")
        try:
            img = _decode_one(self._dec, [p], self.path, f"frame {frame}")
        except av.FFmpegError as e:
            raise FormatError(self.path, f"RAW layer is corrupt at frame {frame} ({e})") from None
        if img.shape != (self.height, self.width) or img.dtype != np.uint16:
            raise FormatError(self.path, f"RAW layer picture of frame {frame} is {img.shape} {img.dtype}, expected "
                              f"{self.height}x{self.width} 16-bit")
        self.read += 1
        return img

    def skip(self, passes: int, frame: int, decode: bool = False) -> None:
        """Step over a frame's pictures (decoding them when later pictures reference them)."""
        for _ in range(passes):
            if decode:
                self.next(frame)
            elif next(self._packets, None) is None:
                raise FormatError(self.path, f"RAW layer ends before frame {frame}")

    def close(self) -> None:
        self._in.close()

