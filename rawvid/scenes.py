"""Real sensor data as scenes for synthetic clips: linear RGB per Bayer quad, plus the sensor's facts.

Each source (a DNG, an MLV frame, a headerless Bayer dump, packed planes, linear
raw-RGB PNGs) becomes a :class:`Scene`: black-subtracted linear RGB, one pixel per
2x2 quad (R, mean of the two greens, B), normalised so 1.0 is the sensor's white,
with the CFA pattern, bit depth, levels and colour facts the synthetic camera
re-creates. ``load_shared_scenes`` knows the files of ../shared/data (see its README).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bayer import PLANE_OFFSETS, pack
from .dng import read_dng
from .meta import RawInfo

#: Colour matrix used for sources that carry none (Canon 550D's, XYZ -> camera):
#: LibRaw needs one to render, and any plausible camera matrix makes realistic sRGB.
FALLBACK_MATRIX = (0.6461, -0.1164, -0.0857, -0.3825, 1.1597, 0.2534, -0.0416, 0.1540, 0.6039)


@dataclass
class Sensor:
    """The synthetic camera's sensor: how linear light becomes RAW numbers."""

    bits: int = 14
    black: int = 2048
    white: int = 15000
    cfa: str = "RGGB"
    color_matrix: tuple[float, ...] = FALLBACK_MATRIX
    neutral: tuple[float, float, float] | None = None
    camera: str = "rawvid synthetic"
    full_well: float = 12000.0  # electrons at white: sets the shot noise
    read_noise: float = 3.0  # electrons


@dataclass
class Scene:
    """A still: linear RGB (h x w x 3 float32, quads, 1.0 = white) and its sensor."""

    name: str
    rgb: np.ndarray
    sensor: Sensor
    group: str = ""  # scenes of one group (an exposure bracket) never split between train and test
    exposures: list[np.ndarray] = field(default_factory=list)  # same scene at other exposures, if any

    @property
    def source_group(self) -> str:
        return self.group or self.name


def quads_to_rgb(mosaic: np.ndarray, cfa: str, black: float, white: float) -> np.ndarray:
    """Linear RGB per 2x2 quad: (R, (Gr + Gb) / 2, B) after black subtraction, 1.0 at white."""
    planes = pack(mosaic, cfa).astype(np.float32)
    r, gr, gb, b = (planes[i] for i in range(4))
    rgb = np.stack([r, 0.5 * (gr + gb), b], axis=-1)
    return np.clip((rgb - black) / float(white - black), 0.0, None).astype(np.float32)


def scene_from_dng(path: Path, name: str | None = None, **sensor_kw) -> Scene:
    mosaic, info = read_dng(path)
    sensor = Sensor(bits=info.bits, black=info.black, white=info.white, cfa=info.cfa,
                    color_matrix=info.color_matrix or FALLBACK_MATRIX, camera=info.camera.model or path.stem,
                    **sensor_kw)
    return Scene(name or path.stem, quads_to_rgb(mosaic, info.cfa, info.black, info.white), sensor)


def scene_from_info(name: str, mosaic: np.ndarray, info: RawInfo, **sensor_kw) -> Scene:
    sensor = Sensor(bits=info.bits, black=info.black, white=info.white, cfa=info.cfa,
                    color_matrix=info.color_matrix or FALLBACK_MATRIX, neutral=info.as_shot_neutral,
                    camera=info.camera.model or name, **sensor_kw)
    return Scene(name, quads_to_rgb(mosaic, info.cfa, info.black, info.white), sensor)


def _bayer_dump(path: Path, width: int, height: int, dtype: str) -> np.ndarray:
    data = np.fromfile(path, dtype=dtype)
    if data.size != width * height:
        raise ValueError(f"{path}: {data.size} samples, expected {width}x{height}")
    return data.reshape(height, width)


def load_shared_scenes(root: Path) -> list[Scene]:
    """Every usable still in ../shared/data as a Scene (missing files are skipped)."""
    from .mlv import MLVReader

    raw = root / "raw"
    scenes: list[Scene] = []
    if (raw / "canon550d_colorchart.dng").is_file():
        scenes.append(scene_from_dng(raw / "canon550d_colorchart.dng", "canon550d_colorchart", full_well=14000))
    if (raw / "bmpcc4k_lake.dng").is_file():
        s = scene_from_dng(raw / "bmpcc4k_lake.dng", "bmpcc4k_lake", full_well=20000)
        s.rgb = s.rgb[::2, ::2].copy()  # 4K: half the quads is plenty and keeps clips fast to build
        scenes.append(s)
    mlv = root / "mlv" / "canon5d3_M19-0333-cut.MLV"
    if mlv.is_file():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with MLVReader(mlv) as clip:
                scenes.append(scene_from_info("canon5d3_mlv", clip.read(0), clip.info, full_well=30000))
    nikon = raw / "nikon_flower_768x512_rggb14.raw"
    if nikon.is_file():
        m = _bayer_dump(nikon, 768, 512, "<u2")
        scenes.append(Scene("nikon_flower", quads_to_rgb(m, "RGGB", 600, 15520),
                            Sensor(bits=14, black=600, white=15520, camera="Nikon", full_well=20000)))
    vivo = raw / "vivo_x90_night_rggb12_packed.npy"
    if vivo.is_file():
        planes = np.load(vivo, allow_pickle=False).transpose(2, 0, 1).astype(np.float32)  # [R, Gr, Gb, B]
        rgb = np.stack([planes[0], 0.5 * (planes[1] + planes[2]), planes[3]], -1) / 4095.0
        scenes.append(Scene("vivo_night", rgb.astype(np.float32),
                            Sensor(bits=12, black=64, white=4095, camera="vivo X90", full_well=4000, read_noise=2.0)))
    isp = raw / "infiniteisp"
    for p in sorted(isp.glob("*_2592x1536_grbg_8bit.raw")) if isp.is_dir() else []:
        m = _bayer_dump(p, 2592, 1536, "u1").astype(np.uint16)
        rgb = quads_to_rgb(m, "GRBG", 12.5, 255)[::2, ::2].copy()
        scenes.append(Scene(f"infiniteisp_{p.name.split('_')[0]}", rgb,
                            Sensor(bits=12, black=256, white=4095, cfa="GRBG", neutral=(1 / 1.77, 1.0, 1 / 1.64),
                                   camera="Infinite-ISP sensor", full_well=6000, read_noise=2.5)))
    tcl = raw / "tcl_mcr_bracket"
    brackets = sorted(tcl.glob("C00400_*.raw")) if tcl.is_dir() else []
    if brackets:
        imgs = [quads_to_rgb(_bayer_dump(p, 1280, 1024, "u1").astype(np.uint16), "RGGB", 0, 255) for p in brackets]
        scenes.append(Scene("tcl_bracket", imgs[-3], Sensor(bits=12, black=128, white=4095, camera="MT9M001",
                                                            full_well=8000), group="tcl_bracket", exposures=imgs))
    for p in sorted((root / "rawrgb").glob("*_sensorname_sony_imx135.png")):
        import cv2

        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3:
            continue
        rgb = img[:, :, ::-1].astype(np.float32) / 65535.0
        neutral = None
        meta = p.with_name(p.stem + "_metadata.json")
        if meta.is_file():
            ill = json.loads(meta.read_text()).get("illuminant_color_raw")
            if ill and ill[1] > 0:
                neutral = (ill[0] / ill[1], 1.0, ill[2] / ill[1])
        # bring the brightest 0.1% near white, as a camera's exposure would
        scale = 0.9 / max(1e-3, float(np.percentile(rgb, 99.9)))
        idx = p.stem.split("_field_")[1][:3]
        scenes.append(Scene(f"imx135_field{idx}", np.clip(rgb * scale, 0, None),
                            Sensor(bits=10, black=64, white=1023, camera="Sony IMX135", neutral=neutral,
                                   full_well=4500, read_noise=2.0)))
    return scenes


def remosaic(rgb: np.ndarray, cfa: str) -> np.ndarray:
    """Linear RGB quads (h x w x 3) -> float mosaic (2h x 2w) in the given CFA (both greens from G)."""
    h, w, _ = rgb.shape
    out = np.empty((2 * h, 2 * w), dtype=np.float32)
    for plane, (dy, dx) in zip((rgb[..., 0], rgb[..., 1], rgb[..., 1], rgb[..., 2]), PLANE_OFFSETS[cfa]):
        out[dy::2, dx::2] = plane
    return out
