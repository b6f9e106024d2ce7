"""The RVD benchmark layout (Zhang et al., CVPR 2024), read exactly as the authors' code reads it.

::

    ROOT/data.json                      [{"video_name": "...", "frames": ["name", ...]}, ...]
    ROOT/RAW/<video>/<frame>.tiff       1-channel uint16 Bayer mosaic
    ROOT/sRGB/<video>/<frame>.png       8-bit RGB, full resolution
    ROOT/flow/<video>/<frame>_flow.npy  optional precomputed flow (not needed: rawvid computes flow)
    ROOT/tags.json                      optional scenario tags per clip (test splits)
    ROOT/meta.json                      rawvid's extension: levels, CFA, bit depth, fps, camera

The RVD files carry no levels; without meta.json the RVD-Part1 camera's are assumed
(Canon 5D Mark III: 14-bit RGGB, black 2048, white 15000). Names from data.json are
untrusted: anything that is not a plain file name is refused.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FormatError
from .meta import MAX_SIDE, Camera, RawInfo

#: RVD-Part1 (Canon 5D Mark III, Magic Lantern): the levels assumed when meta.json is absent.
PART1_LEVELS = dict(bits=14, black=2048, white=15000, cfa="RGGB", fps=30.0)
PART1_MATRIX = (0.6722, -0.0635, -0.0963, -0.4287, 1.2460, 0.2028, -0.0908, 0.2162, 0.5668)


def safe_name(name: object, where: Path) -> str:
    """A video or frame name from data.json: a plain file name, never a path."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or os.path.isabs(name):
        raise FormatError(where, f"refusing unsafe name {name!r} in data.json")
    return name


@dataclass
class RVDVideo:
    name: str
    frames: list[str]
    tags: list[str] = field(default_factory=list)


@dataclass
class RVDLayout:
    """One split (for example RVD/Part1/test): its clips and the sensor facts of its camera."""

    root: Path
    videos: list[RVDVideo]
    info: RawInfo

    @classmethod
    def is_layout(cls, path: str | os.PathLike) -> bool:
        p = Path(path)
        return p.is_dir() and (p / "data.json").is_file() and (p / "RAW").is_dir()

    @classmethod
    def open(cls, root: str | os.PathLike) -> "RVDLayout":
        root = Path(root)
        index = root / "data.json"
        if not index.is_file():
            raise FormatError(root, "not an RVD-layout folder (no data.json)")
        try:
            entries = json.loads(index.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(index, f"not valid JSON ({exc})") from None
        if not isinstance(entries, list):
            raise FormatError(index, "expected a list of {video_name, frames}")
        tags: dict = {}
        if (root / "tags.json").is_file():
            tags = json.loads((root / "tags.json").read_text())
            if not isinstance(tags, dict):
                raise FormatError(root / "tags.json", "expected {video_name: [tags]}")
        videos = []
        for e in entries:
            if not isinstance(e, dict) or "video_name" not in e or not isinstance(e.get("frames"), list):
                raise FormatError(index, "each entry needs video_name and a list of frames")
            name = safe_name(e["video_name"], index)
            frames = [safe_name(f, index) for f in e["frames"]]
            t = tags.get(name, [])
            videos.append(RVDVideo(name, frames, [str(x) for x in (t if isinstance(t, list) else [t])]))
        meta = dict(PART1_LEVELS, color_matrix=PART1_MATRIX)
        if (root / "meta.json").is_file():
            meta.update(json.loads((root / "meta.json").read_text()))
        cam = meta.pop("camera", {}) or {}
        first = videos[0] if videos else None
        h = w = 0
        if first and first.frames:
            raw = read_raw_tiff(root / "RAW" / first.name / f"{first.frames[0]}.tiff")
            h, w = raw.shape
        keys = {"bits", "black", "white", "cfa", "fps", "color_matrix", "as_shot_neutral", "calibration_illuminant"}
        info = RawInfo(width=w, height=h, camera=Camera(**cam), **{k: v for k, v in meta.items() if k in keys})
        return cls(root, videos, info)

    def raw_path(self, video: RVDVideo, frame: str) -> Path:
        return self.root / "RAW" / video.name / f"{frame}.tiff"

    def srgb_path(self, video: RVDVideo, frame: str) -> Path:
        return self.root / "sRGB" / video.name / f"{frame}.png"

    def read_raw(self, video: RVDVideo, frame: str) -> np.ndarray:
        raw = read_raw_tiff(self.raw_path(video, frame))
        if raw.shape != (self.info.height, self.info.width):
            raise FormatError(self.raw_path(video, frame), f"frame is {raw.shape[1]}x{raw.shape[0]}, the split is "
                              f"{self.info.width}x{self.info.height}")
        return raw

    def read_srgb(self, video: RVDVideo, frame: str) -> np.ndarray:
        return read_png(self.srgb_path(video, frame), self.info.width, self.info.height)

    def size_bytes(self, video: RVDVideo) -> int:
        return sum(self.raw_path(video, f).stat().st_size for f in video.frames)


def read_raw_tiff(path: Path) -> np.ndarray:
    """A 1-channel uint16 Bayer TIFF (RVD's RAW frames)."""
    import tifffile

    if not path.is_file():
        raise FormatError(path, "missing RAW frame")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if len(page.shape) != 2 or page.shape[0] > MAX_SIDE or page.shape[1] > MAX_SIDE:
                raise FormatError(path, f"expected a 1-channel Bayer image, got shape {page.shape}")
            raw = page.asarray()
    except FormatError:
        raise
    except Exception as exc:
        raise FormatError(path, f"unreadable TIFF ({exc})") from None
    if raw.dtype != np.uint16 or raw.shape[0] % 2 or raw.shape[1] % 2:
        raise FormatError(path, f"expected even-sized uint16 Bayer data, got {raw.dtype} {raw.shape}")
    return raw


def read_png(path: Path, width: int | None = None, height: int | None = None) -> np.ndarray:
    """An 8-bit RGB PNG as H x W x 3 uint8 (RGB order)."""
    import cv2

    if not path.is_file():
        raise FormatError(path, "missing sRGB frame")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
        raise FormatError(path, "expected an 8-bit RGB PNG")
    rgb = np.ascontiguousarray(img[:, :, 2::-1])
    if width is not None and rgb.shape[:2] != (height, width):
        raise FormatError(path, f"sRGB is {rgb.shape[1]}x{rgb.shape[0]}, the RAW is {width}x{height}")
    return rgb


class RVDWriter:
    """Write an RVD-layout split: RAW TIFFs, sRGB PNGs, data.json, tags.json and meta.json.

    Files appear atomically; data.json is rewritten after every clip, so an interrupted
    build leaves a readable split of the clips completed so far.
    """

    def __init__(self, root: str | os.PathLike, info: RawInfo):
        self.root = Path(root)
        self.info = info
        self.entries: list[dict] = []
        self.tags: dict[str, list[str]] = {}
        (self.root / "RAW").mkdir(parents=True, exist_ok=True)
        (self.root / "sRGB").mkdir(parents=True, exist_ok=True)
        meta = {k: getattr(info, k) for k in ("bits", "black", "white", "cfa", "fps", "color_matrix",
                                              "as_shot_neutral", "calibration_illuminant")}
        meta["camera"] = {k: v for k, v in vars(info.camera).items()}
        self._write_json("meta.json", meta)

    def _write_json(self, name: str, obj) -> None:
        from .atomic import atomic_write

        with atomic_write(self.root / name) as f:
            f.write(json.dumps(obj, indent=1).encode())

    def add_video(self, name: str, frames, tags: list[str] | None = None) -> int:
        """``frames``: iterable of (mosaic uint16 H x W, sRGB uint8 H x W x 3). Returns the frame count."""
        import cv2
        import tifffile

        from .atomic import atomic_path

        name = safe_name(name, self.root)
        (self.root / "RAW" / name).mkdir(exist_ok=True)
        (self.root / "sRGB" / name).mkdir(exist_ok=True)
        names = []
        for i, (mosaic, rgb) in enumerate(frames):
            fname = f"{i:05d}"
            with atomic_path(self.root / "RAW" / name / f"{fname}.tiff") as tmp:
                tifffile.imwrite(tmp, np.ascontiguousarray(mosaic, dtype=np.uint16), metadata=None)
            with atomic_path(self.root / "sRGB" / name / f"{fname}.png") as tmp:
                ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
                tmp.write_bytes(buf.tobytes())
            names.append(fname)
        self.entries.append({"video_name": name, "frames": names})
        self._write_json("data.json", self.entries)
        if tags:
            self.tags[name] = list(tags)
            self._write_json("tags.json", self.tags)
        return len(names)
