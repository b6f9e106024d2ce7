"""The RAW layer: a second video track coding what the de-rendering did not predict.

Every frame's Bayer planes [R, Gr, Gb, B] become one grey picture the size of the mosaic:
from format 6 the orthonormal Hadamard transform of every 2x2 quad, its four outputs tiled
2x2 (``analyse``); before, and for FFV1, the planes as they are (R | Gr over Gb | B). The
track codes the residual

    true RAW - prediction

where the prediction is the decoder's own chain (network, block refinement and
calibration as without a layer) or, at an intra frame, the frame's own sRGB through a
global map the encoder fitted on the true RAW. It is closed loop: both sides continue
the chain from the reconstruction (prediction + decoded residual), never from the truth.

Two codecs, each frame by frame in-process through PyAV:

* ``x265``: HEVC Main 12 4:0:0 (``gray12le``), no B-frames, no lookahead, so every
  packet decodes before the next frame is predicted. The residual mapping is
  ``code = clip(round(H(residual) / scale) + 2048, 0, 4095)`` and
  ``recon = clip(pred + round(H((code - 2048) * scale)), 0, 2^bits - 1)`` (H the quad
  transform, its own inverse, or the identity before format 6); ``scale`` is
  per frame (and per pass), stored in the manifest: it is the rate controller's knob.
* ``ffv1``: lossless, ``gray16le``, ``code = (true - pred + 32768) mod 65536``; the
  reconstruction is the source, bit for bit.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import FormatError

LAYOUT = "planes tiled 2x2: R Gr / Gb B"
#: The picture the x265 layer codes, by ``transform``: ``none`` tiles the residual's CFA planes as they
#: are; ``hadamard`` (format 6 on) first takes the orthonormal 4-point Hadamard transform of every 2x2
#: quad, so the picture's tiles are the quad's mean and its three differences. The four phases of a
#: Bayer mosaic see nearly the same scene, so most of the energy gathers in the first tile; orthonormal,
#: so squared error (PSNR) is the same in both domains and x265's RD choices stay right. Measured before
#: it was taken (x265 at a CRF ladder on the RAW of the 10 test clips, 8 frames, CRF 4-28): -2.6% to
#: -36% BD-rate on 9 clips, +3.5% on one, mean -19.1% (benchmarks/hadamard.py, results/hadamard_test.json).
TRANSFORMS = ("none", "hadamard")
LAYOUTS = {"none": LAYOUT,
           "hadamard": "Hadamard of each 2x2 quad, (R+Gr+Gb+B, R-Gr+Gb-B, R+Gr-Gb-B, R-Gr-Gb+B)/2, tiled 2x2"}
X265_OFFSET, X265_MAX = 2048, 4095
FFV1_OFFSET = 32768
#: FFV1's keyframe interval in the lossless layer (pictures). FFV1 predicts nothing across frames,
#: but its range coder's adaptive states carry over from one picture to the next until a keyframe
#: resets them, so a picture is read from the keyframe before it (LayerReader keeps the packets
#: since). FFV1 places its keyframes itself, every FFV1_GOP pictures, whatever the picture type.
#: Measured on the tiled planes, 32 frames (a scratch run of the FFV1 options, 512x320): keyframe
#: every 1 / 4 / 8 / 16 / 32 pictures, Blackmagic Pocket 4K (16-bit, noisy) 10.171 / 9.979 / 9.939 /
#: 9.919 / 9.912 bits per sample (lossless-JPEG DNGs 10.033), Canon 5D Mark III 8.411 / 8.217 / 8.173
#: / 8.152 / 8.142 (8.684), imx135 field016 6.213 / 6.076 / 6.043 / 6.024 / 6.015 (6.605); 1 until
#: session 20, when the Blackmagic clip's lossless .rvd came out 1.7% over its DNGs. The large
#: context model (``context 1``) cost 10-15% on these frame sizes.
FFV1_GOP = 16
#: The longest FFV1 keyframe interval a file may declare (``options.g`` in its manifest): the decoder keeps
#: the packets since the last FFV1 keyframe, so a hostile file must not make that list grow with the clip.
MAX_FFV1_GOP = 256
#: ``--keyframe-psnr auto``: lossy keyframes this many dB over the clip's noise floor. Measured
#: (benchmarks/lossy_keyframes.py, the 10 test clips, 16 frames, the paper's mode at CRF 16, against its
#: lossless DNG keyframes): at floor +4 dB the pooled PSNR fell 0.05-0.69 dB (the chain predicts from a
#: coarser reference; worst where the de-rendering sits well above the floor: field016, outdoor1), at
#: +8 dB 0.00-0.36, for RAW parts 72-96% and files 22-46% smaller (README, "Lossy keyframes").
KEYFRAME_FLOOR_DB = 8.0
#: a target set from the floor stays within these (a noise-free source has an infinite floor)
FLOOR_TARGET_RANGE = (20.0, 70.0)
#: x265 settings of the layer: PSNR-tuned (no psycho-visual or adaptive quantisation), zero
#: latency (no B-frames, no lookahead, one frame thread), no scene-cut I-frames (the encoder
#: places IDRs itself), no version SEI (2 KB a frame with repeated headers).
X265_PARAMS = ("bframes=0:rc-lookahead=0:frame-threads=1:cutree=0:scenecut=0:psy-rd=0:psy-rdoq=0:aq-mode=0:"
               "info=0:open-gop=0:keyint=100000:min-keyint=1:log-level=error")
#: Bounds of the per-frame scale (DN per code step). Under ``--target-psnr`` the encoder picks the
#: clip's x265 CRF on its first frames (the coarse knob, RD-efficient) and moves the scale
#: within SCALE_RANGE of the bit depth's own scale per frame (the fine knob). Its fine end was 1/8
#: until session 14: after an exposure step (x1.7, highlights clipped) the chain's first passes at
#: 1/8 of a 10-bit scale stayed 1-4 dB under the target and its top-ups went finer anyway; from 1/16
#: the first pass gets there (exposure-step clips 3 and 6 dB under the floor: RAW part -8% and -12%;
#: the test clips tried unchanged).
MIN_SCALE, MAX_SCALE = 1.0 / 16, 1024.0
SCALE_RANGE = (0.0625, 4.0)
#: at most this many passes code one frame (its first and the top-ups; the manifest is checked against it).
#: 4 until session 11: on a test clip (imx135 field001, 3 dB under its floor, sRGB CRF 28) two frames
#: where the content changes stayed 0.80 and 0.86 dB under the target after 4 passes at the chain's
#: QP 31; they needed 5 and 7 (the layer 0.0030 -> 0.0092 bits per sample)
MAX_PASSES = 8


# --------------------------------------------------------------------------- pure mappings
def tile(planes: np.ndarray) -> np.ndarray:
    """4 x h x w planes [R, Gr, Gb, B] -> one 2h x 2w picture (R Gr / Gb B)."""
    return np.block([[planes[0], planes[1]], [planes[2], planes[3]]])


def untile(img: np.ndarray) -> np.ndarray:
    """Inverse of :func:`tile`."""
    h, w = img.shape[0] // 2, img.shape[1] // 2
    return np.stack([img[:h, :w], img[:h, w:], img[h:, :w], img[h:, w:]])


def _hadamard(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The orthonormal 4-point Hadamard transform of four planes (its own inverse), element by element
    in a fixed order, so that encoder and decoder compute the same floats on every machine (no BLAS)."""
    s, t, u, v = a + b, a - b, c + d, c - d
    return np.stack([(s + u) * 0.5, (t + v) * 0.5, (s - u) * 0.5, (t - v) * 0.5])


def analyse(planes: np.ndarray, transform: str) -> np.ndarray:
    """A residual's planes [R, Gr, Gb, B] -> the tiled picture the layer codes (float64 for ``hadamard``)."""
    if transform == "none":
        return tile(planes)
    p = np.asarray(planes, np.float64)
    return tile(_hadamard(p[0], p[1], p[2], p[3]))


def synthesise(codes: np.ndarray, scale: float, transform: str) -> np.ndarray:
    """Decoded 12-bit codes at ``scale`` -> the residual's planes in DN (integers, float64): the inverse of
    :func:`analyse` after :func:`to_code`."""
    if transform == "none":
        return untile(from_code(codes, scale))
    q = untile((codes.astype(np.float64) - X265_OFFSET) * scale)
    return np.rint(_hadamard(q[0], q[1], q[2], q[3]))


def transform_gain(transform: str) -> float:
    """How much wider the coded picture's range is than the residual's (the largest |coefficient| over
    the largest |residual|): direct coding spreads the RAW over the codes by this much more."""
    return 2.0 if transform == "hadamard" else 1.0


#: x265's finest quantiser (QP 0) on a picture of the Hadamard of a RAW spread over the codes (direct
#: coding) stops at span / (DIRECT_FLOOR_K x scale) pooled: measured on the 10 test clips (8 frames,
#: benchmarks/hadamard.py), K = 3.44..4.09 (53.4-54.8 dB, where the planes as they are reach 58.4-59.4).
DIRECT_FLOOR_K = 4.1
#: direct coding transforms its planes only for targets this far under that ceiling, where x265 has QP
#: to spare for every frame: the transform's coefficients span twice the RAW's range (transform_gain),
#: so its scale is twice as coarse. Short of the ceiling the transform still pays (the same
#: measurement: at 1 dB under it -15% to +2% bits per sample on 9 clips, +2% to +4% on field016);
#: past it a target needs top-up passes (a 10-bit clip at 56 dB: 3 passes a frame, as they are 1).
DIRECT_HADAMARD_MARGIN_DB = 1.5


def direct_scale(bits: int, transform: str) -> float:
    """The scale that fits a ``bits``-deep RAW around mid-scale into the 12-bit codes, once transformed."""
    return 2 ** (bits - 1) * transform_gain(transform) / (X265_MAX - X265_OFFSET)


def layer_transform(settings: "LayerSettings", predictor: str, info) -> str:
    """The transform a layer codes with: the setting's, except direct coding of a target the
    transformed picture's coarser scale would not reach in one pass (DIRECT_HADAMARD_MARGIN_DB)."""
    if settings.transform == "none" or settings.lossless:
        return "none"
    if predictor == "direct" and settings.target_psnr is not None:
        scale = direct_scale(info.bits, settings.transform)
        ceiling = 20 * np.log10((info.white - info.black) / (DIRECT_FLOOR_K * scale))
        if settings.target_psnr > ceiling - DIRECT_HADAMARD_MARGIN_DB:
            return "none"
    return settings.transform


def base_scale(bits: int) -> float:
    """The scale that maps a ``bits``-deep RAW onto 12 bits (1 for 12-bit and below)."""
    return float(2 ** max(0, bits - 12))


def full_range_scale(bits: int) -> float:
    """The scale that spreads a ``bits``-deep RAW over the 12-bit codes (under 1 below 12 bits).

    What the RAW itself is coded at (direct coding, and x265 on the Bayer planes in the bench):
    x265 codes nothing finer than QP 0, a step of about 10 codes at 12 bits, so a 10-bit RAW
    left at 1 code per DN stopped at 52.3 dB (a test clip, every P-frame topped up twice);
    spread over the codes it reached the same target in one pass, 27% smaller."""
    return float(2.0 ** (bits - 12))


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


def reconstruct(onto: np.ndarray, decoded: np.ndarray, scale: float, bits: int, transform: str) -> np.ndarray:
    """One pass of the layer: ``onto`` plus the decoded codes at ``scale`` (what encoder and decoder both rebuild)."""
    return apply_residual(onto, synthesise(decoded, scale, transform), bits)


def lossless_code(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(true - pred + 32768) mod 65536: exact for any 16-bit values."""
    return ((truth.astype(np.int64) - pred.astype(np.int64) + FFV1_OFFSET) & 0xFFFF).astype(np.uint16)


def lossless_recon(pred: np.ndarray, code: np.ndarray) -> np.ndarray:
    return ((pred.astype(np.int64) + code.astype(np.int64) - FFV1_OFFSET) & 0xFFFF).astype(np.uint16)


def psnr_black(recon: np.ndarray, truth: np.ndarray, black: int, white: int) -> float:
    """Black-subtracted PSNR of integer planes (the bench's protocol)."""
    from .metrics import psnr

    return psnr(recon, truth, peak=float(white - black))


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
    transform: str = "hadamard"  # of each 2x2 quad before x265 codes it (TRANSFORMS); FFV1 codes the planes as they are
    #: the paper's mode with lossy keyframes (--keyframe-psnr): only the intra frames are coded, to
    #: ``target_psnr`` (None: auto, the encoder's: KEYFRAME_FLOOR_DB over the clip's
    #: noise floor); every other frame is the de-rendering alone, as without a layer
    keyframes_only: bool = False
    #: ``target_psnr`` given relative to the clip's noise floor (``--target-psnr floor-3``, ``--keyframe-psnr
    #: auto``): the encoder measures the floor on the first frame and sets ``target_psnr`` from it
    floor_offset: float | None = None

    def __post_init__(self) -> None:
        if self.codec not in ("x265", "ffv1"):
            raise ValueError(f"unknown RAW layer codec {self.codec!r}")
        if self.keyframes_only:
            if self.codec != "x265":
                raise ValueError("lossy keyframes are coded with x265")
            if self.predictor == "direct":
                raise ValueError("lossy keyframes are predicted from their own sRGB, not coded directly")
            self.predictor = "chain"
        if self.keyframes_only and self.target_psnr is None and self.floor_offset is None:
            self.floor_offset = KEYFRAME_FLOOR_DB  # auto
        if self.floor_offset is not None and (self.crf is not None or self.codec != "x265"
                                              or not -40.0 <= self.floor_offset <= 40.0):
            raise ValueError(f"a target relative to the noise floor ({self.floor_offset:+g} dB) needs an x265 layer "
                             "without a CRF, within 40 dB of the floor")
        if self.codec == "x265" and (self.target_psnr is None and self.floor_offset is None) == (self.crf is None):
            raise ValueError("an x265 RAW layer needs exactly one of target_psnr and crf")
        if self.target_psnr is not None and not 20.0 <= self.target_psnr <= 90.0:
            raise ValueError(f"{'--keyframe-psnr' if self.keyframes_only else '--target-psnr'} {self.target_psnr} "
                             "is outside 20..90 dB")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise ValueError(f"--raw-crf {self.crf} is outside 0..51")
        if self.predictor not in ("auto", "chain", "direct"):
            raise ValueError(f"unknown RAW layer predictor {self.predictor!r} (auto, chain or direct)")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown RAW layer transform {self.transform!r} ({', '.join(TRANSFORMS)})")
        if self.lossless:
            self.transform = "none"

    @property
    def layout(self) -> str:
        return LAYOUTS[self.transform]

    @property
    def lossless(self) -> bool:
        return self.codec == "ffv1"

    def codec_options(self, crf: float | None = None, qp: int | None = None,
                      steered: bool = False) -> tuple[str, str, dict]:
        """(libavcodec encoder, pixel format, options); ``qp``: the constant QP the encoder chose for a target;
        ``steered``: that QP moved per frame by region-of-interest offsets (rawvid.steering)."""
        if qp is not None and not 0 <= qp <= 51:  # x265 does not check it (a negative QP crashed the encoder)
            raise ValueError(f"x265 QP {qp} is outside 0..51")
        if self.lossless:
            return "ffv1", "gray16le", {"level": "3", "coder": "range_tab", "context": "0", "g": str(FFV1_GOP),
                                        "slices": "4", "slicecrc": "1"}
        if qp is not None and steered:
            from .steering import STEER_RC

            params = X265_PARAMS.replace("aq-mode=0:", "")
            return "libx265", "gray12le", {"preset": self.preset, "forced-idr": "1",
                                           "x265-params": f"{STEER_RC.format(qp=int(qp))}:{params}"}
        if qp is not None:  # constant QP, I-frames at the P-frames' QP: steady per-frame quality for a target
            rc = f"qp={int(qp)}:ipratio=1"
        else:
            crf = (self.crf if self.crf is not None else 24.0) if crf is None else crf
            rc = f"crf={crf:.2f}"
        return "libx265", "gray12le", {"preset": self.preset, "forced-idr": "1", "x265-params": f"{rc}:{X265_PARAMS}"}

    def to_dict(self, crf: float | None = None, qp: int | None = None, steered: bool = False) -> dict:
        """The settings as the manifest records them (``qp``: the one the encoder chose for a target)."""
        enc, fmt, opts = self.codec_options(crf, qp, steered)
        return {"codec": "hevc" if enc == "libx265" else "ffv1", "encoder": enc, "pix_fmt": fmt, "options": opts,
                "target_psnr": self.target_psnr, "crf": self.crf if crf is None else crf, "qp": qp,
                "qp_steered": steered,
                "lossless": self.lossless, "predictor_setting": self.predictor,
                **({"keyframes_only": True} if self.keyframes_only else {}),
                **({"target_floor_offset": self.floor_offset} if self.floor_offset is not None else {})}


def _open_encoder(settings: LayerSettings, width: int, height: int, rate: Fraction, ctx=None,
                  crf: float | None = None, qp: int | None = None, steered: bool = False):
    import av

    enc, fmt, opts = settings.codec_options(crf, qp, steered)
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


def _frame(img: np.ndarray, fmt: str, pts: int, idr: bool, offset: float | None = None,
           time_base: Fraction = Fraction(1)):
    import av

    from .steering import with_offset

    f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt)
    f.pts = pts
    if idr:
        f.pict_type = av.video.frame.PictureType.I
    return f if offset is None else with_offset(f, offset, time_base)


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
                 settings: LayerSettings, crf: float | None = None, qp: int | None = None,
                 steered: bool = False):
        import av

        from .video import fps_fraction

        self.path, self.width, self.height, self.bits = Path(path), width, height, bits
        self.settings, self.crf, self.qp, self.steered = settings, crf, qp, steered and qp is not None
        self.rate = fps_fraction(fps)
        self._out = av.open(os.fspath(self.path), "w", format="matroska")
        enc, self.fmt, _ = settings.codec_options(crf, qp, self.steered)
        self.stream = self._out.add_stream(enc, rate=self.rate)
        _open_encoder(settings, width, height, self.rate, self.stream.codec_context, crf, qp, self.steered)
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

    def _picture(self, img: np.ndarray, pts: int, idr: bool, offset: float):
        """The PyAV frame of a picture; on a steered layer it carries its QP offset (0 included)."""
        return _frame(img, self.fmt, pts, idr, offset if self.steered else None, 1 / self.rate)

    def code(self, img: np.ndarray, index: int, idr: bool, offset: float = 0.0) -> np.ndarray:
        """Encode one picture (its QP moved by ``offset`` on a steered layer), mux its packet, return
        what a decoder reads back from it."""
        packets = self.stream.encode(self._picture(img, self._pts(index), idr, offset))
        if self._dec is None:
            self._dec = _decoder("ffv1" if self.settings.lossless else "hevc", self.stream.codec_context.extradata,
                                 self.width, self.height)
        for p in packets:
            self.bytes += p.size
        dec = _decode_one(self._dec, packets, self.path, f"picture {self.pictures}")
        self._out.mux(packets)
        self.pictures += 1
        return dec

    def trial(self, img: np.ndarray, offset: float = 0.0) -> np.ndarray:
        """What this layer's encoder makes of ``img`` coded as an IDR, from a fresh encoder (nothing is
        written): an IDR references nothing, so the layer's own encoder would code it alike."""
        return trial_idr(self.settings, img, self.width, self.height, self.rate, self.crf, self.qp, self.steered,
                         offset, self.path)

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


def trial_idr(settings: LayerSettings, img: np.ndarray, width: int, height: int, rate: Fraction,
              crf: float | None = None, qp: int | None = None, steered: bool = False, offset: float = 0.0,
              path: str | os.PathLike = "RAW layer") -> np.ndarray:
    """``img`` coded as an IDR by a fresh x265 encoder of these settings and decoded back (nothing written)."""
    ctx = _open_encoder(settings, width, height, rate, None, crf, qp, steered)
    _, fmt, _ = settings.codec_options(crf, qp, steered)
    frame = _frame(img, fmt, 0, True, offset if steered and qp is not None else None, 1 / rate)
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    dec = _decoder("hevc", ctx.extradata, width, height)
    return _decode_one(dec, packets, path, "trial picture")


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
    transform: str = "none"  # of each 2x2 quad (TRANSFORMS); files before format 6 have none
    gop: int = 1  # FFV1: its keyframe interval in pictures (x265 layers: 1, every picture stands alone here)

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
        if not isinstance(s, list) or not 0 <= len(s) <= MAX_PASSES:
            raise bad(f"each frame needs 0 to {MAX_PASSES} pass scales")
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
    if any(not clean[i] for i in intra):
        raise bad("an intra frame needs a picture (a pass scale)")
    if not isinstance(crcs, list) or len(crcs) != count or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2 ** 32 for c in crcs):
        raise bad(f"crc32 must list {count} 32-bit values")
    if len(set(intra)) != len(intra) or len(set(idr)) != len(idr):
        raise bad("intra and idr must not repeat a frame")
    transform = lay.get("transform", "none")
    if transform not in TRANSFORMS or (lossless and transform != "none"):
        raise bad(f"unknown transform {str(transform)[:40]!r}" if transform not in TRANSFORMS
                  else "a lossless layer codes the planes untransformed")
    gop = 1
    if lossless:
        opts = lay.get("options", {})
        g = opts.get("g", "1") if isinstance(opts, dict) else None
        if not (isinstance(g, str) and g.isascii() and g.isdigit() and len(g) <= 4 and 1 <= int(g) <= MAX_FFV1_GOP):
            raise bad(f"FFV1 keyframe interval (options.g) must be 1 to {MAX_FFV1_GOP}")
        gop = int(g)
    return LayerInfo(codec, lossless, pred["mode"], clean, set(intra), sorted(idr), crcs, transform=transform, gop=gop)


class LayerReader:
    """The RAW layer track of an .rvd, decoded picture by picture (one per pass, in file order)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, codec: str, gop: int = 1):
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
        # FFV1 carries its coder's states from picture to picture (FFV1_GOP): the packets stepped over
        # since its last keyframe (at most ``gop`` - 1 of them in a sound file), decoded before the next
        # picture read
        self._carried = codec == "ffv1"
        self._gop = gop
        self._since_key: list = []

    def next(self, frame: int) -> np.ndarray:
        """The next picture; a missing or undecodable one names the frame."""
        import av

        p = next(self._packets, None)
        if p is None:
            raise FormatError(self.path, f"RAW layer ends before frame {frame}")
        try:
            for q in self._since_key:
                _decode_one(self._dec, [q], self.path, f"before frame {frame}")
            self._since_key = []
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
                continue
            p = next(self._packets, None)
            if p is None:
                raise FormatError(self.path, f"RAW layer ends before frame {frame}")
            if self._carried:
                if p.is_keyframe:
                    self._since_key = []
                elif len(self._since_key) >= self._gop:
                    raise FormatError(self.path, f"RAW layer has no FFV1 keyframe in the {self._gop} pictures "
                                      f"before frame {frame}, as its manifest declares")
                self._since_key.append(p)

    def close(self) -> None:
        self._in.close()


def resolve_floor_target(settings: LayerSettings, floor_db: float) -> LayerSettings:
    """``settings`` with a target given relative to the noise floor made absolute (``floor_db``: the clip's,
    rawvid.noise.measure_clip_noise), within FLOOR_TARGET_RANGE; others as they are."""
    import dataclasses

    if settings.floor_offset is None:
        return settings
    lo, hi = FLOOR_TARGET_RANGE
    return dataclasses.replace(settings, target_psnr=round(min(max(floor_db + settings.floor_offset, lo), hi), 2))
