"""Per-frame and adaptive calibration: stored by the encoder, used by the decoder, ``auto`` where it pays."""
from __future__ import annotations

import copy

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


def test_auto_is_adaptive(mlv_factory, tmp_path):
    """``auto`` stores a frame's own map only where it beats the map in force: none on a still shot
    (the file as before: keyframe calibration, format 4), some with rvd rendering (format 5)."""
    from conftest import make_info, make_mosaic

    from rawvid.mlv import MLVWriter

    info = make_info()
    with MLVWriter(tmp_path / "still.MLV", info) as w:  # a still shot: every frame's own map is the keyframe's
        for i in range(3):
            w.write_frame(make_mosaic(info), number=i)
    weights = "weights"  # block refinement without gains, which would make every file format 5
    still = RvdFile(encode(tmp_path / "still.MLV", tmp_path / "s.rvd", EncodeOptions(refine=weights)).output)
    assert still.manifest["calibration"] == {"mode": "keyframe"} and still.manifest["format_version"] == 4
    path, _, _ = mlv_factory(n=4, width=96, height=64)
    rvd = RvdFile(encode(path, tmp_path / "r.rvd", EncodeOptions(render="rvd", refine=weights)).output)
    cal = rvd.manifest["calibration"]
    assert cal["mode"] == "adaptive" and rvd.manifest["format_version"] == 5 and cal["frames"] == 4
    assert cal["changes"] and all(0 < i < 4 for i in cal["changes"])
    assert len(rvd.attachment("calibration.f16")) == 230 * len(cal["changes"])
    every = RvdFile(encode(path, tmp_path / "e.rvd", EncodeOptions(render="rvd", calibration="per-frame",
                                                                   refine=weights)).output)
    assert every.manifest["calibration"] == {"mode": "per-frame", "file": "calibration.f16", "frames": 4,
                                             "values_per_frame": 115, "knots": 33, "dtype": "float16-le"}
    assert len(every.attachment("calibration.f16")) == 4 * 230 and every.manifest["format_version"] == 4
    paper = RvdFile(encode(path, tmp_path / "p.rvd", EncodeOptions(render="rvd", calibration="keyframe")).output)
    assert paper.manifest["calibration"]["mode"] == "keyframe"  # the paper's mode stays available


def test_adaptive_manifest_is_checked(mlv_factory, tmp_path):
    from conftest import with_manifest_text

    from rawvid.checksums import sealed_json

    path, _, _ = mlv_factory(n=4, width=96, height=64)
    rvd = encode(path, tmp_path / "r.rvd", EncodeOptions(render="rvd", refine="weights")).output
    good = RvdFile(rvd).manifest
    for change, message in ((lambda m: m["calibration"].update(changes=[2, 1]), "calibration.changes"),
                            (lambda m: m["calibration"].update(changes=[9]), "calibration.changes"),
                            (lambda m: m["calibration"].update(changes="1"), "calibration.changes"),
                            (lambda m: m.update(format_version=4), "adaptive needs format version 5"),
                            (lambda m: m["calibration"].update(mode="wobbly"), "calibration.mode")):
        bad = copy.deepcopy(good)
        change(bad)
        with_manifest_text(rvd, tmp_path / "bad.rvd", sealed_json(bad))
        with pytest.raises(RawvidError, match=message):
            decode(tmp_path / "bad.rvd", tmp_path / "out")
    bad = copy.deepcopy(good)  # a change more than the attachment holds
    bad["calibration"]["changes"] = sorted(set(bad["calibration"]["changes"]) | {1, 2, 3})
    if bad["calibration"]["changes"] != good["calibration"]["changes"]:
        with_manifest_text(rvd, tmp_path / "bad.rvd", sealed_json(bad))
        with pytest.raises(RawvidError, match="calibration attachment does not match"):
            decode(tmp_path / "bad.rvd", tmp_path / "out")


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
    for cal in ("keyframe", "per-frame", "adaptive"):
        rvd = encode(EXAMPLE, tmp_path / f"{cal}.rvd", EncodeOptions(render="rvd", calibration=cal)).output
        decode(rvd, tmp_path / cal, DecodeOptions(method="global-fit"))
        scores[cal] = np.mean([psnr_black(read_dng(tmp_path / cal / f"colorchart_pan_{i:06d}.dng")[0], t, info.cfa, info.black,
                                          info.white) for i, t in enumerate(truth, start=1)])
    assert scores["per-frame"] > scores["keyframe"] + 3, scores
    assert scores["adaptive"] > scores["per-frame"] - 0.3, scores  # nearly every frame stores its map
