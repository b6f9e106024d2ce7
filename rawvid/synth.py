"""A synthetic RAW video camera over real stills: motion, occlusion, exposure, noise.

A clip is a crop window moving over a :class:`~rawvid.scenes.Scene`'s linear RGB along a
smooth path (pan, zoom, rotation, hand shake, all sub-pixel), with independently moving
foreground patches (occlusion and disocclusion), exposure ramps and sudden changes
(the real bracket exposures where the scene has them), optional scene cuts, then
re-mosaiced to the source's CFA pattern at full resolution, with shot and read noise,
quantised to the sensor's bit depth and clipped at white.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from .meta import Camera, RawInfo
from .scenes import Scene, remosaic


@dataclass
class ClipSpec:
    """Everything random about one clip, drawn once from a seeded generator."""

    frames: int
    qh: int  # output height in quads (mosaic height / 2)
    qw: int
    start: tuple[float, float]  # window centre in scene quads
    velocity: tuple[float, float]  # quads per frame
    wobble: tuple[float, float, float]  # amplitude (quads), period (frames), phase
    scale: tuple[float, float]  # scene quads per output quad, at start and end
    angle: tuple[float, float]  # degrees, at start and end
    shake: float  # hand-shake amplitude (quads)
    gains: list[float] = field(default_factory=list)  # exposure gain per frame
    bracket: list[int] = field(default_factory=list)  # index into scene.exposures per frame, if any
    cut_at: int | None = None
    cut_start: tuple[float, float] | None = None
    patches: list[dict] = field(default_factory=list)
    #: a circle that leaves the start and comes back: (radius in quads, start angle in radians, turns)
    orbit: tuple[float, float, float] | None = None


def _fit_window(scene_hw: tuple[int, int], qh: int, qw: int, scale: float, angle: float) -> tuple[float, float]:
    """Half-extent (y, x) in scene quads of the rotated, scaled output window."""
    a = math.radians(angle)
    hx = 0.5 * scale * (abs(qw * math.cos(a)) + abs(qh * math.sin(a)))
    hy = 0.5 * scale * (abs(qw * math.sin(a)) + abs(qh * math.cos(a)))
    return hy, hx


def draw_spec(scene: Scene, rng: np.random.Generator, frames: int, qh: int, qw: int, *,
              hard: bool = True) -> ClipSpec:
    """Draw a clip: path, zoom, rotation, shake, exposure events, patches, maybe a cut."""
    sh, sw = scene.rgb.shape[:2]
    fit = min(sh / qh, sw / qw)
    s_hi = min(1.6, 0.8 * fit)
    s_lo = min(max(0.55, 0.45 * fit), s_hi)
    s0 = float(rng.uniform(s_lo, s_hi))
    s1 = float(np.clip(s0 * rng.uniform(0.85, 1.18), s_lo, s_hi))
    a0 = float(rng.uniform(-4, 4))
    a1 = a0 + float(rng.uniform(-3, 3))
    hy, hx = _fit_window((sh, sw), qh, qw, max(s0, s1), max(abs(a0), abs(a1)))
    room_y, room_x = max(0.0, sh / 2 - hy - 2), max(0.0, sw / 2 - hx - 2)
    start = (sh / 2 + rng.uniform(-room_y, room_y), sw / 2 + rng.uniform(-room_x, room_x))
    speed = rng.uniform(0.3, 3.5 if hard else 2.0)
    direction = rng.uniform(0, 2 * math.pi)
    vel = (speed * math.sin(direction), speed * math.cos(direction))
    spec = ClipSpec(frames, qh, qw, start, vel, (float(rng.uniform(0, 6)), float(rng.uniform(12, 40)),
                                                   float(rng.uniform(0, 2 * math.pi))),
                    (s0, s1), (a0, a1), float(rng.uniform(0.0, 0.8)))
    # exposure: a smooth ramp, sometimes a sudden change, sometimes a flash-like blip
    g0 = float(np.exp(rng.uniform(np.log(0.6), np.log(1.5))))
    g1 = g0 * float(np.exp(rng.uniform(-0.7, 0.7))) if rng.random() < 0.6 else g0
    gains = [g0 + (g1 - g0) * (i / max(1, frames - 1)) for i in range(frames)]
    if hard and rng.random() < 0.4:
        at, factor = int(rng.integers(frames // 4, max(frames // 4 + 1, frames - 2))), float(rng.choice([0.5, 0.7, 1.4, 2.0]))
        gains = [g * (factor if i >= at else 1.0) for i, g in enumerate(gains)]
    spec.gains = gains
    if scene.exposures:
        k = int(rng.integers(1, len(scene.exposures) - 1))
        steps = sorted(int(x) for x in rng.integers(1, frames, size=int(rng.integers(1, 3))))
        idx, cur = [], k
        for i in range(frames):
            if steps and i == steps[0]:
                cur = int(np.clip(cur + rng.choice([-1, 1]), 0, len(scene.exposures) - 1))
                steps.pop(0)
            idx.append(cur)
        spec.bracket = idx
        spec.gains = [1.0] * frames
    if hard and rng.random() < 0.2 and frames >= 12:
        spec.cut_at = int(rng.integers(frames // 3, frames - 4))
        spec.cut_start = (sh / 2 + rng.uniform(-room_y, room_y), sw / 2 + rng.uniform(-room_x, room_x))
    for _ in range(int(rng.integers(0, 3 if hard else 2))):
        ph, pw = int(rng.uniform(0.2, 0.45) * qh), int(rng.uniform(0.15, 0.4) * qw)
        src = (float(rng.uniform(0, max(1, sh - ph))), float(rng.uniform(0, max(1, sw - pw))))
        pos0 = (float(rng.uniform(-0.2 * qh, qh)), float(rng.uniform(-0.3 * qw, qw)))
        pv = (float(rng.uniform(-3, 3)), float(rng.uniform(-4, 4)))
        spec.patches.append({"size": (ph, pw), "src": src, "pos": pos0, "vel": pv,
                             "gain": float(rng.uniform(0.6, 1.6)), "round": bool(rng.random() < 0.5)})
    return spec


def _window(scene_rgb: np.ndarray, centre: tuple[float, float], scale: float, angle: float, qh: int, qw: int) -> np.ndarray:
    """Resample the output window (qh x qw) from the scene with an affine map (bicubic, clipped at 0)."""
    a = math.radians(angle)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    oy, ox = (qh - 1) / 2, (qw - 1) / 2
    m = np.array([[c, -s, centre[1] - c * ox + s * oy], [s, c, centre[0] - s * ox - c * oy]], np.float64)
    out = cv2.warpAffine(scene_rgb, m, (qw, qh), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT)
    return np.clip(out, 0, None)


def _patch_mask(ph: int, pw: int, rounded: bool) -> np.ndarray:
    y, x = np.mgrid[:ph, :pw].astype(np.float32)
    if rounded:
        d = ((y - (ph - 1) / 2) / (ph / 2)) ** 2 + ((x - (pw - 1) / 2) / (pw / 2)) ** 2
        m = np.clip((1 - d) * min(ph, pw) / 4, 0, 1)
    else:
        m = np.ones((ph, pw), np.float32)
        m = cv2.GaussianBlur(np.pad(m, 2), (5, 5), 1.0)[2:-2, 2:-2]
    return m.astype(np.float32)


def linear_frames(scene: Scene, spec: ClipSpec, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The clip's linear RGB frames (qh x qw x 3), before noise."""
    amp, period, phase = spec.wobble
    n = spec.frames
    shake = np.cumsum(rng.normal(0, spec.shake, size=(n, 2)), axis=0) * 0.5
    shake -= np.linspace(0, 1, n)[:, None] * shake[-1]  # a random walk that returns: no drift
    for i in range(n):
        t = i / max(1, n - 1)
        start = spec.start
        j = i
        if spec.cut_at is not None and i >= spec.cut_at:
            start, j = spec.cut_start, i - spec.cut_at  # type: ignore[assignment]
        wob = amp * math.sin(2 * math.pi * j / period + phase)
        cy = start[0] + spec.velocity[0] * j + wob * math.cos(phase) + shake[i, 0]
        cx = start[1] + spec.velocity[1] * j + wob * math.sin(phase) + shake[i, 1]
        if spec.orbit is not None:
            oy, ox = orbit_offset(spec.orbit, t)
            cy, cx = cy + oy, cx + ox
        sh, sw = scene.rgb.shape[:2]
        scale = spec.scale[0] + (spec.scale[1] - spec.scale[0]) * t
        angle = spec.angle[0] + (spec.angle[1] - spec.angle[0]) * t
        hy, hx = _fit_window((sh, sw), spec.qh, spec.qw, scale, angle)
        cy = float(np.clip(cy, hy + 1, max(hy + 1, sh - hy - 2)))
        cx = float(np.clip(cx, hx + 1, max(hx + 1, sw - hx - 2)))
        base = scene.exposures[spec.bracket[i]] if spec.bracket else scene.rgb
        frame = _window(base, (cy, cx), scale, angle, spec.qh, spec.qw)
        for p in spec.patches:
            ph, pw = p["size"]
            if ph < 4 or pw < 4:
                continue
            y = p["pos"][0] + p["vel"][0] * i
            x = p["pos"][1] + p["vel"][1] * i
            fy, fx = math.floor(y), math.floor(x)
            src = base[int(p["src"][0]) : int(p["src"][0]) + ph + 1, int(p["src"][1]) : int(p["src"][1]) + pw + 1]
            if src.shape[0] < ph + 1 or src.shape[1] < pw + 1:
                continue
            m = np.float32([[1, 0, -(y - fy)], [0, 1, -(x - fx)]])
            sub = cv2.warpAffine(src * p["gain"], m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            mask = _patch_mask(ph, pw, p["round"])[..., None]
            y0, x0 = max(0, fy), max(0, fx)
            y1, x1 = min(spec.qh, fy + ph), min(spec.qw, fx + pw)
            if y1 <= y0 or x1 <= x0:
                continue
            py, px = y0 - fy, x0 - fx
            region = frame[y0:y1, x0:x1]
            mm = mask[py : py + y1 - y0, px : px + x1 - x0]
            frame[y0:y1, x0:x1] = region * (1 - mm) + sub[py : py + y1 - y0, px : px + x1 - x0] * mm
        yield frame * spec.gains[i]


def orbit_offset(orbit: tuple[float, float, float], t: float) -> tuple[float, float]:
    """(dy, dx) in quads of a circular path at time t in [0, 1]: 0 at t = 0 and again at t = 1."""
    r, a0, turns = orbit
    a = a0 + 2 * math.pi * turns * t
    return r * (math.sin(a) - math.sin(a0)), r * (math.cos(a) - math.cos(a0))


#: Named test scenarios (``rawvid dataset scenarios``): what the shipped model must survive on
#: clips it has never seen. ``long`` is the RVD benchmark's clip length.
SCENARIOS = ("orbit", "rotate-zoom", "exposure-step", "clipped", "dark-noisy", "long")


def scenario_spec(kind: str, scene: Scene, rng: np.random.Generator, frames: int, qh: int,
                  qw: int) -> tuple[ClipSpec, Scene]:
    """A clip of one named scenario over a scene: (spec, the scene with the sensor it is shot with).

    - ``orbit``: the window circles as far as the scene allows (up to half its width away
      from the start) and comes back, with a slight rotation and an exposure ramp;
    - ``rotate-zoom``: 8-14 degrees of rotation and a 1.3-1.45x zoom while panning;
    - ``exposure-step``: two sudden exposure changes (x2, then x0.35);
    - ``clipped``: exposed so that 6-22% of the scene's quads clip at white in some channel;
    - ``dark-noisy``: 0.1-0.16 of the exposure, read noise x3 and half the full well;
    - ``long``: an orbit of two turns with a drifting pan.
    """
    import dataclasses

    if kind not in SCENARIOS:
        raise ValueError(f"unknown scenario {kind!r} ({', '.join(SCENARIOS)})")
    spec = draw_spec(scene, rng, frames, qh, qw, hard=False)
    spec.patches, spec.cut_at, spec.cut_start, spec.bracket = [], None, None, []
    spec.shake = min(spec.shake, 0.3)
    spec.gains = [1.0] * frames
    sh, sw = scene.rgb.shape[:2]
    if kind in ("orbit", "long"):
        a0 = float(rng.uniform(-2, 2))
        spec.angle = (a0, a0 + float(rng.uniform(-3, 3)))
        spec.scale = (spec.scale[0], spec.scale[0])
        hy, hx = _fit_window((sh, sw), qh, qw, spec.scale[0], max(abs(a) for a in spec.angle))
        room = max(0.0, min(sh / 2 - hy - 2, sw / 2 - hx - 2))
        radius = min(0.95 * room, 0.25 * qw * spec.scale[0])  # at most half the window's width away
        phi = float(rng.uniform(0, 2 * math.pi))
        # start on the circle around the scene's centre, so that the whole orbit stays inside
        spec.start = (sh / 2 + radius * math.sin(phi), sw / 2 + radius * math.cos(phi))
        spec.orbit = (radius, phi, 2.0 if kind == "long" else 1.0)
        spec.velocity = (0.0, 0.0) if kind == "orbit" else (float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.1, 0.1)))
        spec.wobble = (0.0, 1.0, 0.0)
        g0 = float(rng.uniform(0.7, 0.9))
        spec.gains = [g0 * (1 + 0.4 * i / max(1, frames - 1)) for i in range(frames)]
    elif kind == "rotate-zoom":
        z = float(rng.uniform(1.3, 1.45))
        s0 = spec.scale[0]
        spec.scale = (s0, s0 / z) if rng.random() < 0.5 else (s0 / z, s0)
        a0 = float(rng.uniform(-3, 3))
        spec.angle = (a0, a0 + float(rng.choice([-1, 1]) * rng.uniform(8, 14)))
    elif kind == "exposure-step":
        a, b = frames // 3, (2 * frames) // 3
        spec.gains = [1.0 if i < a else 2.0 if i < b else 0.7 for i in range(frames)]
        spec.gains = [0.6 * g for g in spec.gains]
    elif kind == "clipped":
        frac = float(rng.uniform(0.06, 0.22))
        level = float(np.quantile(scene.rgb.max(axis=-1), 1 - frac))
        spec.gains = [1.0 / max(level, 1e-3)] * frames
    elif kind == "dark-noisy":
        g = float(rng.uniform(0.1, 0.16))
        spec.gains = [g] * frames
        sensor = dataclasses.replace(scene.sensor, read_noise=3 * scene.sensor.read_noise,
                                     full_well=scene.sensor.full_well / 2)
        scene = dataclasses.replace(scene, sensor=sensor)
    return spec, scene


def make_scenario_clip(kind: str, scene: Scene, rng: np.random.Generator, frames: int, qh: int,
                       qw: int) -> tuple[ClipSpec, Scene, Iterator[np.ndarray]]:
    """A named scenario's clip: (spec, the scene as shot, an iterator over its RAW mosaics)."""
    spec, shot = scenario_spec(kind, scene, rng, frames, qh, qw)
    noise_rng = np.random.default_rng(rng.integers(1 << 63))
    motion_rng = np.random.default_rng(rng.integers(1 << 63))
    return spec, shot, (expose(f, shot, noise_rng) for f in linear_frames(shot, spec, motion_rng))


def sensor_info(scene: Scene, qh: int, qw: int, fps: float = 30.0) -> RawInfo:
    s = scene.sensor
    return RawInfo(width=2 * qw, height=2 * qh, bits=s.bits, black=s.black, white=s.white, cfa=s.cfa,
                   color_matrix=s.color_matrix, as_shot_neutral=s.neutral, fps=fps,
                   camera=Camera(make=s.camera.split(" ")[0], model=s.camera))


def expose(linear: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Linear RGB quads -> noisy, quantised, white-clipped Bayer mosaic (uint16) in the source's CFA."""
    s = scene.sensor
    mosaic = remosaic(linear, s.cfa)
    electrons = np.clip(mosaic, 0, None) * s.full_well
    noisy = electrons + rng.normal(0, 1, mosaic.shape) * np.sqrt(electrons + s.read_noise**2)
    dn = s.black + noisy / s.full_well * (s.white - s.black)
    return np.clip(np.round(dn), 0, s.white).astype(np.uint16)


def make_clip(scene: Scene, rng: np.random.Generator, frames: int, qh: int, qw: int,
              hard: bool = True) -> tuple[ClipSpec, Iterator[np.ndarray]]:
    """Draw a clip over a scene; returns its spec and an iterator over its RAW mosaics."""
    spec = draw_spec(scene, rng, frames, qh, qw, hard=hard)
    noise_rng = np.random.default_rng(rng.integers(1 << 63))
    motion_rng = np.random.default_rng(rng.integers(1 << 63))
    return spec, (expose(f, scene, noise_rng) for f in linear_frames(scene, spec, motion_rng))
