"""rawvid dataset build: synthetic clips over real stills, in the RVD layout, split by scene, deterministic."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import EXAMPLE, SHARED, make_info, make_mosaic, run_cli

from rawvid.dataset import RVDLayout, build_dataset, split_groups
from rawvid.mlv import MLVReader
from rawvid.scenes import Scene, Sensor, load_shared_scenes, quads_to_rgb, remosaic
from rawvid.synth import draw_spec, expose, linear_frames


def example_scenes() -> list[Scene]:
    """Real sensor data from the shipped example (550D), cut into three separate scenes."""
    with MLVReader(EXAMPLE) as clip:
        m, info = clip.read(0), clip.info
    rgb = quads_to_rgb(m, info.cfa, info.black, info.white)
    sensor = Sensor(bits=14, black=info.black, white=info.white, color_matrix=info.color_matrix)
    h, w = rgb.shape[:2]
    return [Scene(f"part{i}", np.ascontiguousarray(rgb[:, i * w // 3 : (i + 1) * w // 3]), sensor) for i in range(3)]


def test_quads_and_remosaic_round_trip():
    info = make_info(cfa="GRBG")
    m = make_mosaic(info)
    rgb = quads_to_rgb(m, "GRBG", info.black, info.white)
    assert rgb.shape == (32, 48, 3) and rgb.min() >= 0
    back = remosaic(rgb, "GRBG") * (info.white - info.black) + info.black
    from rawvid.bayer import pack

    planes_true, planes_back = pack(m, "GRBG").astype(float), pack(back, "GRBG")
    assert np.allclose(planes_back[0], planes_true[0], atol=0.01)  # R is kept exactly
    assert np.allclose(planes_back[3], planes_true[3], atol=0.01)  # B too
    assert np.allclose(planes_back[1], planes_back[2])  # both greens from the quad's mean green


def test_noise_is_shot_plus_read_and_clips_at_white():
    s = Scene("flat", np.zeros((32, 32, 3), np.float32), Sensor(bits=12, black=256, white=4095, full_well=5000))
    rng = np.random.default_rng(0)
    dark = expose(np.full((32, 32, 3), 0.05, np.float32), s, rng).astype(float)
    bright = expose(np.full((32, 32, 3), 0.6, np.float32), s, rng).astype(float)
    assert bright.std() > 2 * dark.std()  # shot noise grows with the signal
    assert expose(np.full((8, 8, 3), 3.0, np.float32), s, rng).max() == 4095  # clipped at white


def test_camera_path_moves_smoothly():
    scene = example_scenes()[0]
    rng = np.random.default_rng(3)
    spec = draw_spec(scene, rng, 8, 64, 96, hard=False)
    frames = list(linear_frames(scene, spec, np.random.default_rng(4)))
    assert len(frames) == 8 and frames[0].shape == (64, 96, 3)
    diffs = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
    assert 0 < max(diffs) < 0.2  # consecutive frames differ, but are the same scene


def test_build_splits_by_scene_and_is_deterministic(tmp_path):
    scenes = example_scenes()
    kw = dict(seed=7, frames=4, test_frames=5, size=(128, 96), clips_per_scene=1, test_fraction=0.34)
    rep = build_dataset(tmp_path / "a", scenes, **kw)
    build_dataset(tmp_path / "b", scenes, **kw)
    assert len(rep.test_scenes) == 1 and not set(rep.test_scenes) & set(rep.train_scenes)
    for render in ("stable", "rvd"):
        for split in ("train", "test"):
            lay = RVDLayout.open(tmp_path / "a" / render / split)
            for v in lay.videos:
                scene = v.name.rsplit("_", 1)[0]
                assert (scene in rep.test_scenes) == (split == "test")
                assert len(v.frames) == (5 if split == "test" else 4)
                info = lay.video_info(v)
                assert (info.width, info.height, info.bits, info.black) == (128, 96, 14, 2056)
                raw = lay.read_raw(v, v.frames[0])
                assert raw.max() <= info.white
    a = tmp_path / "a" / "stable" / "test"
    b = tmp_path / "b" / "stable" / "test"
    name = json.loads((a / "data.json").read_text())[0]["video_name"]
    assert (a / "RAW" / name / "00000.tiff").read_bytes() == (b / "RAW" / name / "00000.tiff").read_bytes()
    assert (a / "sRGB" / name / "00003.png").read_bytes() == (b / "sRGB" / name / "00003.png").read_bytes()
    # one RAW for both render modes (hard link), two different sRGB renderings
    ra, rb = a / "RAW" / name / "00000.tiff", tmp_path / "a" / "rvd" / "test" / "RAW" / name / "00000.tiff"
    assert os.stat(ra).st_ino == os.stat(rb).st_ino
    assert (a / "sRGB" / name / "00000.png").read_bytes() != (tmp_path / "a" / "rvd" / "test" / "sRGB" / name / "00000.png").read_bytes()


def test_split_groups():
    train, test = split_groups([f"s{i}" for i in range(8)], seed=1, test_fraction=0.25)
    assert len(test) == 2 and len(train) == 6 and not set(train) & set(test)
    assert split_groups([f"s{i}" for i in range(8)], seed=1, test_fraction=0.25) == (train, test)


def test_shared_scenes_load():
    if not SHARED.is_dir():
        pytest.skip("../shared/data not available")
    scenes = {s.name: s for s in load_shared_scenes(SHARED)}
    assert "canon550d_colorchart" in scenes and scenes["canon550d_colorchart"].sensor.cfa == "RGGB"
    isp = [s for n, s in scenes.items() if n.startswith("infiniteisp_")]
    assert isp and all(s.sensor.cfa == "GRBG" for s in isp)
    if "tcl_bracket" in scenes:
        b = scenes["tcl_bracket"]
        assert len(b.exposures) == 8 and b.exposures[0].mean() < b.exposures[-1].mean()
    assert all(s.rgb.ndim == 3 and s.rgb.dtype == np.float32 for s in scenes.values())


@pytest.fixture
def two_stills(tmp_path) -> list:
    """``--shared`` (a folder that does not exist) and two ``--raw`` DNG stills, as CLI arguments."""
    from rawvid.dng import write_dng

    info = make_info(width=256, height=192)
    for i in range(2):
        write_dng(tmp_path / f"still{i}.dng", make_mosaic(info, seed=i), info)
    return ["--shared", tmp_path / "none", "--raw", tmp_path / "still0.dng", "--raw", tmp_path / "still1.dng"]


def test_cli_dataset_build(tmp_path, two_stills):
    res = run_cli("dataset", "build", "-o", tmp_path / "ds", *two_stills, "--size", "128x96", "--frames", "3",
                  "--test-frames", "4", "--clips-per-scene", "1", "--test-fraction", "0.5", "--render", "stable")
    assert res.returncode == 0, res.stderr
    assert RVDLayout.open(tmp_path / "ds" / "stable" / "test").videos
    assert RVDLayout.open(tmp_path / "ds" / "stable" / "train").videos
    res = run_cli("dataset", "build", "-o", tmp_path / "ds2", *two_stills, "--hold-out-camera", "Nokia 3310")
    assert res.returncode == 2 and "no scene's camera matches Nokia 3310" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_orbit_leaves_and_returns():
    from rawvid.synth import orbit_offset

    orbit = (40.0, 0.7, 1.0)
    assert orbit_offset(orbit, 0.0) == (0.0, 0.0)
    assert np.allclose(orbit_offset(orbit, 1.0), (0.0, 0.0), atol=1e-9)  # back where it started
    far = max(np.hypot(*orbit_offset(orbit, t)) for t in np.linspace(0, 1, 41))
    assert far == pytest.approx(80.0, rel=0.01)  # the diameter away at the far side


def test_scenarios_over_held_out_scenes(tmp_path):
    from rawvid.dataset import build_scenarios
    from rawvid.synth import scenario_spec

    scenes = example_scenes()
    rng = np.random.default_rng(0)
    clipped, shot = scenario_spec("clipped", scenes[0], rng, 4, 48, 64)
    lin = np.stack(list(linear_frames(shot, clipped, np.random.default_rng(1))))
    assert 0.01 < np.mean(lin.max(-1) >= 1.0) < 0.9  # a real share of the window is over white, not all
    dark, shot = scenario_spec("dark-noisy", scenes[0], rng, 4, 48, 64)
    assert max(dark.gains) < 0.2 and shot.sensor.read_noise == 3 * scenes[0].sensor.read_noise
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_spec("wobble", scenes[0], rng, 4, 48, 64)

    rep = build_scenarios(tmp_path / "sc", scenes, frames=4, long_frames=6, size=(128, 96), per_scenario=1,
                          test_fraction=0.34, scenarios=("orbit", "long", "clipped"))
    layout = RVDLayout.open(tmp_path / "sc" / "stable" / "test")
    assert [v.name.split("_")[0] for v in layout.videos] == ["orbit", "long", "clipped"]
    assert [len(v.frames) for v in layout.videos] == [4, 6, 4]
    assert all(v.name.endswith(tuple(rep.test_scenes)) for v in layout.videos)  # only scenes held out of training
    tags = json.loads((tmp_path / "sc" / "stable" / "test" / "tags.json").read_text())
    assert tags["orbit_" + rep.test_scenes[0]][0] == "scenario: orbit"
    assert any(t.startswith("camera: ") for t in tags["clipped_" + rep.test_scenes[0]])


def test_cli_dataset_scenarios(tmp_path, two_stills):
    res = run_cli("dataset", "scenarios", "-o", tmp_path / "sc", *two_stills, "--size", "128x96", "--frames", "3",
                  "--scenario", "rotate-zoom,exposure-step", "--per-scenario", "1", "--test-fraction", "0.5")
    assert res.returncode == 0, res.stderr
    assert len(RVDLayout.open(tmp_path / "sc" / "stable" / "test").videos) == 2
    res = run_cli("dataset", "scenarios", "-o", tmp_path / "sc2", *two_stills, "--scenario", "spin")
    assert res.returncode == 2 and "unknown scenario" in res.stderr


def test_hold_out_camera_moves_every_scene_of_it_to_test(tmp_path):
    """Issue 11 item 1: leave-one-camera-out. The training set is the usual one less that camera."""
    import dataclasses

    scenes = example_scenes()
    other = Sensor(**{**dataclasses.asdict(scenes[0].sensor), "camera": "Other Cam"})
    scenes = [scenes[0], scenes[1], Scene("part2", scenes[2].rgb, other), Scene("part3", scenes[0].rgb[:, ::-1], other)]
    kw = dict(seed=7, frames=3, test_frames=3, size=(128, 96), clips_per_scene=1, test_fraction=0.25,
              renders=("stable",))
    usual = build_dataset(tmp_path / "u", scenes, **kw)
    rep = build_dataset(tmp_path / "h", scenes, hold_out_cameras=("other cam",), **kw)
    assert set(rep.test_scenes) == set(usual.test_scenes) | {"part2", "part3"}
    assert set(rep.train_scenes) == set(usual.train_scenes) - {"part2", "part3"} and rep.train_scenes
    train = RVDLayout.open(tmp_path / "h" / "stable" / "train")
    assert all(train.video_info(v).camera.model != "Other Cam" for v in train.videos)
    with pytest.raises(ValueError, match="no scene's camera matches"):
        build_dataset(tmp_path / "x", scenes, hold_out_cameras=("Nokia",), **kw)


def test_scenarios_over_training_scenes_are_training_data(tmp_path):
    from rawvid.dataset import build_scenarios

    scenes = example_scenes()
    rep = build_scenarios(tmp_path / "sc", scenes, frames=3, size=(128, 96), per_scenario=1, test_fraction=0.34,
                          scenarios=("orbit", "exposure-step"), from_split="train")
    layout = RVDLayout.open(tmp_path / "sc" / "stable" / "train")
    names = [v.name for v in layout.videos]
    assert names == [f"{rep.train_scenes[0]}_orbit", f"{rep.train_scenes[1 % len(rep.train_scenes)]}_exposurestep"]
    assert {n.rsplit("_", 1)[0] for n in names} <= set(rep.train_scenes)  # held together with their scene
    assert not (tmp_path / "sc" / "stable" / "test").exists()
