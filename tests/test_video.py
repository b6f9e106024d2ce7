"""sRGB video through the bundled ffmpeg: lossless is exact, lossy is close, geometry is kept."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_info, make_mosaic

from rawvid.errors import FormatError
from rawvid.isp import render
from rawvid.video import VideoSettings, VideoWriter, count_frames, fps_fraction, probe, read_frames


def _frames(n=5, width=200, height=126):
    info = make_info(width=width, height=height)
    return [render(make_mosaic(info, seed=i, shift=4 * i), info) for i in range(n)]


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255**2 / mse) if mse else np.inf


def _round_trip(tmp_path, settings, frames, fps=25.0):
    path = tmp_path / "v.mkv"
    with VideoWriter(path, frames[0].shape[1], frames[0].shape[0], fps, settings) as w:
        for f in frames:
            w.write(f)
    return path, list(read_frames(path))


def test_lossless_ffv1_is_exact(tmp_path):
    frames = _frames()
    path, back = _round_trip(tmp_path, VideoSettings.make(lossless=True), frames)
    assert len(back) == len(frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, back))
    assert probe(path).codec == "ffv1"


@pytest.mark.parametrize("codec", ["h265", "h264"])
def test_lossy_is_close_and_keeps_geometry(tmp_path, codec):
    frames = _frames()
    path, back = _round_trip(tmp_path, VideoSettings.make(codec, crf=16), frames)
    assert len(back) == len(frames) and back[0].shape == frames[0].shape  # 126 rows, not padded
    assert min(_psnr(a, b) for a, b in zip(frames, back)) > 35
    assert probe(path).codec == {"h265": "hevc", "h264": "h264"}[codec]
    assert count_frames(path) == len(frames)
    if codec == "h265":  # no x265 version SEI: 2.3 KB of settings text the manifest already records
        assert b"x265 (build" not in path.read_bytes()


def test_colour_is_not_shifted(tmp_path):
    # a flat colour must come back as itself (wrong YUV matrix or range would shift it)
    frames = [np.full((64, 64, 3), (200, 90, 30), np.uint8)] * 3
    _, back = _round_trip(tmp_path, VideoSettings.make("h265", crf=10), frames)
    assert np.abs(back[1].reshape(-1, 3).mean(0) - (200, 90, 30)).max() < 1.5


def test_fps_fraction():
    assert fps_fraction(59.94) == pytest.approx(60000 / 1001)
    assert fps_fraction(59.94).denominator == 1001
    assert fps_fraction(25.0) == 25


def test_unreadable_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(FormatError, match="unreadable video"):
        probe(bad)
    with pytest.raises(FormatError, match="unreadable video"):
        count_frames(bad)


@pytest.mark.parametrize("codec", ["h265", "h264"])
def test_srgb_track_is_tagged_bt709_srgb_in_bitstream_and_container(tmp_path, codec):
    import av

    from rawvid.container import mux

    with VideoWriter(tmp_path / "v.mkv", 200, 126, 25, VideoSettings.make(codec, 20)) as w:
        for f in _frames(3):
            w.write(f)
    mux(tmp_path / "v.mkv", tmp_path / "c.rvd", [])
    for path in (tmp_path / "v.mkv", tmp_path / "c.rvd"):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            frame = next(c.decode(s))  # what the bitstream's VUI says
            assert (frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range) == (1, 13, 1, 2)
    with av.open(str(tmp_path / "c.rvd")) as c:  # what the container says, before any decoding
        cp = c.streams.video[0].codec_context
        assert (cp.color_primaries, cp.color_trc) == (1, 13)  # BT.709 primaries, sRGB (IEC 61966-2-1)
