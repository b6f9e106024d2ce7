"""Encoding: RAW clip -> .rvd (sRGB video + RAW keyframes + manifest), streaming and atomic."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import __version__
from .atomic import atomic_path
from .container import (FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, MIME_BINARY, MIME_DNG, MIME_JSON, RvdFile, mux,
                        sha256_file)
from .dng import write_dng
from .errors import RawvidError
from .meta import CALIBRATIONS, REFINEMENTS
from .isp import libraw_version, render, render_params
from .model import DEFAULT_MODEL
from .source import Source, SourceFrame, open_source
from .video import VideoSettings, VideoWriter, ffmpeg_version

#: ``progress(done, total)``; the encoder's refinement pass adds a third argument, the stage's name.
Progress = Callable[..., None]
#: Sources whose sRGB comes with them (a camera's video, RVD's PNGs) instead of being rendered here.
GIVEN_SRGB = ("video+dng", "rvd-layout")


@dataclass
class EncodeOptions:
    """Encoder settings (the CLI's options)."""

    keyframe_interval: int = 0  # 0: the first frame only (the paper's setting)
    render: str = "stable"  # stable | rvd
    video: VideoSettings = field(default_factory=VideoSettings)
    start: int = 0
    stop: int | None = None
    fps: float | None = None  # override the source frame rate
    #: keyframe | per-frame (store every frame's global map, 230 bytes a frame) | auto: per-frame where it
    #: measurably pays (renderings that move per frame: rvd, given sRGB), keyframe for stable rendering
    calibration: str = "auto"
    #: off | blocks (per 32x32 block, the weight blending the network with global-fit, chosen against the
    #: true RAW by running the decoder's chain: under 1 KiB a frame) | auto: blocks where every frame's RAW
    #: is known and the model's weights exist
    refine: str = "auto"
    model: str | None = None  # the model decode will use (default: models/fagdn-default)
    device: str = "auto"  # where the refinement pass runs the network: auto | cpu | cuda


@dataclass
class EncodeResult:
    output: Path
    frames: int
    seconds: float
    sizes: dict

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def keyframe_indices(count: int, interval: int) -> list[int]:
    """Frames stored as RAW: frame 0, then every ``interval`` frames (0 = frame 0 only)."""
    if count <= 0:
        return []
    if interval < 0:
        raise ValueError("keyframe interval must be >= 0")
    return list(range(0, count, interval)) if interval else [0]


def parse_range(text: str | None) -> tuple[int, int | None]:
    """``START:END`` (END exclusive, either may be empty) -> (start, stop)."""
    if not text:
        return 0, None
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"frame range {text!r} is not START:END")
    try:
        start = int(parts[0]) if parts[0] else 0
        stop = int(parts[1]) if parts[1] else None
    except ValueError:
        raise ValueError(f"frame range {text!r} is not START:END with integers") from None
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"frame range {text!r} is empty or negative")
    return start, stop


def _given_rgb(fr: SourceFrame) -> np.ndarray:
    return fr.rgb  # type: ignore[return-value]


def _rendered(src: Source, frames: Iterator[SourceFrame], mode: str) -> Iterator[tuple[SourceFrame, np.ndarray]]:
    """sRGB for every frame: the source's own (camera video, RVD PNGs) or rendered with LibRaw.

    Rendering runs one frame ahead in a worker thread (LibRaw releases the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for fr in frames:
            if fr.rgb is not None:
                fut = pool.submit(_given_rgb, fr)
            else:
                fut = pool.submit(render, fr.mosaic, src.info, mode)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (fr, fut)
        if pending is not None:
            yield pending[0], pending[1].result()


def resolve_calibration(mode: str, src: Source, render_mode: str) -> str:
    """The calibration an encode uses: ``auto`` picks per-frame where the rendering changes per frame.

    Measured on the example clip (global-fit, H.265 CRF 16): per-frame calibration gains 8.5 dB
    with rvd rendering (LibRaw's auto-brightness) and 0.03 dB with stable rendering, for 0.4%
    more bytes. It needs the true RAW of every frame, so a video+DNG input keeps keyframe calibration.
    """
    if mode not in CALIBRATIONS:
        raise RawvidError(None, f"unknown calibration {mode!r} (auto, keyframe or per-frame)")
    if not src.has_raw:
        if mode == "per-frame":
            raise RawvidError(src.path, "per-frame calibration needs the RAW of every frame")
        return "keyframe"
    if mode == "auto":
        return "per-frame" if (src.kind == "rvd-layout" or render_mode == "rvd") else "keyframe"
    return mode


CALIBRATION_NAME = "calibration.f16"


def resolve_refinement(mode: str, src: Source, model: str) -> str:
    """The refinement an encode uses: ``auto`` is blocks when every frame's RAW and the model's weights exist."""
    from .model import resolve_model

    if mode not in REFINEMENTS:
        raise RawvidError(None, f"unknown refinement {mode!r} (auto, off or blocks)")
    if mode == "off":
        return "off"
    if not src.has_raw:
        if mode == "blocks":
            raise RawvidError(src.path, "block refinement needs the RAW of every frame")
        return "off"
    try:
        resolve_model(model)
    except RawvidError:
        if mode == "blocks":
            raise
        return "off"
    return "blocks"


REFINE_NAME = "refine.u8.zlib"


def network_method(model: str, width: int, height: int, device: str = "cpu", tile: int | None = None):
    """The chained network for a clip of ``width`` x ``height`` (tiled above ~2K x 1K half resolution)."""
    from .methods import Network
    from .model import load_model

    if tile is None:
        tile = 1024 if width * height // 4 > 2048 * 1152 else None
    return Network(load_model(model, device=device), device=device, tile=tile)


def predict_frame(method, prev_raw: np.ndarray, prev_srgb: np.ndarray, srgb: np.ndarray, info,
                  gmap=None, index: np.ndarray | None = None, target: np.ndarray | None = None):
    """One chained frame exactly as decode writes it; the encoder's refinement pass runs the same code.

    ``gmap``: this frame's per-frame calibration. ``index``: the stored block weights (decode);
    ``target``: the true RAW, to choose them (encode). Returns (uint16 planes, the normalised RAW
    the chain continues from, the block indices or None).
    """
    from .bayer import denormalise, normalise
    from .refine import blend, choose_weights

    if gmap is not None:
        method.calibrate(gmap)
    pred = method.predict(prev_raw, prev_srgb, srgb)
    if target is not None or index is not None:
        pred = np.clip(pred, 0.0, 1.0)
        base = method.base(srgb)
        if target is not None:
            index = choose_weights(pred, base, target)
        pred = blend(pred, base, index)
    planes = denormalise(pred, info.black, info.white, info.bits)
    return planes, normalise(planes, info.black, info.white), index


def _side_info(src: Source, video: Path, start: int, stop: int, keys: set[int], tdir: Path, *,
               per_frame: bool, model: str | None, device: str = "cpu",
               progress: Progress | None = None) -> tuple[dict | None, dict | None]:
    """Per-frame calibration and block refinement, from the encoder's own video decoded back.

    Calibration: each frame's global map (33-knot curves, 4x3 matrix, offset: 115 float16
    values, 230 bytes). Refinement: the decoder's chain, run here with the float16 maps the
    decoder will read, choosing each block's weight against the true RAW.
    """
    from .bayer import raw_planes, srgb_half
    from .methods import CURVE_KNOTS, GlobalMap, fit_global_map
    from .refine import BLOCK, LEVELS, grid_shape, pack
    from .video import VideoReader

    info = src.info
    count = stop - start
    rows = []
    method = None
    if model is not None:
        method = network_method(model, info.width, info.height, device)
        grid = grid_shape(info.height // 2, info.width // 2)
        maps = np.zeros((count, *grid), dtype=np.uint8)
    prev_raw = prev_srgb = None
    with VideoReader(video, info.width, info.height) as reader:
        for fr, rgb in zip(src.frames(start, stop), reader):
            i = fr.index - start
            srgb, truth = srgb_half(rgb), raw_planes(fr.mosaic, info)
            gmap = None
            if per_frame:
                row = np.asarray(fit_global_map(srgb, truth).to_list(), dtype="<f2")
                rows.append(row)
                gmap = GlobalMap.from_list(row.astype(np.float64), CURVE_KNOTS)
            if method is None:
                continue
            if i in keys:
                method.keyframe(truth, srgb)
                raw = truth
            else:
                _, raw, maps[i] = predict_frame(method, prev_raw, prev_srgb, srgb, info, gmap, target=truth)
            prev_raw, prev_srgb = raw, srgb
            if progress:
                progress(i + 1, count, "refining")
    calib = refine = None
    if per_frame:
        arr = np.asarray(rows, dtype="<f2")
        (tdir / CALIBRATION_NAME).write_bytes(arr.tobytes())
        calib = {"mode": "per-frame", "file": CALIBRATION_NAME, "frames": len(rows),
                 "values_per_frame": arr.shape[1], "knots": CURVE_KNOTS, "dtype": "float16-le"}
    if method is not None:
        from .model import resolve_model

        (tdir / REFINE_NAME).write_bytes(pack(maps))
        refine = {"mode": "blocks", "file": REFINE_NAME, "frames": count, "grid": list(maps.shape[1:]),
                  "block": 2 * BLOCK, "levels": list(LEVELS), "dtype": "uint8 zlib",
                  "model": model, "model_sha256": sha256_file(resolve_model(model))}
    return calib, refine


def build_manifest(src: Source, opts: EncodeOptions, frame_count: int, timestamps: list[int],
                   numbers: list[int], keyframes: list[int], attachments: dict[str, str],
                   audio: dict | None) -> dict:
    info = src.info.to_dict()
    given = src.kind in GIVEN_SRGB
    render_mode = {"video+dng": "camera", "rvd-layout": "given"}.get(src.kind, opts.render)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "rawvid_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {
            "kind": src.kind, "name": src.path.name, "bytes": src.size_bytes,
            "frames_in_source": src.frame_count, "first_frame": opts.start, "warnings": src.warnings,
        },
        "frame_count": frame_count,
        **info,
        "timestamps_us": timestamps,
        "frame_numbers": numbers,
        "keyframe_interval": opts.keyframe_interval,
        "keyframes": [{"index": k, "file": f"key_{k:06d}.dng"} for k in keyframes],
        "render": {"mode": render_mode,
                   "params": None if given else render_params(opts.render),
                   "libraw": libraw_version()},
        "video": {**opts.video.to_dict(), "ffmpeg": ffmpeg_version()},
        "audio": audio,
        "model": opts.model or DEFAULT_MODEL,
        "attachments": attachments,
    }


def encode(input: str | os.PathLike | Source | None, output: str | os.PathLike, options: EncodeOptions | None = None,
           *, video: str | os.PathLike | None = None, raw: str | os.PathLike | None = None,
           force: bool = False, progress: Progress | None = None) -> EncodeResult:
    """Encode an MLV, a DNG folder, or ``video`` + ``raw`` into one .rvd file.

    The output appears only when complete (temp file, then rename); an existing
    output is refused unless ``force``.
    """
    opts = options or EncodeOptions()
    output = Path(output)
    if output.exists() and not force:
        raise RawvidError(output, "output exists (use --force to overwrite)")
    if output.is_dir():
        raise RawvidError(output, "output is a folder, expected a file name")
    if not output.parent.is_dir():
        raise RawvidError(output, "output folder does not exist")
    t0 = time.perf_counter()
    # a Source handed in belongs to the caller, who closes it
    src_cm = contextlib.nullcontext(input) if isinstance(input, Source) else \
        open_source(input, video=video, raw=raw, fps=opts.fps)
    with src_cm as src:
        if src.kind not in GIVEN_SRGB:
            render_params(opts.render)  # validate before any work
        per_frame = resolve_calibration(opts.calibration, src, opts.render) == "per-frame"
        model = opts.model or DEFAULT_MODEL
        blocks = resolve_refinement(opts.refine, src, model) == "blocks"
        device = _select_device(opts.device) if blocks else "cpu"  # where the refinement pass runs
        start = opts.start
        stop = src.frame_count if opts.stop is None else min(opts.stop, src.frame_count)
        if start >= stop:
            raise RawvidError(src.path, f"frame range {start}:{opts.stop} selects no frame "
                              f"(the clip has {src.frame_count})")
        if not src.has_raw and (start != 0 or opts.keyframe_interval):
            raise RawvidError(src.path, "with --video/--raw only frame 0 has RAW: no --frames start "
                              "or --keyframe-interval")
        count = stop - start
        keys = set(keyframe_indices(count, opts.keyframe_interval))
        info = src.info
        with tempfile.TemporaryDirectory(prefix=".rawvid-", dir=output.parent) as td, \
                atomic_path(output) as tmp_out:
            tdir = Path(td)
            timestamps: list[int] = []
            numbers: list[int] = []
            attachments: dict[str, str] = {}
            t_first: int | None = None
            with VideoWriter(tdir / "video.mkv", info.width, info.height, info.fps, opts.video) as writer:
                for fr, rgb in _rendered(src, src.frames(start, stop), opts.render):
                    i = fr.index - start
                    if fr.mosaic is not None and i in keys:
                        name = f"key_{i:06d}.dng"
                        write_dng(tdir / name, fr.mosaic, info, compress=True, timestamp_us=fr.timestamp_us)
                        attachments[name] = sha256_file(tdir / name)
                    writer.write(rgb)
                    t_first = fr.timestamp_us if t_first is None else t_first
                    timestamps.append(fr.timestamp_us - t_first)
                    numbers.append(fr.number)
                    if progress:
                        progress(i + 1, count)
            if len(timestamps) != count:
                raise RawvidError(src.path, f"expected {count} frames, read {len(timestamps)}")
            calib = refine = None
            if per_frame or blocks:
                calib, refine = _side_info(src, tdir / "video.mkv", start, stop, keys, tdir, per_frame=per_frame,
                                           model=model if blocks else None, device=device,
                                           progress=progress)
            side = [d["file"] for d in (calib, refine) if d]
            for name in side:
                attachments[name] = sha256_file(tdir / name)
            audio = None
            wav = tdir / "audio.wav"
            if start == 0 and stop == src.frame_count and src.write_wav(wav):
                audio = {"codec": "flac", "source": "MLV WAVI/AUDF"}
            keylist = sorted(keys)
            manifest = build_manifest(src, opts, count, timestamps, numbers, keylist, attachments, audio)
            manifest["calibration"] = calib or {"mode": "keyframe"}
            manifest["refine"] = refine or {"mode": "off"}
            (tdir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
            files = [(tdir / MANIFEST_NAME, MIME_JSON)] + [(tdir / f"key_{k:06d}.dng", MIME_DNG) for k in keylist]
            files += [(tdir / name, MIME_BINARY) for name in side]
            mux(tdir / "video.mkv", tmp_out, files, audio=wav if audio else None,
                title=f"rawvid {src.path.name}")
    seconds = time.perf_counter() - t0
    return EncodeResult(output, count, seconds, RvdFile(output).sizes())


def read_rvd(path: str | os.PathLike) -> RvdFile:
    """Open and verify an .rvd file (manifest version and every attachment checksum)."""
    return RvdFile(path)



# =========================================================================== decoding
DECODE_MARKER = ".rawvid-decode.json"


@dataclass
class DecodeOptions:
    """Decoder settings (the CLI's options)."""

    method: str = "auto"  # auto | network | global-fit
    model: str | None = None  # weights name or path; default: the one the manifest names
    start: int = 0
    stop: int | None = None
    compress: bool = False  # lossless-JPEG DNGs
    device: str = "auto"  # auto | cpu | cuda
    tile: int | None = None  # network tile size in half-resolution pixels (None: automatic)
    resume: bool = False
    force: bool = False


@dataclass
class DecodeResult:
    output: Path
    frames: int  # frames written by this run
    seconds: float
    method: str
    device: str
    timings: dict
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def info_from_manifest(m: dict):
    """The RawInfo recorded in a manifest."""
    from .meta import RawInfo

    keys = ("width", "height", "bits", "black", "white", "cfa", "color_matrix", "calibration_illuminant",
            "as_shot_neutral", "fps", "camera")
    return RawInfo.from_dict({k: m[k] for k in keys if k in m})


def frame_name(index: int) -> str:
    """Output DNG name of a frame: its zero-padded index in the clip."""
    return f"{index:06d}.dng"


def _select_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RawvidError(None, "--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise RawvidError(None, f"unknown device {device!r} (auto, cpu or cuda)")
    return device


def _make_method(opts: DecodeOptions, manifest: dict, device: str, notes: list[str]):
    """Build the reconstruction method; ``auto`` is the network when its weights exist."""
    from .methods import GlobalFit, Warp
    from .model import DEFAULT_MODEL, resolve_model

    method = opts.method
    name = opts.model or manifest.get("model") or DEFAULT_MODEL
    if method == "auto":
        try:
            resolve_model(name)
            method = "network"
        except RawvidError:
            method = "global-fit"
            notes.append(f"no weights for model {name!r} in models/: decoding with global-fit")
    if method == "global-fit":
        return GlobalFit()
    if method == "warp":
        return Warp()
    if method == "network":
        return network_method(name, manifest["width"], manifest["height"], device, opts.tile)
    raise RawvidError(None, f"unknown method {method!r} (auto, network, global-fit or warp)")


def _prepare_output(out: Path, manifest_digest: str, opts: DecodeOptions, rvd_name: str) -> int | None:
    """Check the output folder; returns the last complete frame index when resuming."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / DECODE_MARKER
    existing = sorted(p for p in out.iterdir() if p.suffix.lower() == ".dng")
    mine = None
    if marker.is_file():
        try:
            mine = json.loads(marker.read_text()).get("manifest_sha256") == manifest_digest
        except (json.JSONDecodeError, OSError):
            mine = False
    if existing and not opts.force:
        if not mine:
            raise RawvidError(out, "output folder holds another clip's frames (use --force to write there anyway)")
        if not opts.resume:
            raise RawvidError(out, "output folder already holds this clip's frames (use --resume or --force)")
    from .atomic import atomic_write

    with atomic_write(marker) as f:
        f.write(json.dumps({"manifest_sha256": manifest_digest, "rvd": rvd_name}).encode())
    if opts.resume and mine:
        done = [int(p.stem) for p in existing if p.stem.isdigit()]
        return max(done) if done else None
    return None


def _load_calibration(rvd: RvdFile, count: int):
    """Per-frame global maps stored by ``--calibration per-frame`` (None for keyframe calibration)."""
    from .methods import GlobalMap

    c = rvd.manifest.get("calibration") or {}
    if c.get("mode") != "per-frame":
        return None
    data = rvd.attachment(c.get("file", CALIBRATION_NAME))
    n, k = int(c.get("values_per_frame", 0)), int(c.get("knots", 0))
    if n <= 0 or len(data) != 2 * n * count or n != 3 * k + 16:
        raise RawvidError(rvd.path, "calibration attachment does not match the manifest")
    arr = np.frombuffer(data, dtype="<f2").reshape(count, n).astype(np.float64)
    return [GlobalMap.from_list(row, k) for row in arr]


def _load_refinement(rvd: RvdFile, count: int, method, model: str, notes: list[str]) -> np.ndarray | None:
    """Block weights stored by the encoder's refinement (None when off, or not for this method/model)."""
    from .model import resolve_model
    from .refine import BLOCK, LEVELS, grid_shape, unpack

    r = rvd.manifest.get("refine") or {}
    if r.get("mode") != "blocks":
        return None
    if method.name != "network":
        return None  # the weights blend the network with global-fit; other methods do not use them
    if r.get("model_sha256") != sha256_file(resolve_model(model)):
        notes.append(f"block refinement was made for model {r.get('model')!r}, not {model!r}: not applied")
        return None
    grid = grid_shape(int(rvd.manifest["height"]) // 2, int(rvd.manifest["width"]) // 2)
    try:
        ok = (r.get("block") == 2 * BLOCK and [float(v) for v in r.get("levels", [])] == list(LEVELS)
              and list(r.get("grid", [])) == list(grid) and r.get("frames") == count)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise RawvidError(rvd.path, "block refinement in the manifest does not match the clip or this rawvid version")
    try:
        return unpack(rvd.attachment(r.get("file", REFINE_NAME)), count, grid, len(LEVELS))
    except ValueError as e:
        raise RawvidError(rvd.path, str(e)) from None


def decode(rvd_path: str | os.PathLike, output: str | os.PathLike, options: DecodeOptions | None = None, *,
           progress: Progress | None = None) -> DecodeResult:
    """Rebuild a DNG sequence from an .rvd: keyframes exactly, other frames chained by the method."""
    import hashlib

    import torch

    from .bayer import raw_planes, srgb_half, unpack
    from .dng import read_dng, read_dng_bytes
    from .video import VideoReader

    opts = options or DecodeOptions()
    t_start = time.perf_counter()
    rvd = RvdFile(rvd_path)
    m = rvd.manifest
    info = info_from_manifest(m)
    count = int(m["frame_count"])
    stop = count if opts.stop is None else min(opts.stop, count)
    if opts.start >= stop:
        raise RawvidError(rvd_path, f"frame range {opts.start}:{opts.stop} selects no frame (the clip has {count})")
    keyframes = {int(k["index"]): k["file"] for k in m.get("keyframes", [])}
    if 0 not in keyframes:
        raise RawvidError(rvd_path, "the manifest lists no keyframe at frame 0")
    device = _select_device(opts.device)
    notes: list[str] = []
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    method = _make_method(opts, m, device, notes)
    out = Path(output)
    digest = hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()  # identifies the clip
    last_done = _prepare_output(out, digest, opts, Path(rvd_path).name)
    first_write = opts.start if last_done is None else max(opts.start, last_done + 1)
    key_from = max(k for k in keyframes if k <= first_write)
    timings = method.timings
    timestamps = m.get("timestamps_us") or [None] * count
    calib = _load_calibration(rvd, count)
    refine = _load_refinement(rvd, count, method, opts.model or m.get("model") or DEFAULT_MODEL, notes)
    written = 0
    prev_raw = prev_srgb = None
    total = stop - first_write
    if total <= 0:
        return DecodeResult(out, 0, time.perf_counter() - t_start, method.name, device, vars(timings), notes)
    t = time.perf_counter()
    reader = VideoReader(rvd.path, info.width, info.height)
    frames = iter(reader)
    try:
        for i in range(stop):
            rgb = next(frames, None)
            if rgb is None:
                raise RawvidError(rvd_path, f"video stream ends at frame {i}, the manifest says {count}")
            if i < key_from:
                continue
            srgb = srgb_half(rgb)
            timings.add("video", time.perf_counter() - t)
            t = time.perf_counter()
            if i in keyframes:
                mosaic, _ = read_dng_bytes(rvd.attachment(keyframes[i]), keyframes[i])
                raw = raw_planes(mosaic, info)
                method.keyframe(raw, srgb)
            elif last_done is not None and i <= last_done:
                # resuming: frames up to the last complete one are on disk; the chain restarts from it
                mosaic = None
                if i == last_done:
                    mosaic, _ = read_dng(out / frame_name(i))
                raw = None if mosaic is None else raw_planes(mosaic, info)
            else:
                planes, raw, _ = predict_frame(method, prev_raw, prev_srgb, srgb, info,
                                               None if calib is None else calib[i],
                                               None if refine is None else refine[i])
                mosaic = unpack(planes, info.cfa)  # the chain continues from exactly what is written
            if i >= first_write:
                t = time.perf_counter()
                write_dng(out / frame_name(i), mosaic, info, compress=opts.compress, timestamp_us=timestamps[i])
                timings.add("dng", time.perf_counter() - t)
                written += 1
                if progress:
                    progress(i + 1 - first_write, total)
            prev_raw, prev_srgb = raw, srgb
            t = time.perf_counter()
    finally:
        reader.close()
    return DecodeResult(out, written, time.perf_counter() - t_start, method.name, device, vars(timings), notes)
