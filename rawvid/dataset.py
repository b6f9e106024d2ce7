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


class RVDLayout:
    """One split (for example RVD/Part1/test): its clips and the sensor facts of their cameras."""

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
            try:
                meta.update(json.loads((root / "meta.json").read_text()))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise FormatError(root / "meta.json", f"not valid JSON ({exc})") from None
        per_video = meta.pop("videos", {}) or {}
        layout = cls(root, videos, RawInfo(width=2, height=2, bits=14, black=2048, white=15000), meta, per_video)
        if videos:
            layout.info = layout.video_info(videos[0])
        return layout

    def __init__(self, root: Path, videos: list[RVDVideo], info: RawInfo, meta: dict | None = None,
                 per_video: dict | None = None):
        self.root, self.videos, self.info = root, videos, info
        self._meta = meta or {}
        self._per_video = per_video or {}
        self._infos: dict[str, RawInfo] = {}

    def video_info(self, video: RVDVideo) -> RawInfo:
        """The sensor facts of one clip: the split's defaults, overridden per video in meta.json."""
        if video.name not in self._infos:
            meta = {**self._meta, **self._per_video.get(video.name, {})}
            cam = meta.get("camera") or {}
            keys = {"bits", "black", "white", "cfa", "fps", "color_matrix", "as_shot_neutral", "calibration_illuminant"}
            h = w = 2
            if video.frames:
                h, w = read_raw_tiff(self.raw_path(video, video.frames[0])).shape
            try:
                self._infos[video.name] = RawInfo(width=w, height=h, camera=Camera(**cam),
                                                  **{k: v for k, v in meta.items() if k in keys})
            except (TypeError, ValueError) as exc:
                raise FormatError(self.root / "meta.json", f"bad sensor facts for {video.name!r}: {exc}") from None
        return self._infos[video.name]

    def raw_path(self, video: RVDVideo, frame: str) -> Path:
        return self.root / "RAW" / video.name / f"{frame}.tiff"

    def srgb_path(self, video: RVDVideo, frame: str) -> Path:
        return self.root / "sRGB" / video.name / f"{frame}.png"

    def read_raw(self, video: RVDVideo, frame: str) -> np.ndarray:
        raw = read_raw_tiff(self.raw_path(video, frame))
        info = self.video_info(video)
        if raw.shape != (info.height, info.width):
            raise FormatError(self.raw_path(video, frame), f"frame is {raw.shape[1]}x{raw.shape[0]}, the clip is "
                              f"{info.width}x{info.height}")
        return raw

    def read_srgb(self, video: RVDVideo, frame: str) -> np.ndarray:
        info = self.video_info(video)
        return read_png(self.srgb_path(video, frame), info.width, info.height)

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


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An 8-bit RGB PNG, written atomically."""
    import cv2

    from .atomic import atomic_path

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise FormatError(path, "PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _sensor_facts(info: RawInfo) -> dict:
    d = {k: getattr(info, k) for k in ("bits", "black", "white", "cfa", "fps", "color_matrix", "as_shot_neutral",
                                       "calibration_illuminant")}
    d["camera"] = dict(vars(info.camera))
    return d


class RVDWriter:
    """Write an RVD-layout split: RAW TIFFs, sRGB PNGs, data.json, tags.json and meta.json.

    Files appear atomically; data.json is rewritten after every clip, so an interrupted
    build leaves a readable split of the clips completed so far.
    """

    def __init__(self, root: str | os.PathLike, info: RawInfo | None = None):
        self.root = Path(root)
        self.entries: list[dict] = []
        self.tags: dict[str, list[str]] = {}
        (self.root / "RAW").mkdir(parents=True, exist_ok=True)
        (self.root / "sRGB").mkdir(parents=True, exist_ok=True)
        self.meta: dict = {"videos": {}}
        if info is not None:
            self.meta.update(_sensor_facts(info))
        self._write_json("meta.json", self.meta)

    def _write_json(self, name: str, obj) -> None:
        from .atomic import atomic_write

        with atomic_write(self.root / name) as f:
            f.write(json.dumps(obj, indent=1).encode())

    def add_video(self, name: str, frames, tags: list[str] | None = None, info: RawInfo | None = None) -> int:
        """``frames``: iterable of (mosaic uint16 H x W, sRGB uint8 H x W x 3). Returns the frame count.

        ``info`` records this clip's own sensor facts (a split may mix cameras)."""
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
            write_png(self.root / "sRGB" / name / f"{fname}.png", rgb)
            names.append(fname)
        return self._finish(name, names, tags, info)

    def add_video_linked(self, name: str, raw_root: Path, srgb_frames, tags: list[str] | None = None,
                         info: RawInfo | None = None) -> int:
        """Add a clip whose RAW TIFFs already exist in another split (hard links), with its own sRGB."""
        name = safe_name(name, self.root)
        (self.root / "RAW" / name).mkdir(exist_ok=True)
        (self.root / "sRGB" / name).mkdir(exist_ok=True)
        names = []
        for i, rgb in enumerate(srgb_frames):
            fname = f"{i:05d}"
            target = self.root / "RAW" / name / f"{fname}.tiff"
            target.unlink(missing_ok=True)
            try:
                os.link(raw_root / "RAW" / name / f"{fname}.tiff", target)
            except OSError:
                import shutil

                shutil.copyfile(raw_root / "RAW" / name / f"{fname}.tiff", target)
            write_png(self.root / "sRGB" / name / f"{fname}.png", rgb)
            names.append(fname)
        return self._finish(name, names, tags, info)

    def _finish(self, name: str, names: list[str], tags: list[str] | None, info: RawInfo | None) -> int:
        if info is not None:
            self.meta["videos"][name] = _sensor_facts(info)
            self._write_json("meta.json", self.meta)
        self.entries.append({"video_name": name, "frames": names})
        self._write_json("data.json", self.entries)
        if tags:
            self.tags[name] = list(tags)
            self._write_json("tags.json", self.tags)
        return len(names)


# =========================================================================== building
@dataclass
class BuildReport:
    root: Path
    splits: dict  # render -> split -> {"clips": n, "frames": n}
    test_scenes: list[str]
    train_scenes: list[str]


def split_groups(groups: list[str], seed: int, test_fraction: float) -> tuple[list[str], list[str]]:
    """Assign whole source groups to train or test (deterministic from the seed): no still in both."""
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_test = max(1, int(round(test_fraction * len(groups)))) if len(groups) > 1 else 0
    test = sorted(order[:n_test])
    return sorted(g for g in groups if g not in test), test


def held_out(camera: str, names: tuple[str, ...]) -> bool:
    """Whether a sensor's camera name contains one of ``names`` (case-insensitive)."""
    return any(n.lower() in camera.lower() for n in names if n)


def build_dataset(out: str | os.PathLike, scenes: list, *, seed: int = 0, frames: int = 24, test_frames: int = 32,
                  size: tuple[int, int] = (512, 320), clips_per_scene: int = 3, test_fraction: float = 0.25,
                  renders: tuple[str, ...] = ("stable", "rvd"), progress=None,
                  hold_out_cameras: tuple[str, ...] = ()) -> BuildReport:
    """Write RVD-layout splits ``out/<render>/{train,test}`` of synthetic clips over real scenes.

    Every clip is drawn from ``seed`` and its name, so a rebuild gives the same data. The
    RAW of one clip is written once and hard-linked into each render mode's split.
    ``hold_out_cameras``: every scene of a sensor whose camera name contains one of these
    (case-insensitive) goes to test, the rest split as without them: leave-one-camera-out
    validation, whose training set is the usual one less that camera.
    """
    import zlib

    from .isp import render
    from .synth import make_clip, sensor_info

    out = Path(out)
    w, h = size
    if w % 4 or h % 4 or w < 64 or h < 64:
        raise ValueError(f"clip size {w}x{h}: both sides must be multiples of 4 and at least 64")
    qh, qw = h // 2, w // 2
    groups = sorted({s.source_group for s in scenes})
    train_g, test_g = split_groups(groups, seed, test_fraction)
    held = {s.source_group for s in scenes if held_out(s.sensor.camera, hold_out_cameras)}
    if hold_out_cameras and not held:
        known = ", ".join(sorted({s.sensor.camera for s in scenes}))
        raise ValueError(f"no scene's camera matches {', '.join(hold_out_cameras)} (cameras: {known})")
    train_g, test_g = [g for g in train_g if g not in held], sorted(set(test_g) | held)
    if not train_g:
        raise ValueError("holding out those cameras leaves no training scene")
    plan = []
    for scene in scenes:
        split = "test" if scene.source_group in test_g else "train"
        area = scene.rgb.shape[0] * scene.rgb.shape[1] / (qh * qw)
        n = 1 if split == "test" else int(np.clip(round(clips_per_scene * min(2.0, max(1.0, area / 4))), 1, 12))
        for k in range(n):
            plan.append((split, scene, f"{scene.name}_{k:02d}"))
    writers = {(r, sp): RVDWriter(out / r / sp) for r in renders for sp in ("train", "test")}
    counts = {r: {"train": {"clips": 0, "frames": 0}, "test": {"clips": 0, "frames": 0}} for r in renders}
    for done, (split, scene, name) in enumerate(plan):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        n = test_frames if split == "test" else frames
        spec, mosaics = make_clip(scene, rng, n, qh, qw, hard=True)
        info = sensor_info(scene, qh, qw)
        tags = _tags(spec)
        mosaics = list(mosaics)
        first = renders[0]
        for r in renders:
            wr = writers[(r, split)]
            frames_iter = ((m, render(m, info, r)) for m in mosaics)
            if r == first:
                wr.add_video(name, frames_iter, tags, info)
            else:  # same RAW: hard-link the first render's TIFFs, write this render's PNGs
                wr.add_video_linked(name, writers[(first, split)].root, (render(m, info, r) for m in mosaics), tags, info)
            counts[r][split]["clips"] += 1
            counts[r][split]["frames"] += n
        if progress:
            progress(done + 1, len(plan))
    return BuildReport(out, counts, test_g, train_g)


def build_scenarios(out: str | os.PathLike, scenes: list, *, seed: int = 0, frames: int = 32, long_frames: int = 120,
                    size: tuple[int, int] = (512, 320), per_scenario: int = 2, test_fraction: float = 0.25,
                    scenarios: tuple[str, ...] | None = None, renders: tuple[str, ...] = ("stable",),
                    progress=None, from_split: str = "test") -> BuildReport:
    """Write ``out/<render>/test`` of named scenario clips (``synth.SCENARIOS``) over the scenes that
    ``build_dataset`` with the same seed and test fraction holds out: clips no model trained on
    that split has seen, each tagged with its scenario and its camera, so bench reports both.

    Each scenario takes ``per_scenario`` held-out scenes in turn (a different start for each
    scenario, so every camera of the test split appears); ``long`` clips have ``long_frames``.

    ``from_split="train"``: the same scenarios over the training scenes instead, written to
    ``out/<render>/train`` as training data, each clip named ``<scene>_<scenario>`` so that
    ``rawvid train``'s validation (whole scenes held out by name) keeps a scene's clips together.
    """
    import zlib

    from .isp import render
    from .synth import SCENARIOS, make_scenario_clip, sensor_info

    out = Path(out)
    w, h = size
    if w % 4 or h % 4 or w < 64 or h < 64:
        raise ValueError(f"clip size {w}x{h}: both sides must be multiples of 4 and at least 64")
    qh, qw = h // 2, w // 2
    kinds = tuple(scenarios or SCENARIOS)
    for k in kinds:
        if k not in SCENARIOS:
            raise ValueError(f"unknown scenario {k!r} ({', '.join(SCENARIOS)})")
    groups = sorted({s.source_group for s in scenes})
    if from_split not in ("train", "test"):
        raise ValueError(f"scenarios come from the train or the test scenes, not {from_split!r}")
    train_g, test_g = split_groups(groups, seed, test_fraction)
    pool = test_g if from_split == "test" else train_g
    held = [s for s in scenes if s.source_group in pool]
    if not held:
        raise ValueError(f"no {from_split} scene to build scenarios from")
    plan = [(kind, held[(3 * n + j) % len(held)]) for n, kind in enumerate(kinds) for j in range(min(per_scenario, len(held)))]
    writers = {r: RVDWriter(out / r / from_split) for r in renders}
    counts = {r: {from_split: {"clips": 0, "frames": 0}} for r in renders}
    for done, (kind, scene) in enumerate(plan):
        name = f"{kind}_{scene.name}" if from_split == "test" else f"{scene.name}_{kind.replace('-', '')}"
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        n = long_frames if kind == "long" else frames
        spec, shot, mosaics = make_scenario_clip(kind, scene, rng, n, qh, qw)
        info = sensor_info(shot, qh, qw)
        mosaics = list(mosaics)
        tags = [f"scenario: {kind}", f"camera: {info.camera.model}"]
        if spec.orbit is not None:
            tags.append(f"max displacement {4 * spec.orbit[0] / spec.scale[0]:.0f} px")  # diameter, Bayer pixels
        clipped = float(np.mean([np.mean(m >= shot.sensor.white) for m in mosaics]))
        if clipped > 0.01:
            tags.append(f"clipped highlights ({100 * clipped:.0f}% of RAW samples)")
        for r in renders:
            counts[r][from_split]["clips"] += 1
            counts[r][from_split]["frames"] += writers[r].add_video(name, ((m, render(m, info, r)) for m in mosaics), tags,
                                                                info)
        if progress:
            progress(done + 1, len(plan))
    return BuildReport(out, counts, test_g, train_g)


def _tags(spec) -> list[str]:
    """Scenario tags of a synthetic clip, in the spirit of the RVD test tags."""
    tags = []
    speed = float(np.hypot(*spec.velocity))
    tags.append("fast motion" if speed > 2.0 else "slow motion")
    if spec.patches:
        tags.append("moving objects")
    if spec.bracket or max(spec.gains) / max(1e-6, min(spec.gains)) > 1.3:
        tags.append("exposure change")
    if spec.cut_at is not None:
        tags.append("scene change")
    if abs(spec.scale[1] - spec.scale[0]) > 0.1 or abs(spec.angle[1] - spec.angle[0]) > 1.5:
        tags.append("zoom or rotation")
    return tags
