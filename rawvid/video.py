"""sRGB video through the ffmpeg bundled with imageio-ffmpeg: encode RGB frames, decode them back.

Frames travel as raw rgb24 over pipes, one at a time. The RGB <-> YUV conversion is
explicit on both sides (BT.709 matrix, full range, accurate rounding, full chroma
interpolation) so that what the decoder sees is what the encoder meant; FFV1
(``lossless``) stores RGB itself and is exact.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import FormatError, RawvidError

SWS_FLAGS = "accurate_rnd+full_chroma_int+bitexact"
CODECS = ("h265", "h264", "ffv1")
#: chroma subsampling of the lossy sRGB track -> pixel format
CHROMA = {"444": "yuv444p", "420": "yuv420p"}
#: the sRGB CRF of the paper's mode, and of a stream written with no CRF given outside an encode
DEFAULT_CRF = 16


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg (imageio-ffmpeg), or $RAWVID_FFMPEG."""
    env = os.environ.get("RAWVID_FFMPEG")
    if env:
        return env
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True).stdout
    m = re.match(r"ffmpeg version (\S+)", out)
    return m.group(1) if m else "unknown"


def fps_fraction(fps: float) -> Fraction:
    """A frame rate as an exact fraction (59.94 -> 60000/1001, 25 -> 25)."""
    for den in (1, 1001):
        num = round(fps * den)
        if num and abs(num / den - fps) < 1e-3 * max(1.0, fps) / 100:
            return Fraction(num, den)
    return Fraction(fps).limit_denominator(100000)


@dataclass
class VideoSettings:
    """How the sRGB stream is encoded (recorded in the .rvd manifest)."""

    codec: str = "h265"  # h265 | h264 | ffv1
    #: None: the encode's mode chooses (rawvid.encoder.resolve_video: 16 in the paper's mode, chosen by
    #: the encoder with --target-psnr, 32 with the other RAW layers); a stream written outside an encode: 16
    crf: int | None = None
    preset: str = "medium"
    pix_fmt: str = "yuv444p"

    @classmethod
    def make(cls, codec: str = "h265", crf: int | None = None, lossless: bool = False,
             preset: str | None = None, chroma: str = "444") -> "VideoSettings":
        if lossless:
            return cls(codec="ffv1", crf=0, preset="", pix_fmt="bgr0")
        if codec not in ("h265", "h264"):
            raise ValueError(f"unknown video codec {codec!r} (choose h265, h264, or --lossless)")
        if chroma not in CHROMA:
            raise ValueError(f"unknown chroma subsampling {chroma!r} (444 or 420)")
        return cls(codec=codec, crf=None if crf is None else int(crf), preset=preset or "medium",
                   pix_fmt=CHROMA[chroma])

    @property
    def lossless(self) -> bool:
        return self.codec == "ffv1"

    @property
    def crf_or_default(self) -> int:
        return DEFAULT_CRF if self.crf is None else self.crf

    def output_args(self) -> list[str]:
        """ffmpeg output options for this setting."""
        if self.codec == "ffv1":
            return ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "4", "-slicecrc", "1",
                    "-pix_fmt", "bgr0"]
        tags = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "iec61966-2-1",
                "-color_range", "pc"]
        vf = ["-vf", f"scale=out_color_matrix=bt709:out_range=full:flags={SWS_FLAGS}"]
        # the colour description also in the bitstream's VUI: this ffmpeg build does not pass
        # -color_primaries/-color_trc to the encoders, and players read the VUI. No x265 version
        # SEI (info=0): its settings string is 2.3 KB in the first frame, and the manifest has them
        if self.codec == "h265":
            codec = ["-c:v", "libx265", "-preset", self.preset, "-crf", str(self.crf_or_default), "-x265-params",
                     "log-level=error:info=0:colorprim=bt709:transfer=iec61966-2-1:colormatrix=bt709:range=full"]
        else:
            codec = ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf_or_default), "-x264-params",
                     "colorprim=bt709:transfer=iec61966-2-1:colormatrix=bt709:fullrange=on"]
        return vf + codec + ["-pix_fmt", self.pix_fmt] + tags

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lossless"] = self.lossless
        d["color"] = "rgb (exact)" if self.lossless else "bt709 matrix, full range, sRGB transfer"
        return d


def _fail(path: str | os.PathLike, stderr: bytes, what: str) -> RawvidError:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return FormatError(path, f"{what}: {lines[-1].strip() if lines else 'ffmpeg failed'}")


class VideoWriter:
    """Pipe RGB frames (H x W x 3, uint8) into ffmpeg, writing a Matroska video file."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float,
                 settings: VideoSettings | None = None):
        self.path, self.width, self.height = Path(path), width, height
        self.settings = settings or VideoSettings()
        rate = fps_fraction(fps)
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
               "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{rate.numerator}/{rate.denominator}",
               "-i", "-", "-an", *self.settings.output_args(), "-f", "matroska", os.fspath(self.path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"frame {rgb.shape} {rgb.dtype} is not {self.height}x{self.width}x3 uint8")
        try:
            self._proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        except BrokenPipeError:
            self._proc.wait()
            raise _fail(self.path, self._proc.stderr.read(), "video encoder stopped") from None
        self.frames += 1

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        err = self._proc.stderr.read()
        self._proc.stderr.close()
        if self._proc.wait() != 0:
            raise _fail(self.path, err, "video encoding failed")

    def abort(self) -> None:
        self._proc.kill()
        self._proc.wait()
        for s in (self._proc.stdin, self._proc.stderr):
            if s and not s.closed:
                try:
                    s.close()
                except BrokenPipeError:
                    pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    codec: str


def probe(path: str | os.PathLike) -> VideoInfo:
    """Geometry, frame rate and codec of the first video stream (parsed from ffmpeg's banner)."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(p, "no such file")
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", os.fspath(p)], capture_output=True)
    text = res.stderr.decode("utf-8", "replace")
    m = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})", text)
    if not m:
        raise FormatError(p, "unreadable video (no video stream ffmpeg can decode)")
    fps_m = re.search(r"([\d.]+) (?:fps|tbr)", text[m.end():])
    fps = float(fps_m.group(1)) if fps_m else 25.0
    return VideoInfo(int(m.group(2)), int(m.group(3)), fps, m.group(1))


class VideoReader:
    """Decode the first video stream of a file to RGB frames (H x W x 3 uint8), one at a time."""

    def __init__(self, path: str | os.PathLike, width: int, height: int):
        self.path, self.width, self.height = Path(path), width, height
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", os.fspath(self.path),
               "-map", "0:v:0", "-vf", f"scale=in_color_matrix=bt709:in_range=full:flags={SWS_FLAGS}",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def __iter__(self) -> Iterator[np.ndarray]:
        n = self.width * self.height * 3
        while True:
            buf = self._proc.stdout.read(n)
            if len(buf) < n:
                break
            yield np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)
        err = self._proc.stderr.read()
        if self._proc.wait() != 0:
            raise _fail(self.path, err, "video decoding failed")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for s in (self._proc.stdout, self._proc.stderr):
            if s:
                s.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def count_frames(path: str | os.PathLike) -> int:
    """Frames in the first video stream, counted from packets (stream copy, no decoding)."""
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostats", "-i", os.fspath(path), "-map", "0:v:0",
                          "-c", "copy", "-f", "null", "-", "-progress", "pipe:1"], capture_output=True)
    counts = re.findall(rb"^frame=(\d+)", res.stdout, flags=re.M)
    if res.returncode != 0 or not counts:
        raise _fail(path, res.stderr, "unreadable video")
    return int(counts[-1])


def read_frames(path: str | os.PathLike, width: int | None = None, height: int | None = None) -> Iterator[np.ndarray]:
    """Iterate the RGB frames of a video file (geometry probed when not given)."""
    if width is None or height is None:
        vi = probe(path)
        width, height = vi.width, vi.height
    with VideoReader(path, width, height) as reader:
        yield from reader
