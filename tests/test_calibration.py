"""Per-frame calibration: stored by the encoder, used by the decoder, chosen by ``auto`` where it pays."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLE

from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode
from rawvid.container import RvdFile
from rawvid.dng import read_dng
from rawvid.errors import RawvidError
from rawvid.methods import GlobalMap, fit_global_map
from rawvid.metrics import psnr_black
from rawvid.mlv import MLVReader


def test_global_map_serialises():
    rng = np.random.default_rng(0)
    srgb = rng.random((3, 20, 30)).astype(np.float32)
    raw = np.stack([srgb[0] ** 2.2, srgb[1] ** 2.2, srgb[1] ** 2.2, srgb[2] ** 2.2]) * 0.8
    gmap = fit_global_map(srgb, raw)
    back = GlobalMap.from_list(gmap.to_list())
    assert np.allclose(back.apply(srgb), gmap.apply(srgb))
    assert len(gmap.to_list()) == 115  # 230 bytes a frame in float16
    with pytest.raises(ValueError):
        GlobalMap.from_list([0.0] * 10)


def test_auto_picks_per_frame_for_rvd_rendering(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    stable = RvdFile(encode(path, tmp_path / "s.rvd").output)
    rvd = RvdFile(encode(path, tmp_path / "r.rvd", EncodeOptions(render="rvd")).output)
    assert stable.manifest["calibration"]["mode"] == "keyframe"
    assert rvd.manifest["calibration"] == {"mode": "per-frame", "file": "calibration.f16", "frames": 3,
                                           "values_per_frame": 115, "knots": 33, "dtype": "float16-le"}
    assert len(rvd.attachment("calibration.f16")) == 3 * 230
    paper = RvdFile(encode(path, tmp_path / "p.rvd", EncodeOptions(render="rvd", calibration="keyframe")).output)
    assert paper.manifest["calibration"]["mode"] == "keyframe"  # the paper's mode stays available


def test_per_frame_needs_raw_for_every_frame(camera_pair, tmp_path):
    video, dng = camera_pair
    with pytest.raises(RawvidError, match="needs the RAW of every frame"):
        encode(None, tmp_path / "v.rvd", EncodeOptions(calibration="per-frame"), video=video, raw=dng)
    auto = encode(None, tmp_path / "a.rvd", video=video, raw=dng).output
    assert RvdFile(auto).manifest["calibration"]["mode"] == "keyframe"


def test_per_frame_calibration_pays_with_rvd_rendering(tmp_path):
    # LibRaw's default rendering renormalises every frame: a keyframe map goes stale, per-frame maps do not
    scores = {}
    with MLVReader(EXAMPLE) as clip:
        info = clip.info
        truth = [clip.read(i) for i in range(1, len(clip))]
    for cal in ("keyframe", "per-frame"):
        rvd = encode(EXAMPLE, tmp_path / f"{cal}.rvd", EncodeOptions(render="rvd", calibration=cal)).output
        decode(rvd, tmp_path / cal, DecodeOptions(method="global-fit"))
        scores[cal] = np.mean([psnr_black(read_dng(tmp_path / cal / f"colorchart_pan_{i:06d}.dng")[0], t, info.cfa, info.black,
                                          info.white) for i, t in enumerate(truth, start=1)])
    assert scores["per-frame"] > scores["keyframe"] + 3, scores
