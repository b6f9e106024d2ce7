"""rawvid bench end to end on tiny fixtures: JSON structure, keyframe handling, sweeps, plots, and
constructed cases where one method must win."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from conftest import assert_clean_error_text, make_info, make_mosaic, run_cli

from rawvid.bench import MethodSpec, run_bench, sweep, write_plots
from rawvid.dataset import RVDLayout, RVDWriter
from rawvid.errors import FormatError
from rawvid.isp import render

BASELINES = [MethodSpec("global-fit"), MethodSpec("warp")]


def write_rvd_split(root, clips: dict, info, tags=None):
    """An RVD-layout split whose sRGB is rendered from its RAW (stable mode), as the builder does."""
    w = RVDWriter(root, info)
    for name, mosaics in clips.items():
        w.add_video(name, ((m, render(m, info)) for m in mosaics), (tags or {}).get(name))
    return root


def static_frames(info, n, *, gain_of=lambda i: 1.0, highlights=False, seed=0):
    """A still scene with fresh sensor noise each frame, optional exposure changes and bright highlights."""
    rng = np.random.default_rng(seed)
    base = make_mosaic(info, seed=seed).astype(np.float64) - info.black
    if highlights:  # a bright patch: fine in RAW, clipped in the sRGB rendering
        base[16:48, 24:72] = 0.93 * (info.white - info.black)
    out = []
    for i in range(n):
        noisy = base * gain_of(i) + rng.normal(0, 6, base.shape)
        out.append(np.clip(np.round(noisy + info.black), 0, info.white).astype(np.uint16))
    return out


@pytest.fixture
def rvd_split(tmp_path):
    info = make_info(width=128, height=96)
    clips = {"pan": [make_mosaic(info, seed=1, shift=2 * i) for i in range(5)],
             "still": static_frames(info, 5, seed=2)}
    return write_rvd_split(tmp_path / "test", clips, info, tags={"pan": ["motion"], "still": ["static", "easy"]})


def test_rvd_layout_round_trip(rvd_split):
    lay = RVDLayout.open(rvd_split)
    assert [v.name for v in lay.videos] == ["pan", "still"] and len(lay.videos[0].frames) == 5
    assert (lay.info.width, lay.info.height, lay.info.black, lay.info.white) == (128, 96, 2048, 15000)
    assert lay.videos[1].tags == ["static", "easy"]
    assert lay.read_raw(lay.videos[0], lay.videos[0].frames[0]).dtype == np.uint16


def test_rvd_layout_refuses_path_tricks(tmp_path):
    (tmp_path / "RAW").mkdir()
    (tmp_path / "data.json").write_text(json.dumps([{"video_name": "../../etc", "frames": ["a"]}]))
    with pytest.raises(FormatError, match="unsafe name"):
        RVDLayout.open(tmp_path)


def test_bench_json_on_rvd_layout(rvd_split):
    res = run_bench([rvd_split], BASELINES, sweep(None, False, [0], ["stable"]))
    assert {r["setting"] for r in res["runs"]} == {"lossless kf-first given"}  # the paper's protocol
    assert len(res["runs"]) == 4 and {r["method"] for r in res["runs"]} == {"global-fit", "warp"}
    run = res["runs"][0]
    for key in ("psnr_paper", "psnr_black", "ssim", "last_frame", "per_frame", "rate", "speed", "tags"):
        assert key in run
    first = run["per_frame"][0]
    assert first["keyframe"] and first["psnr_black"] is None  # the exact keyframe is excluded, as in the paper
    assert run["scored_frames"] == 4 and all(f["psnr_black"] > 20 for f in run["per_frame"][1:])
    assert run["psnr_paper"] > run["psnr_black"]  # no black subtraction inflates PSNR
    assert 0 < run["ssim"] <= 1
    assert run["rate"]["bits_per_pixel"] > 0 and run["rate"]["ratio_vs_lj92_dng"] > 0
    assert run["speed"]["decode_fps"] > 0 and set(run["speed"]["decode_seconds_per_frame"]) >= {"video", "flow", "network", "dng"}
    assert set(res["tags"]) == {"motion", "static", "easy"}
    assert len(res["summary"]) == 2 and len(res["summary"][0]["psnr_black_by_frame"]) == 5
    at = res["summary"][0]["at_frames"]
    assert list(at) == ["1"] and at["1"]["psnr_paper"] > at["1"]["psnr_black"]  # a 5-frame clip has no frame 10
    json.dumps(res, allow_nan=False)  # strict JSON: no inf or nan anywhere


def test_sweep_gives_every_combination(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=4, width=96, height=64)
    settings = sweep([14, 30], True, [0, 2], ["stable", "rvd"])
    assert len(settings) == 12
    res = run_bench([path], [MethodSpec("global-fit")], sweep([14, 30], False, [0, 2], ["stable"]))
    assert {r["setting"] for r in res["runs"]} == {"h265-crf14 kf-first stable", "h265-crf30 kf-first stable",
                                                   "h265-crf14 kf2 stable", "h265-crf30 kf2 stable"}
    bpp = {r["setting"]: r["rate"]["bits_per_pixel"] for r in res["runs"]}
    assert bpp["h265-crf30 kf-first stable"] < bpp["h265-crf14 kf-first stable"] < bpp["h265-crf14 kf2 stable"]
    kf2 = next(r for r in res["runs"] if r["setting"] == "h265-crf14 kf2 stable")
    assert [f["keyframe"] for f in kf2["per_frame"]] == [True, False, True, False]


def test_refinement_sweep_on_rvd_layout(rvd_split):
    # both refinement modes survive the RVD-layout settings rewrite; the network row gains from blocks
    res = run_bench([rvd_split], [MethodSpec("network", "fagdn-default"), MethodSpec("global-fit")],
                    sweep(None, False, [0], ["stable"], refines=["off", "blocks"]))
    assert {(r["setting"], r["refine"]) for r in res["runs"]} == {("lossless kf-first given refine-off", "off"),
                                                                  ("lossless kf-first given refine-blocks", "blocks")}
    net = {r["refine"]: r for r in res["runs"] if r["method"].startswith("network") and r["clip"].endswith("pan")}
    gf = next(r for r in res["runs"] if r["method"] == "global-fit" and r["refine"] == "blocks"
              and r["clip"].endswith("pan"))
    assert net["blocks"]["rate"]["side_info_share"] > net["off"]["rate"]["side_info_share"]  # + calibration
    assert net["blocks"]["psnr_black"] >= gf["psnr_black"] - 0.01


def test_warp_wins_when_srgb_clips_highlights(tmp_path):
    # a still scene whose bright patch is clipped in sRGB: only the keyframe RAW knows it, and
    # warping carries it forward; a global map from sRGB cannot recover it
    info = make_info(width=96, height=64)
    root = write_rvd_split(tmp_path / "hl", {"hl": static_frames(info, 4, highlights=True)}, info)
    res = run_bench([root], BASELINES, sweep(None, False, [0], ["stable"]))
    score = {s["method"]: s["psnr_black"] for s in res["summary"]}
    assert score["warp"] > score["global-fit"] + 3, score


def test_global_fit_wins_when_exposure_changes(tmp_path):
    # a still scene whose exposure drops frame after frame: warping copies stale brightness,
    # the global map follows the sRGB
    info = make_info(width=96, height=64)
    frames = static_frames(info, 4, gain_of=lambda i: 0.8**i)
    root = write_rvd_split(tmp_path / "ex", {"ex": frames}, info)
    res = run_bench([root], BASELINES, sweep(None, False, [0], ["stable"]))
    score = {s["method"]: s["psnr_black"] for s in res["summary"]}
    assert score["global-fit"] > score["warp"] + 3, score


def test_plots_are_valid_pngs(rvd_split, mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    res = run_bench([path], [MethodSpec("global-fit")], sweep([16], True, [0], ["stable"]))
    files = write_plots(res, tmp_path / "plots")
    assert {p.name for p in files} == {"psnr_by_frame_h265-crf16_kf-first_stable.png",
                                       "psnr_by_frame_lossless_kf-first_stable.png", "rate_distortion.png"}
    for p in files:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 100 and img.std() > 5


def test_cli_bench(rvd_split, tmp_path):
    res = run_cli("bench", rvd_split, "--methods", "global-fit", "--json", tmp_path / "r.json",
                  "--plots", tmp_path / "plots", "--frames", ":3")
    assert res.returncode == 0, res.stderr
    assert "global-fit" in res.stdout and "PSNR black" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80  # fits an 80-column terminal; --wide for all
    wide = run_cli("bench", rvd_split, "--methods", "global-fit", "--frames", ":3", "--wide")
    assert wide.returncode == 0 and "x vs LJ92 DNG" in wide.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["versions"]["rawvid"] and data["runs"][0]["frames"] == 3
    assert math.isfinite(data["summary"][0]["psnr_black"])
    assert list((tmp_path / "plots").glob("*.png"))


def test_cli_bench_bad_input(tmp_path):
    res = run_cli("bench", tmp_path / "missing")
    assert res.returncode == 2 and "no such file" in res.stderr and "Traceback" not in res.stderr


def test_cli_bench_checks_its_outputs_and_frames_before_running(rvd_split, tmp_path):
    (tmp_path / "a_file").write_text("x")
    for args, words in ((("--json", tmp_path / "no" / "such" / "r.json"), ("--json", "does not exist")),
                        (("--json", tmp_path), ("--json", "folder, not a file")),
                        (("--plots", tmp_path / "a_file"), ("--plots", "a file, not a folder")),
                        (("--frames", "5:10"), ("starts at frame 0",)),
                        (("--frames", "9"), ("not START:END",))):
        res = run_cli("bench", rvd_split, "--methods", "global-fit", *args)
        assert_clean_error_text(res, *words)


def test_cli_bench_rd_runs_only_the_curves_asked_for(rvd_split, tmp_path):
    res = run_cli("bench", rvd_split, "--rd", "--curves", "lj92-dng,ffv1-bayer", "--frames", ":3",
                  "--json", tmp_path / "rd.json")
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "rd.json").read_text())
    assert {p["codec"] for p in data["points"]} == {"lj92-dng", "ffv1-bayer"}
    assert all(p["lossless"] and p["frames"] == 3 and p["bpp"] > 0 for p in data["points"])
    bad = run_cli("bench", rvd_split, "--rd", "--curves", "x266")
    assert_clean_error_text(bad, "unknown curve x266")


def test_cli_bench_rd_sweeps_the_papers_mode_over_keyframe_intervals(rvd_split, tmp_path):
    res = run_cli("bench", rvd_split, "--rd", "--curves", "rawvid-paper", "--crf", "32", "--keyframe-interval", "0,2",
                  "--frames", ":3", "--json", tmp_path / "rd.json")
    assert res.returncode == 0, res.stderr
    pts = {p["codec"]: p for p in json.loads((tmp_path / "rd.json").read_text())["points"]}
    assert set(pts) == {"rawvid-paper", "rawvid-paper-kfi2"}
    # a second lossless DNG keyframe (frame 2): more RAW bytes, and that frame exact
    assert pts["rawvid-paper-kfi2"]["bpp_raw"] > 1.5 * pts["rawvid-paper"]["bpp_raw"]
    assert pts["rawvid-paper-kfi2"]["extra"]["frame_psnr_black"][2] is None  # lossless: no finite PSNR
