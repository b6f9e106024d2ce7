"""Encoder inputs behind one interface: an MLV clip, a folder of DNG frames, or an sRGB video plus one DNG."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .dataset import RVDLayout, RVDVideo
from .dng import DNGSequence, read_dng
from .errors import FormatError, RawvidError
from .meta import RawInfo
from .mlv import MLVReader
from .video import count_frames, probe, read_frames


@dataclass
class SourceFrame:
    """One frame of input: its RAW mosaic (None where the source has no RAW) and/or its sRGB."""

    index: int
    number: int
    timestamp_us: int
    mosaic: np.ndarray | None = None
    rgb: np.ndarray | None = None


FrameIter = Callable[[int, int], Iterator[SourceFrame]]


@dataclass
class Source:
    """What encode needs from any input: metadata and frames one at a time."""

    kind: str  # "mlv" | "dng-sequence" | "video+dng" | "rvd-layout"
    path: Path
    info: RawInfo
    frame_count: int
    size_bytes: int
    iterate: FrameIter
    has_raw: bool = True  # RAW for every frame (False: only frame 0, from --raw)
    warnings: list[str] = field(default_factory=list)
    reader: object = None

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[SourceFrame]:
        stop = self.frame_count if stop is None else min(stop, self.frame_count)
        return self.iterate(max(0, start), stop)

    def write_wav(self, path: str | os.PathLike) -> bool:
        return isinstance(self.reader, MLVReader) and self.reader.write_wav(path)

    def close(self) -> None:
        if isinstance(self.reader, MLVReader):
            self.reader.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _raw_frames(reader) -> FrameIter:
    def it(start: int, stop: int) -> Iterator[SourceFrame]:
        for fr in reader.frames(start, stop):
            yield SourceFrame(fr.index, fr.number, fr.timestamp_us, fr.mosaic)
    return it


def rvd_video_source(layout: RVDLayout, video: RVDVideo) -> Source:
    """One clip of an RVD-layout split: its RAW frames with the sRGB frames the split gives."""
    info = layout.video_info(video)

    def it(start: int, stop: int) -> Iterator[SourceFrame]:
        for i in range(start, stop):
            name = video.frames[i]
            yield SourceFrame(i, i, int(round(i * 1e6 / info.fps)), layout.read_raw(video, name),
                              layout.read_srgb(video, name))

    return Source("rvd-layout", layout.root / "RAW" / video.name, info, len(video.frames),
                  layout.size_bytes(video), it)


def open_source(input: str | os.PathLike | None = None, *, video: str | os.PathLike | None = None,
                raw: str | os.PathLike | None = None, fps: float | None = None) -> Source:
    """Open an MLV file, a DNG folder, or (``video`` + ``raw``) a camera's sRGB video and one RAW frame."""
    if video is not None or raw is not None:
        if video is None or raw is None:
            raise RawvidError(video or raw, "--video and --raw go together (an sRGB video plus its first RAW frame)")
        if input is not None:
            raise RawvidError(input, "give either an input clip or --video/--raw, not both")
        video, raw = Path(video), Path(raw)
        mosaic, info = read_dng(raw)
        vi = probe(video)
        if (vi.width, vi.height) != (info.width, info.height):
            raise RawvidError(video, f"video is {vi.width}x{vi.height} but the RAW frame {raw.name} is "
                              f"{info.width}x{info.height}: they must have the same geometry")
        info.fps = fps or vi.fps
        count = count_frames(video)
        if count == 0:
            raise FormatError(video, "unreadable video (no frames decoded)")
        fps_info = info

        def it(start: int, stop: int) -> Iterator[SourceFrame]:
            for i, rgb in enumerate(read_frames(video, fps_info.width, fps_info.height)):
                if i >= stop:
                    break
                if i >= start:
                    yield SourceFrame(i, i, int(round(i * 1e6 / fps_info.fps)), mosaic if i == 0 else None, rgb)

        return Source("video+dng", video, info, count, video.stat().st_size + raw.stat().st_size, it,
                      has_raw=False)
    if input is None:
        raise RawvidError(None, "no input: give an MLV file, a folder of DNG frames, or --video and --raw")
    p = Path(input)
    if p.is_dir():
        seq = DNGSequence.open(p, fps=fps)
        return Source("dng-sequence", p, seq.info, len(seq), seq.size_bytes, _raw_frames(seq))
    if not p.exists():
        raise FormatError(p, "no such file or folder")
    if p.suffix.lower() == ".dng":
        seq = DNGSequence(p.parent, [p], read_dng(p)[1])
        if fps:
            seq.info.fps = fps
        return Source("dng-sequence", p, seq.info, 1, p.stat().st_size, _raw_frames(seq))
    reader = MLVReader(p)
    if fps:
        reader.info.fps = fps
    return Source("mlv", p, reader.info, len(reader), reader.size_bytes, _raw_frames(reader),
                  warnings=list(reader.warnings), reader=reader)
