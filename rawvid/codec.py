"""Encoding: RAW clip -> .rvd (sRGB video + RAW keyframes + manifest), streaming and atomic."""
from __future__ import annotations

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
from .container import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, MIME_DNG, MIME_JSON, RvdFile, mux, sha256_file
from .dng import write_dng
from .errors import RawvidError
from .isp import libraw_version, render, render_params
from .source import Source, SourceFrame, open_source
from .video import VideoSettings, VideoWriter, ffmpeg_version

Progress = Callable[[int, int], None]


@dataclass
class EncodeOptions:
    """Encoder settings (the CLI's options)."""

    keyframe_interval: int = 0  # 0: the first frame only (the paper's setting)
    render: str = "stable"  # stable | rvd
    video: VideoSettings = field(default_factory=VideoSettings)
    start: int = 0
    stop: int | None = None
    fps: float | None = None  # override the source frame rate


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


def _rendered(src: Source, frames: Iterator[SourceFrame], mode: str) -> Iterator[tuple[SourceFrame, np.ndarray]]:
    """Render frames to sRGB, one frame ahead in a worker thread (LibRaw releases the GIL)."""
    if not src.has_raw:
        for fr in frames:
            yield fr, fr.rgb  # type: ignore[misc]
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for fr in frames:
            fut = pool.submit(render, fr.mosaic, src.info, mode)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (fr, fut)
        if pending is not None:
            yield pending[0], pending[1].result()


def build_manifest(src: Source, opts: EncodeOptions, frame_count: int, timestamps: list[int],
                   numbers: list[int], keyframes: list[int], attachments: dict[str, str],
                   audio: dict | None) -> dict:
    info = src.info.to_dict()
    render_mode = opts.render if src.has_raw else "camera"
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
                   "params": render_params(opts.render) if src.has_raw else None,
                   "libraw": libraw_version()},
        "video": {**opts.video.to_dict(), "ffmpeg": ffmpeg_version()},
        "audio": audio,
        "attachments": attachments,
    }


def encode(input: str | os.PathLike | None, output: str | os.PathLike, options: EncodeOptions | None = None, *,
           video: str | os.PathLike | None = None, raw: str | os.PathLike | None = None,
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
    render_params(opts.render)  # validate early
    t0 = time.perf_counter()
    with open_source(input, video=video, raw=raw, fps=opts.fps) as src:
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
            audio = None
            wav = tdir / "audio.wav"
            if start == 0 and stop == src.frame_count and src.write_wav(wav):
                audio = {"codec": "flac", "source": "MLV WAVI/AUDF"}
            keylist = sorted(keys)
            manifest = build_manifest(src, opts, count, timestamps, numbers, keylist, attachments, audio)
            (tdir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
            files = [(tdir / MANIFEST_NAME, MIME_JSON)] + [(tdir / f"key_{k:06d}.dng", MIME_DNG) for k in keylist]
            mux(tdir / "video.mkv", tmp_out, files, audio=wav if audio else None,
                title=f"rawvid {src.path.name}")
    seconds = time.perf_counter() - t0
    return EncodeResult(output, count, seconds, RvdFile(output).sizes())


def read_rvd(path: str | os.PathLike) -> RvdFile:
    """Open and verify an .rvd file (manifest version and every attachment checksum)."""
    return RvdFile(path)

