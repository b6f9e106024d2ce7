"""Reconstruction methods: how a RAW frame is rebuilt from sRGB and the previous RAW.

Every method has one small interface (after CompressAI's bench codecs), so decode's
``--method`` and the bench treat them alike. All arrays are at half resolution:
packed RAW normalised to [0, 1] (4 x h x w, float32) and sRGB in [0, 1] (3 x h x w).

* ``global-fit``: no network. On each keyframe pair it fits a global sRGB-to-RAW map
  (per-channel tone curve that linearises sRGB, then a 4x3 colour matrix plus offset)
  and applies it to every frame. Fast; the baseline the network must beat.
* ``network``: FAGDN, chained: frame t+1 from the previous output and the flow between
  the two sRGB frames (:mod:`rawvid.network` in PyTorch, :mod:`rawvid.runtime` in ONNX Runtime).
* ``warp``: the previous frame warped along the flow, holes from global-fit.

This module needs no PyTorch.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .flow import dis_flow, warp
from .pipeline import cpu_threads

CURVE_KNOTS = 33


@dataclass
class Timings:
    """Seconds spent per decode stage."""

    video: float = 0.0
    flow: float = 0.0
    network: float = 0.0
    dng: float = 0.0

    def add(self, stage: str, seconds: float) -> None:
        setattr(self, stage, getattr(self, stage) + seconds)


class Method:
    """A reconstruction method: ``keyframe`` at every RAW keyframe, ``predict`` for the others."""

    name = "method"

    def __init__(self) -> None:
        self.timings = Timings()
        #: the clip's noise when its predictions are unclipped at black (``rawvid.noise.unclip_mean``);
        #: files that record ``"shadows": "unclipped"`` are coded and decoded with it
        self.unclip = None
        #: ``rawvid.highlights.MODE`` when the network's clipped regions take part of the keyframe
        #: (files that record ``"highlights": "key-fusion"``); None: as files made before it
        self.highlights: str | None = None

    def keyframe(self, raw: np.ndarray, srgb: np.ndarray) -> None:
        """Called with the true RAW and its sRGB at every keyframe (frame 0 included)."""

    def calibrate(self, gmap: "GlobalMap") -> None:
        """Per-frame calibration: the encoder's global map for the frame about to be predicted."""

    def predict(self, prev_raw: np.ndarray, prev_srgb: np.ndarray, srgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# --------------------------------------------------------------------------- global fit
def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB inverse transfer function (IEC 61966-2-1)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _hat_weights(x: np.ndarray, knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-linear basis on [0, 1]: for each value, its left knot index and the right weight."""
    pos = np.clip(x, 0.0, 1.0) * (knots - 1)
    left = np.minimum(pos.astype(np.int64), knots - 2)
    return left, pos - left


@dataclass
class GlobalMap:
    """RAW ~ M @ [curve_c(sRGB_c)] + b: per-channel tone curves, a 4x3 matrix and an offset."""

    curves: np.ndarray  # 3 x K, values of the linearising curve at K evenly spaced sRGB levels
    matrix: np.ndarray  # 4 x 3
    offset: np.ndarray  # 4

    def linearise(self, srgb: np.ndarray) -> np.ndarray:
        k = self.curves.shape[1]
        out = np.empty(srgb.shape, dtype=np.float64)
        for c in range(3):
            left, t = _hat_weights(srgb[c], k)
            out[c] = self.curves[c, left] * (1 - t) + self.curves[c, left + 1] * t
        return out

    def apply(self, srgb: np.ndarray) -> np.ndarray:
        """sRGB 3 x h x w -> packed RAW 4 x h x w (normalised, clipped to [0, 1])."""
        lin = self.linearise(srgb).reshape(3, -1)
        raw = self.matrix @ lin + self.offset[:, None]
        return np.clip(raw, 0.0, 1.0).reshape((4,) + srgb.shape[1:]).astype(np.float32)

    def to_list(self) -> list[float]:
        return [*self.curves.ravel(), *self.matrix.ravel(), *self.offset.ravel()]

    @classmethod
    def from_list(cls, values, knots: int = CURVE_KNOTS) -> "GlobalMap":
        v = np.asarray(values, dtype=np.float64)
        if v.size != 3 * knots + 16:
            raise ValueError(f"a global map has {3 * knots + 16} values, got {v.size}")
        return cls(v[: 3 * knots].reshape(3, knots), v[3 * knots : 3 * knots + 12].reshape(4, 3), v[3 * knots + 12 :])


def fit_global_map(srgb: np.ndarray, raw: np.ndarray, knots: int = CURVE_KNOTS, iterations: int = 6,
                   max_samples: int = 200_000, smooth: float = 1e-3, seed: int = 0) -> GlobalMap:
    """Fit :class:`GlobalMap` to one (sRGB, RAW) pair by alternating least squares.

    Pixels clipped in either image carry no information about the map and are left out.
    The tone curves start from the sRGB transfer function, are kept monotone and
    normalised (curve(1) = 1, the scale goes into the matrix).
    """
    x = srgb.reshape(3, -1).astype(np.float64)
    y = raw.reshape(4, -1).astype(np.float64)
    keep = (x.max(0) < 0.985) & (y.max(0) < 0.98)
    if keep.sum() < 64:
        keep = np.ones(x.shape[1], bool)
    idx = np.flatnonzero(keep)
    if idx.size > max_samples:
        idx = np.random.default_rng(seed).choice(idx, max_samples, replace=False)
    x, y = x[:, idx], y[:, idx]
    n = x.shape[1]
    grid = np.linspace(0, 1, knots)
    curves = np.stack([srgb_to_linear(grid)] * 3)
    basis = [_hat_weights(x[c], knots) for c in range(3)]
    # The basis is 2-sparse per sample, so every normal-equation term is a bincount.
    pairs = [(lambda lt: ((lt[0], 1 - lt[1]), (lt[0] + 1, lt[1])))(b) for b in basis]

    def gram(c: int, d: int) -> np.ndarray:  # Phi_c^T Phi_d, K x K
        g = np.zeros(knots * knots)
        for ia, wa in pairs[c]:
            for ib, wb in pairs[d]:
                g += np.bincount(ia * knots + ib, wa * wb, minlength=knots * knots)
        return g.reshape(knots, knots)

    def project(c: int, z: np.ndarray) -> np.ndarray:  # Phi_c^T z
        return sum(np.bincount(i, w * z, minlength=knots) for i, w in pairs[c])

    def lin_of(theta: np.ndarray) -> np.ndarray:  # Phi_c theta_c for every channel, 3 x n
        return np.stack([theta[c, basis[c][0]] * (1 - basis[c][1]) + theta[c, basis[c][0] + 1] * basis[c][1]
                         for c in range(3)])

    grams = {(c, d): gram(c, d) for c in range(3) for d in range(c, 3)}
    phi_y = np.array([[project(c, y[k]) for k in range(4)] for c in range(3)])  # 3 x 4 x K
    phi_1 = np.array([project(c, np.ones(n)) for c in range(3)])  # 3 x K
    d2 = np.diff(np.eye(knots), 2, axis=0)
    reg = smooth * n * (d2.T @ d2)
    for _ in range(iterations):
        a = np.vstack([lin_of(curves), np.ones(n)]).T  # n x 4
        sol, *_ = np.linalg.lstsq(a, y.T, rcond=None)
        matrix, offset = sol[:3].T, sol[3]
        # curves given the matrix: y_k - b_k = sum_c M_kc Phi_c theta_c, linear in theta
        lhs = np.zeros((3 * knots, 3 * knots))
        rhs = np.zeros(3 * knots)
        for c in range(3):
            sc = slice(c * knots, (c + 1) * knots)
            rhs[sc] = sum(matrix[k, c] * (phi_y[c, k] - offset[k] * phi_1[c]) for k in range(4))
            lhs[sc, sc] += reg
            for d in range(c, 3):
                sd = slice(d * knots, (d + 1) * knots)
                block = (matrix[:, c] @ matrix[:, d]) * grams[(c, d)]
                lhs[sc, sd] += block
                if d != c:
                    lhs[sd, sc] += block.T
        theta = np.linalg.solve(lhs + 1e-9 * np.eye(3 * knots), rhs).reshape(3, knots)
        theta = np.maximum.accumulate(np.maximum(theta, 0.0), axis=1)
        top = np.where(theta[:, -1] > 1e-6, theta[:, -1], 1.0)
        curves = theta / top[:, None]
    sol, *_ = np.linalg.lstsq(np.vstack([lin_of(curves), np.ones(n)]).T, y.T, rcond=None)
    return GlobalMap(curves, sol[:3].T.copy(), sol[3].copy())


class GlobalFit(Method):
    """Keyframe-calibrated global sRGB-to-RAW mapping (no network)."""

    name = "global-fit"

    def __init__(self) -> None:
        super().__init__()
        self.map: GlobalMap | None = None
        self.prev_map: GlobalMap | None = None  # the map of the previous frame (per-frame calibration)
        self._base: tuple | None = None  # (srgb, map, map.apply(srgb)) of the last map application

    def keyframe(self, raw: np.ndarray, srgb: np.ndarray) -> None:
        t = time.perf_counter()
        self.map = self.prev_map = fit_global_map(srgb, raw)
        self._base = None
        self.timings.add("network", time.perf_counter() - t)

    def _apply(self, gmap: GlobalMap, srgb: np.ndarray) -> np.ndarray:
        """``gmap.apply(srgb)``, reusing the last result when it was for the same frame and map.

        A frame's prediction, its block refinement and the encoder's calibration choice all apply
        the same map to the same frame (and with the network, each frame's A(t+1) is the next
        frame's A(t)): one application instead of two or three. Callers must not write into it."""
        if self._base is not None and self._base[0] is srgb and self._base[1] is gmap:
            return self._base[2]
        out = gmap.apply(srgb)
        self._base = (srgb, gmap, out)
        return out

    def calibrate(self, gmap: GlobalMap) -> None:
        self.prev_map, self.map = self.map, gmap

    def _flow(self, target: np.ndarray, source: np.ndarray, preset: str) -> np.ndarray:
        """Backward DIS flow (h x w x 2) between two half-resolution sRGB frames (3 x h x w), timed as "flow"."""
        t = time.perf_counter()
        flow = dis_flow(target.transpose(1, 2, 0), source.transpose(1, 2, 0), preset)
        self.timings.add("flow", time.perf_counter() - t)
        return flow

    def base(self, srgb: np.ndarray) -> np.ndarray:
        """The global-fit prediction of a frame under the current map (block refinement blends towards it)."""
        assert self.map is not None, "keyframe() first"
        return self._apply(self.map, srgb)

    def predict(self, prev_raw, prev_srgb, srgb):
        t = time.perf_counter()
        out = self.base(srgb)
        self.timings.add("network", time.perf_counter() - t)
        return out


# --------------------------------------------------------------------------- warp
class Warp(GlobalFit):
    """Flow-warp chain from the keyframe: RAW(t) warped onto t+1; out-of-view holes from global-fit.

    It carries everything the keyframe knows (highlights clipped in sRGB included) but
    cannot follow exposure or white-balance changes.
    """

    name = "warp"

    def __init__(self, flow_preset: str = "fast"):
        super().__init__()
        self.flow_preset = flow_preset

    def predict(self, prev_raw, prev_srgb, srgb):
        flow = self._flow(srgb, prev_srgb, self.flow_preset)
        t = time.perf_counter()
        warped, v = warp(np.ascontiguousarray(prev_raw, dtype=np.float32), flow)
        holes = self.map.apply(srgb)  # type: ignore[union-attr]
        out = warped * v + holes * (1 - v)
        self.timings.add("network", time.perf_counter() - t)
        return out.astype(np.float32)


class NetworkBase(GlobalFit):
    """What the ``network`` method does around the network, in either runtime.

    FAGDN chained from the previous output along DIS optical flow. It also keeps the
    keyframe's (or the frame's calibrated) global-fit map: models trained with the prior take
    its prediction as an input, and block refinement blends towards it. Subclasses run the
    network itself (``_forward``): :class:`rawvid.network.Network` in PyTorch,
    :class:`rawvid.runtime.OnnxNetwork` in ONNX Runtime.
    """

    name = "network"

    def __init__(self, config, tile: int | None = None, flow_preset: str = "fast"):
        super().__init__()
        self.config, self.tile, self.flow_preset = config, tile, flow_preset
        self.key_arrays: dict[str, np.ndarray] = {}
        self._pool: ThreadPoolExecutor | None = None  # the keyframe flow's thread (see _flows)

    def keyframe(self, raw: np.ndarray, srgb: np.ndarray) -> None:
        super().keyframe(raw, srgb)
        if self.config.key_reference:  # the keyframe's sRGB, its residual against A(k), and A(k)
            prior = self.map.apply(srgb)  # type: ignore[union-attr]
            self.key_srgb, self.key_raw = srgb, raw
            self.key_arrays = {"key_srgb": srgb, "key_residual": raw - prior, "key_prior": prior}

    def _forward(self, srgb, prev_srgb, prev_raw, flow, key_flow, priors: dict) -> np.ndarray:
        raise NotImplementedError

    def _flows(self, srgb: np.ndarray, prev_srgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The flow to the previous frame and (models with a keyframe reference) to the keyframe.

        DIS runs on one thread, so with two cores the two flows run side by side (one in a
        worker thread; OpenCV releases the GIL): 23.5 -> 13.6 ms for two 800x450 flows here."""
        if not self.config.key_reference:
            return self._flow(srgb, prev_srgb, self.flow_preset), None
        if cpu_threads() < 2:
            return self._flow(srgb, prev_srgb, self.flow_preset), self._flow(srgb, self.key_srgb, self.flow_preset)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="rawvid-key-flow")
        t = time.perf_counter()
        pending = self._pool.submit(dis_flow, srgb.transpose(1, 2, 0), self.key_srgb.transpose(1, 2, 0),
                                    self.flow_preset)
        try:
            flow = dis_flow(srgb.transpose(1, 2, 0), prev_srgb.transpose(1, 2, 0), self.flow_preset)
        finally:
            key_flow = pending.result()
        self.timings.add("flow", time.perf_counter() - t)
        return flow, key_flow

    def predict(self, prev_raw, prev_srgb, srgb):
        flow, key_flow = self._flows(srgb, prev_srgb)
        t, flow_s = time.perf_counter(), self.timings.flow
        priors = {}
        if self.config.prior:
            prev = self._apply(self.prev_map or self.map, prev_srgb)  # type: ignore[arg-type]
            priors = {"prior_cur": self._apply(self.map, srgb), "prior_prev": prev}  # type: ignore[arg-type]
        out = self._forward(srgb, prev_srgb, prev_raw, flow, key_flow, priors)
        if self.highlights is not None and key_flow is not None:
            from .highlights import fuse

            out = fuse(out, srgb, self.key_raw, key_flow)
        self.timings.add("network", time.perf_counter() - t - (self.timings.flow - flow_s))
        return out


METHODS = ("auto", "network", "global-fit", "warp")
