"""Fixtures: small synthetic MLV and DNG files written with real writers, and ../shared/data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rawvid.meta import Camera, RawInfo
from rawvid.mlv import AudioFormat, MLVWriter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EXAMPLE = ROOT / "examples" / "colorchart_pan.MLV"

MATRIX_5D3 = (0.6722, -0.0635, -0.0963, -0.4287, 1.2460, 0.2028, -0.0908, 0.2162, 0.5668)


def shared(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


def make_info(width: int = 96, height: int = 64, bits: int = 14, cfa: str = "RGGB", fps: float = 25.0) -> RawInfo:
    black = {10: 64, 12: 256, 14: 2048, 16: 4096}[bits]
    white = {10: 1000, 12: 3900, 14: 15000, 16: 60000}[bits]
    return RawInfo(width=width, height=height, bits=bits, black=black, white=white, cfa=cfa,
                   color_matrix=MATRIX_5D3, fps=fps,
                   camera=Camera(make="Canon", model="Canon EOS 5D Mark III", iso=400, shutter_us=20000))


def make_mosaic(info: RawInfo, seed: int = 0, shift: int = 0, gain: float = 1.0) -> np.ndarray:
    """A plausible Bayer frame: smooth coloured gradients and shapes, plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    h, w = info.height, info.width
    y, x = np.mgrid[:h, :w].astype(np.float64)
    x = x + shift
    base = 0.25 + 0.2 * np.sin(x / 17.0) * np.cos(y / 23.0) + 0.3 * ((x // 24 + y // 24) % 2)
    span = info.white - info.black
    level = info.black + span * np.clip(base * gain, 0, 1) * 0.8
    level += rng.normal(0, span * 0.004, size=(h, w))
    return np.clip(np.round(level), 0, (1 << info.bits) - 1).astype(np.uint16)


def write_mlv(path: Path, info: RawInfo, n: int = 4, *, lj92: bool = False, frame_space: int = 0,
              chunk_frames: int | None = None, order: list[int] | None = None,
              audio: bool = False, gains: list[float] | None = None) -> list[np.ndarray]:
    """Write a synthetic MLV; returns the mosaics in frame-number order. ``gains``: each frame's exposure."""
    mosaics = [make_mosaic(info, seed=i, shift=2 * i, gain=1.0 if gains is None else gains[i]) for i in range(n)]
    fmt = AudioFormat(channels=2, rate=48000, bytes_per_second=192000, block_align=4, bits=16) if audio else None
    with MLVWriter(path, info, lj92=lj92, frame_space=frame_space, chunk_frames=chunk_frames, audio=fmt) as w:
        for k, i in enumerate(order or range(n)):
            w.write_frame(mosaics[i], number=i)
            if audio:
                t = np.arange(48000 // int(info.fps)) + k * (48000 // int(info.fps))
                tone = (8000 * np.sin(2 * np.pi * 440 * t / 48000)).astype("<i2")
                w.write_audio(np.repeat(tone, 2).tobytes(), number=k)
    return mosaics


@pytest.fixture
def mlv_factory(tmp_path):
    def make(name: str = "clip.MLV", **kw):
        info = kw.pop("info", None) or make_info(**{k: kw.pop(k) for k in ("width", "height", "bits", "cfa", "fps") if k in kw})
        path = tmp_path / name
        return path, info, write_mlv(path, info, **kw)

    return make


@pytest.fixture
def camera_pair(mlv_factory, tmp_path):
    """A camera's own sRGB video (lossless, 2 frames of 64x48) and the DNG of its first frame."""
    from rawvid.dng import write_dng
    from rawvid.isp import render
    from rawvid.video import VideoSettings, VideoWriter

    _, info, mosaics = mlv_factory(n=2, width=64, height=48)
    with VideoWriter(tmp_path / "cam.mkv", 64, 48, 25.0, VideoSettings.make(lossless=True)) as w:
        for m in mosaics:
            w.write(render(m, info))
    write_dng(tmp_path / "f.dng", mosaics[0], info)
    return tmp_path / "cam.mkv", tmp_path / "f.dng"


@pytest.fixture
def tiny_model(tmp_path):
    """An untrained tiny FAGDN saved as safetensors (a model other than the shipped one)."""
    import torch

    from rawvid.model import CONFIGS, FAGDN, save_model

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_model(FAGDN(CONFIGS["tiny"]), path)
    return str(path)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``rawvid`` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "rawvid", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def assert_clean_error_text(res: subprocess.CompletedProcess, *fragments: str) -> None:
    """A bad-input run: exit code 2, one error line naming the problem, no traceback."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert sum("error:" in ln for ln in res.stderr.splitlines()) == 1, res.stderr
    joined = " ".join(res.stderr.split())
    for frag in fragments:
        assert frag in joined, (frag, res.stderr)


def with_manifest_text(src: Path, dst: Path, text: bytes) -> Path:
    """A copy of an .rvd with its manifest's JSON replaced (on purpose: tests of edited files).

    In place when the new manifest fits (rawvid.container.replace_manifest); otherwise the file
    is muxed again from its tracks (stream copy, so every packet and its CRC-32 is kept) and its
    attachments, the manifest stored as the encoder stores it."""
    from rawvid.container import MANIFEST_NAME, MANIFEST_Z_NAME, MIME_ZLIB, RvdFile, mux, pack_manifest, \
        replace_manifest
    from rawvid.video import ffmpeg_exe

    data = src.read_bytes()
    out = replace_manifest(data, text)
    if out is not None:
        dst.write_bytes(out)
        return dst
    rvd = RvdFile(src, verify=False)
    parts = dst.parent / f"{dst.stem}-parts"
    parts.mkdir(exist_ok=True)
    atts = [(parts / MANIFEST_Z_NAME, MIME_ZLIB)]
    atts[0][0].write_bytes(pack_manifest(text))
    for a in rvd.layout.attachments:
        if a.name not in (MANIFEST_NAME, MANIFEST_Z_NAME):
            (parts / a.name).write_bytes(data[a.offset: a.offset + a.size])
            atts.append((parts / a.name, a.mime))
    kinds = sorted(rvd.layout.track_types.values())
    streams = {"v.mkv": "0:v:0", **({"l.mkv": "0:v:1"} if kinds.count(1) > 1 else {}),
               **({"a.mka": "0:a:0"} if 2 in kinds else {})}
    for name, spec in streams.items():
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-map", spec, "-c", "copy",
                        str(parts / name)], check=True)
    mux(parts / "v.mkv", dst, atts, audio=parts / "a.mka" if "a.mka" in streams else None,
        layer=parts / "l.mkv" if "l.mkv" in streams else None)
    return dst
