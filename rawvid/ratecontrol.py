"""Rate control of the RAW layer under ``--target-psnr``: which quantiser each frame is coded at.

Two knobs, by predictor. The chain's residual is coded at a constant x265 QP and a per-frame
scale (DN per code step), chosen by a distortion model (:class:`Spectrum`) and, for an IDR, by
trial encodes (:func:`intra_scale`). Direct coding's scale cannot move (x265 predicts each frame
from the last, which a new scale dims), so its QP moves instead, by region-of-interest offsets
(rawvid.steering): :class:`OffsetController` for P-frames, :func:`intra_offset` for an IDR.
A frame still short of the target gets top-up passes (:meth:`RateController.top_up_scale`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .rawlayer import MAX_SCALE, MIN_SCALE, clamp_scale, round_scale

#: ``--target-psnr``: the controller aims this far above the target, and tops a frame up with
#: another pass when it lands more than TOP_UP_DB under it (the promise: within 0.3 dB, never 0.5 under).
#: The distortion model below foretells a frame's PSNR with 0.075 dB RMS error (test split, 3 targets,
#: 10 clips; max 0.28): aiming 0.1 above keeps nearly every frame inside the band.
AIM_DB, TOP_UP_DB = 0.1, 0.3
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
#: a directly coded (steered) layer's IDR aims this far over the target's aim (dB): a finer IDR is a
#: better reference for every P-frame after it (x265's own CRF codes it 1-7 dB over its P-frames).
#: Measured on the 12 scenario clips, 12 frames, 5 targets (benchmarks/rd_targets.py --boosts): it paid on
#: one clip (clipped 5D Mark III, 11-14% fewer bytes at floor -6 dB) and cost on the others; 0: off.
INTRA_BOOST_DB = 0.0
#: a top-up pass is at least this much finer than the pass before it
TOP_UP_STEP = 0.9
#: the scale only grows when a frame lands this far above the aim
GROW_DB = 0.5
#: the model's gain after a P-frame: the geometric mean of the last gain and the frame's, this much of it
#: the frame's. Where x265 codes the residual coarsely the gain itself rises and falls with the scale
#: (its dead zone and skipped blocks) and from frame to frame, and taken whole it swung: on an unseen
#: camera (Blackmagic Pocket 4K, 16-bit) 6 dB under its floor it alternated 470 / 2,150 between frames,
#: each frame's guess off by 1-1.6 dB the other way (7 of 15 frames over the band, 3 top-ups). A gain
#: that moved against a scale that moved GAIN_MOVED times or more is new content and is taken whole:
#: smoothed there too, the frame after an exposure step (scenario field022, 3 dB under its floor: scale
#: 4 -> 0.71, gain 144 -> 1,600) fell short, took two top-ups and landed 1.1 dB over (layer +38%)
GAIN_WEIGHT, GAIN_MOVED = 0.5, 1.5
#: the QP offsets a directly coded frame may take (a factor 16 finer, 4 coarser on the quantiser step)
OFFSET_RANGE = (-24.0, 12.0)
#: dB lost per QP of offset until measured (0.5-0.8 on a test clip)
SLOPE = 0.7
#: a directly coded P-frame is at most this much coarser than the IDR before it (x265's own I/P ratio,
#: 1.4, is 2.9 QP). Measured on the example clip (a pan) at its floor + 2 dB: left free, the pilot's 4
#: nearly still frames took QP 19 after an IDR at QP 9.75, the pan's new content then fell under the
#: target and 11 top-up passes made the layer 0.0744 bits per sample; with the cap at 3 / 4.5 / 6 / 9
#: QP: 0.0390 / 0.0366 / 0.0348 / 0.0329, no top-ups, frames -0.02 .. +1.9 / +1.6 / -0.13 .. +1.4 /
#: -0.23 .. +0.9 dB from the target (the last frames, nearly still again, at the cap)
IP_QP_GAP = 6.0
#: a directly coded P-frame's offset grows (coarser) at most this much a frame; it falls freely. A
#: coarser frame is also a worse reference for every frame after it, which the miss of the frame itself
#: does not show: on the example clip at floor +4 dB the first P-frame, 3.8 dB over, moved the offset
#: 5.5 QP at once and the next three frames fell under the target (8 top-up passes)
OFFSET_GROWTH = 1.0


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


@dataclass
class RateController:
    """Chooses each frame's scale so that its black-subtracted PSNR lands just above the target.

    A distortion model (:class:`Spectrum`) foretells a frame's MSE at a scale from its residual's
    DCT energies and one number learnt on the previous P-frames: the quantiser's noise power per
    scale squared (x265's QP is constant, so it only drifts with content; smoothed, GAIN_WEIGHT, but
    for a gain that moved against a scale that moved). Measured on the test
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
    gain_scale: float | None = None  # the scale of the P-frame the gain was last learnt on
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
            s0 = self.gain_scale
            # a gain that moved against a scale that moved: new content (an exposure step), taken whole
            new = self.gain is None or s0 is None or (max(scale / s0, s0 / scale) >= GAIN_MOVED
                                                      and (scale > s0) != (gain > self.gain))
            self.gain = gain if new else self.gain ** (1 - GAIN_WEIGHT) * gain ** GAIN_WEIGHT
            self.gain_scale = scale
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


#: a secant between two IDR trials is trusted when its slope (dB per e-fold of scale) lies here
SECANT_SLOPES = (-30.0, -2.0)


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
            slope = (p1 - p0) / (math.log(s1) - math.log(s0))  # dB per e-fold of scale, about -8.7
            if not SECANT_SLOPES[0] <= slope <= SECANT_SLOPES[1]:
                # two trials on one of x265's plateaus (measured: 5.53 and 5.45 both gave 49.97 dB, and
                # the secant's step to 0.74 landed 68 dB, 18 over the aim): the nominal 20 dB per decade
                slope = -20 / math.log(10)
            nxt = s0 * math.exp(min(max((aim - p0) / slope, -2.0), 2.0))
        else:
            t = spec.noise_power(mse_at(p, peak))
            nxt = hi if want is None else s if t is None else s * math.sqrt(want / t)
        nxt = clamp_scale(nxt, lo, hi)
        if any(nxt == tr[0] for tr in trials):
            break
        s = nxt
    ok = [tr for tr in trials if tr[1] >= aim - slack]
    return (max(ok)[0] if ok else min(trials)[0]), trials


def clamp_offset(o: float, lo: float = OFFSET_RANGE[0], hi: float = OFFSET_RANGE[1]) -> float:
    """Within [lo, hi] and OFFSET_RANGE, in steps of 1/16 QP (the manifest's record stays short).

    ``lo``, ``hi``: -QP and 51 - QP: x265 codes nothing under QP 0 (at 12 bits a step of about 10
    codes) nor over 51, and offsets beyond would pile up where they change nothing."""
    lo, hi = max(lo, OFFSET_RANGE[0]), min(hi, OFFSET_RANGE[1])
    return round(min(max(o, lo), hi) * 16) / 16


@dataclass
class OffsetController:
    """Chooses each P-frame's QP offset so that its black-subtracted PSNR lands just above the target.

    Direct coding's frames change slowly (x265 codes each from the last at the same quantiser), so
    the next frame starts from the last one's offset corrected by its miss at the learnt slope."""

    target: float
    aim: float  # target + the aim's margin
    offset: float | None = None  # the next P-frame's (None: none seen)
    slope: float = SLOPE  # dB per QP, learnt from frames whose offsets differ
    last: tuple[float, float] | None = None  # the last P-frame's (offset, PSNR)
    lo: float = OFFSET_RANGE[0]  # the lowest offset (-QP)
    hi: float = OFFSET_RANGE[1]  # the highest now (51 - QP, or IP_QP_GAP over the last IDR's)
    qp_hi: float = OFFSET_RANGE[1]  # 51 - QP

    def next_offset(self) -> float:
        return clamp_offset(0.0 if self.offset is None else self.offset, self.lo, self.hi)

    def after_idr(self, offset: float) -> None:
        """An IDR was coded at ``offset``: the P-frames that follow stay within IP_QP_GAP of its QP."""
        self.hi = min(self.qp_hi, offset + IP_QP_GAP)

    def _follow(self, offset: float, psnr: float) -> None:
        """The next offset: ``offset`` moved by the miss of ``psnr`` at the slope (coarser by at most
        OFFSET_GROWTH)."""
        if math.isfinite(psnr):
            miss = min(max(psnr - self.aim, -6.0), 6.0)
            self.offset = clamp_offset(offset + min(miss / self.slope, OFFSET_GROWTH), self.lo, self.hi)

    def seed(self, psnr: float) -> None:
        """The first P-frame's offset from its PSNR at the QP (offset 0), measured by the pilot."""
        self._follow(0.0, psnr)

    def observe(self, offset: float, psnr: float) -> None:
        """Learn from a P-frame's first pass."""
        if self.last is not None and abs(offset - self.last[0]) >= 0.5:
            b = (self.last[1] - psnr) / (offset - self.last[0])
            self.slope = 0.7 * self.slope + 0.3 * min(max(b, 0.3), 1.2)
        self.last = (offset, psnr)
        self._follow(offset, psnr)


def intra_offset(trial, aim: float, start: float, slack: float, trials_max: int = 3,
                 slope: float = SLOPE, lo: float = OFFSET_RANGE[0],
                 hi: float = OFFSET_RANGE[1]) -> tuple[float, list[tuple[float, float]]]:
    """The largest QP offset at which an intra picture reaches ``aim`` (less ``slack``), by trial encodes.

    ``trial(offset)`` returns the PSNR of the picture coded as an IDR by a fresh encoder. The first
    trial at ``start``, the second moved by the miss at ``slope``, the third on the secant through
    the two nearest the aim, all within [lo, hi]. Returns the offset and the trials [(offset, PSNR)]."""
    trials: list[tuple[float, float]] = []
    o = clamp_offset(start, lo, hi)
    for _ in range(trials_max):
        p = trial(o)
        trials.append((o, p))
        if abs(p - aim) <= slack or not math.isfinite(p):
            break
        if len(trials) >= 2:
            (o0, p0), (o1, p1) = sorted(trials, key=lambda tr: abs(tr[1] - aim))[:2]
            s = (p0 - p1) / (o1 - o0) if abs(o1 - o0) > 1e-9 else slope
            s = min(max(s, 0.3), 1.5)
        else:
            o0, p0, s = o, p, slope
        nxt = clamp_offset(o0 + (p0 - aim) / s, lo, hi)
        if any(nxt == tr[0] for tr in trials):
            break
        o = nxt
    ok = [tr for tr in trials if tr[1] >= aim - slack]
    return (max(ok)[0] if ok else max(trials, key=lambda tr: tr[1])[0]), trials
