"""Metadata shared by every stage: sensor geometry, levels, CFA layout and camera facts."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: CFA patterns as the four colours of the 2x2 repeat (0 = R, 1 = G, 2 = B),
#: row-major, exactly the byte order of the DNG CFAPattern tag.
CFA_PATTERNS: dict[str, tuple[int, int, int, int]] = {
    "RGGB": (0, 1, 1, 2),
    "GRBG": (1, 0, 2, 1),
    "GBRG": (1, 2, 0, 1),
    "BGGR": (2, 1, 1, 0),
}

#: XYZ of the D65 white point (CalibrationIlluminant 21), used when a clip has no white balance.
D65_XYZ = np.array([0.95047, 1.0, 1.08883])

#: Largest frame side rawvid accepts from a file header (refuse absurd sizes before allocating).
MAX_SIDE = 16384
#: the smallest frame side LibRaw (and so every raw developer built on it) opens as a DNG
MIN_SIDE = 22
#: the highest frame rate a clip may claim (DNG timecodes and rationals hold it)
MAX_FPS = 1000.0

SUPPORTED_BITS = (10, 12, 14, 16)


def cfa_from_colors(colors: tuple[int, int, int, int]) -> str:
    """Name the CFA pattern of a 2x2 repeat given as colour indices (0 R, 1 G, 2 B)."""
    for name, pat in CFA_PATTERNS.items():
        if tuple(colors) == pat:
            return name
    raise ValueError(f"not a Bayer pattern: {colors}")


def white_xyz(kelvin: float) -> np.ndarray:
    """XYZ (Y = 1) of white light at a correlated colour temperature, 1667-25000 K: the CIE
    daylight locus from 4000 K up, the Planckian locus below (Kim et al.'s cubic fits)."""
    t = float(np.clip(kelvin, 1667.0, 25000.0))
    if t >= 4000:
        a = (-4.6070e9, 2.9678e6, 0.09911e3, 0.244063) if t <= 7000 else (-2.0064e9, 1.9018e6, 0.24748e3, 0.237040)
        x = a[0] / t**3 + a[1] / t**2 + a[2] / t + a[3]
        y = -3.000 * x * x + 2.870 * x - 0.275
    else:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
        c = (-1.1063814, -1.34811020, 2.18555832, -0.20219683) if t < 2222 else \
            (-0.9549476, -1.37418593, 2.09137015, -0.16748867)
        y = c[0] * x**3 + c[1] * x**2 + c[2] * x + c[3]
    return np.array([x / y, 1.0, (1 - x - y) / y])


def neutral_from_matrix(color_matrix: tuple[float, ...] | None,
                        kelvin: float | None = None) -> tuple[float, float, float]:
    """AsShotNeutral: the camera's response to white (D65, or light of ``kelvin``), normalised to green."""
    if not color_matrix:
        return (1.0, 1.0, 1.0)
    white = D65_XYZ if kelvin is None else white_xyz(kelvin)
    cam = np.asarray(color_matrix, dtype=np.float64).reshape(3, 3) @ white
    if cam[1] <= 0 or np.any(cam <= 0):
        return (1.0, 1.0, 1.0)
    return tuple(float(v) for v in cam / cam[1])


@dataclass
class Camera:
    """What the clip says about the camera and exposure (all optional)."""

    make: str = ""
    model: str = ""
    serial: str = ""
    lens: str = ""
    iso: int | None = None
    shutter_us: int | None = None
    aperture: float | None = None
    focal_length_mm: float | None = None
    datetime: str | None = None


@dataclass
class RawInfo:
    """Geometry and levels of a RAW clip: everything a DNG writer needs besides pixels."""

    width: int
    height: int
    bits: int
    black: int
    white: int
    cfa: str = "RGGB"
    color_matrix: tuple[float, ...] | None = None  # DNG ColorMatrix1: XYZ -> camera, row-major 3x3
    calibration_illuminant: int = 21  # EXIF LightSource code; 21 = D65
    as_shot_neutral: tuple[float, float, float] | None = None
    fps: float = 25.0
    camera: Camera = field(default_factory=Camera)
    #: DNG NoiseProfile (S, O): noise variance S * x + O at normalised level x, measured by rawvid.noise
    noise_profile: tuple[float, float] | None = None
    #: DNG ColorMatrix2 and CalibrationIlluminant2, carried when the source has a second calibration
    #: (raw developers interpolate between the two by the white balance)
    color_matrix2: tuple[float, ...] | None = None
    calibration_illuminant2: int | None = None

    def __post_init__(self) -> None:
        if self.cfa not in CFA_PATTERNS:
            raise ValueError(f"unknown CFA pattern {self.cfa!r}")
        if self.color_matrix is not None:
            self.color_matrix = tuple(float(v) for v in self.color_matrix)
        if self.as_shot_neutral is not None:
            self.as_shot_neutral = tuple(float(v) for v in self.as_shot_neutral)
        if self.noise_profile is not None:
            self.noise_profile = tuple(float(v) for v in self.noise_profile)
        if self.color_matrix2 is not None:
            self.color_matrix2 = tuple(float(v) for v in self.color_matrix2)

    @property
    def neutral(self) -> tuple[float, float, float]:
        """The white balance to record: the clip's own, else D65 through the colour matrix."""
        return self.as_shot_neutral or neutral_from_matrix(self.color_matrix)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RawInfo":
        d = dict(d)
        d["camera"] = Camera(**(d.get("camera") or {}))
        for key in ("color_matrix", "as_shot_neutral", "noise_profile", "color_matrix2"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class Frame:
    """One RAW frame: the Bayer mosaic (uint16, height x width) and where it sits in the clip."""

    index: int  # position in the clip after ordering, from 0
    number: int  # the source's own frame number
    timestamp_us: int
    mosaic: np.ndarray


#: calibration modes of an encode (and of the bench): ``auto``, the paper's ``keyframe``, ``per-frame``
CALIBRATIONS = ("auto", "keyframe", "per-frame", "adaptive")
#: Encoder block refinement (rawvid.refine): auto = blocks where every frame's RAW and the weights exist.
REFINEMENTS = ("auto", "off", "blocks", "weights")
