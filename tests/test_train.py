"""rawvid train: a few real steps on a built dataset, checkpoint resume, export, and decode with the result."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_dataset import example_scenes

from rawvid.dataset import build_dataset
from rawvid.model import load_model
from rawvid.train import TRAIN_CONFIGS, TrainOptions, image_loss, ssim3, train


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    build_dataset(root, example_scenes(), seed=1, frames=4, test_frames=4, size=(128, 128), clips_per_scene=1,
                  test_fraction=0.34, renders=("stable",))
    return root / "stable"


def test_losses():
    x = torch.rand(1, 4, 16, 16)
    assert float(ssim3(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(image_loss(x, x, 1.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(image_loss(x, x.flip(-1), 0.0)) > 0


def _opts(ds, out, steps, **kw):
    return TrainOptions(data=[str(ds / "train")], out=str(out), arch="tiny", steps=steps, batch=1, crop=32,
                        unroll=3, tbptt=2, val_every=2, save_every=1, val_frames=4, codec_prob=0.5,
                        val_fraction=0.5, **kw)


def test_train_resume_export(small_dataset, tmp_path):
    logs = []
    res = train(_opts(small_dataset, tmp_path / "run", 2), log=logs.append, command="test")
    assert res.steps == 2 and res.weights.is_file() and res.card.is_file()
    assert any(d["event"] == "val" for d in logs)
    logs2 = []
    res2 = train(_opts(small_dataset, tmp_path / "run", 3), log=logs2.append, command="test")
    assert {"event": "resumed", "step": 2} in logs2 and res2.steps == 3
    model = load_model(str(res2.weights))
    assert model.config == TRAIN_CONFIGS["tiny"]
    card = res2.card.read_text()
    assert "architecture" in card and "command: `test`" in card and "validation" in card


def test_validation_on_separate_folders(small_dataset, tmp_path):
    """--val: every training clip trains; validation chains the given folder's clips over --val-frames."""
    logs = []
    res = train(_opts(small_dataset, tmp_path / "run", 2, val_data=[str(small_dataset / "test")]), log=logs.append,
                command="test")
    data = next(d for d in logs if d["event"] == "data")
    from rawvid.dataset import RVDLayout

    assert data["val_clips"] == len(RVDLayout.open(small_dataset / "test").videos) > 0
    assert data["train_clips"] == len(RVDLayout.open(small_dataset / "train").videos)
    val = [d for d in logs if d["event"] == "val"]
    assert val and val[-1]["val_clips_ahead"] <= data["val_clips"]
    assert val[-1]["val_min_clip_gain_db"] <= val[-1]["val_gain_db"] + 1e-9
    assert "test" in res.card.read_text().split("validation (")[1].split(",")[0]


@pytest.mark.parametrize("extra", [{}, {"key_reference": True},
                                   {"key_reference": True, "ratio_refs": True, "adaptive_refs": True}],
                         ids=["prior", "prior+keyframe-reference", "adaptive-references"])
def test_prior_model_trains_and_decodes(small_dataset, tmp_path, extra):
    """A model with the global-fit prior (and the keyframe reference) goes through the real decode path."""
    from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode
    from rawvid.dataset import RVDLayout
    from rawvid.source import rvd_video_source

    cfg = json.dumps({**TRAIN_CONFIGS["fast-prior"].to_dict(), "widths": [4, 8, 8, 8], "bottleneck": 8,
                      **extra})
    res = train(TrainOptions(data=[str(small_dataset / "train")], out=str(tmp_path / "p"), arch=cfg, steps=2, batch=1,
                             crop=64, unroll=3, val_every=2, save_every=10, val_fraction=0.5, codec_prob=0.0,
                             per_frame_prob=0.5),
                log=lambda d: None)
    lay = RVDLayout.open(small_dataset / "test")
    rvd = encode(rvd_video_source(lay, lay.videos[0]), tmp_path / "c.rvd", EncodeOptions()).output
    out = decode(rvd, tmp_path / "frames", DecodeOptions(method="network", model=str(res.weights)))
    assert out.method == "network" and out.frames == 4
    # an untrained prior model stays close to global-fit: the prediction is A + gated residual
    g = decode(rvd, tmp_path / "gf", DecodeOptions(method="global-fit"))
    from rawvid.dng import read_dng

    a = read_dng(tmp_path / "frames" / f"{out.clip}_000001.dng")[0].astype(float)
    b = read_dng(tmp_path / "gf" / f"{g.clip}_000001.dng")[0].astype(float)
    assert np.abs(a - b).mean() < 0.05 * 15000 and g.frames == 4


def test_validation_computes_global_fit_once():
    from rawvid.model import CONFIGS, FAGDN
    from rawvid.train import ClipData, validate

    rng = np.random.default_rng(0)
    srgb = rng.random((4, 3, 32, 48)).astype(np.float32)
    raw = np.stack([srgb[:, 0] ** 2.2, srgb[:, 1] ** 2.2, srgb[:, 1] ** 2.2, srgb[:, 2] ** 2.2], 1) * 0.7
    clips = [ClipData("a", raw.astype(np.float32), [srgb]), ClipData("b", raw[::-1].copy(), [srgb[::-1].copy()])]
    model = FAGDN(CONFIGS["tiny"])
    cache: dict = {}
    first = validate(model, clips, 4, "cpu", cache)
    assert sorted(cache) == [(0, 4), (1, 4)]
    cache[(0, 4)] = [0.0] * 3  # a second validation reads the cache instead of refitting
    second = validate(model, clips, 4, "cpu", cache)
    assert second["val_psnr"] == first["val_psnr"]
    assert second["val_psnr_global_fit"] < first["val_psnr_global_fit"]
    assert validate(model, clips, 4, "cpu") == first  # without a cache: the same figures


def test_one_camera_one_scene_path(tmp_path):
    """A user's own camera with few stills: a single scene still validates (on its own clips) and leaves
    best.safetensors; no validation at all still leaves usable weights and a card without nan."""
    from conftest import make_info, make_mosaic, run_cli

    from rawvid.dng import write_dng

    info = make_info(width=256, height=192)
    write_dng(tmp_path / "a.dng", make_mosaic(info, seed=1), info)
    res = run_cli("dataset", "build", "-o", tmp_path / "one", "--shared", tmp_path / "none", "--raw", tmp_path / "a.dng")
    assert res.returncode == 2 and "at least two stills" in res.stderr  # a test split needs a second scene

    scenes = example_scenes()[:1]
    build_dataset(tmp_path / "ds", scenes, seed=1, frames=4, size=(128, 128), clips_per_scene=3, test_fraction=0,
                  renders=("stable",))
    logs = []
    res = train(_opts(tmp_path / "ds" / "stable", tmp_path / "run", 2), log=logs.append, command="test")
    data = next(d for d in logs if d["event"] == "data")
    assert data["val_clips"] >= 1 and data["train_clips"] >= 1  # one scene: its last clips validate
    assert (tmp_path / "run" / "best.safetensors").is_file() and "nan" not in res.card.read_text()

    opts = _opts(tmp_path / "ds" / "stable", tmp_path / "noval", 1)
    opts.val_fraction = 0.0
    res = train(opts, log=lambda d: None, command="test")
    assert (tmp_path / "noval" / "best.safetensors").is_file()
    card = res.card.read_text()
    assert "nan" not in card and "validation: none ran" in card


def test_clipped_weight_counts_errors_under_clipped_srgb_more():
    """--clipped-weight: an error where the sRGB is clipped costs 1 + w times one elsewhere, and the
    loss stays on the MSE's scale (weights normalised by their mean); w = 0 is the plain MSE."""
    from rawvid.train import clipped_weights

    srgb = torch.full((1, 3, 4, 4), 0.5)
    srgb[0, 1, :2] = 1.0  # the top half clipped in one channel
    target = torch.zeros((1, 4, 4, 4))
    top, bottom = target.clone(), target.clone()
    top[..., :2, :], bottom[..., 2:, :] = 0.1, 0.1
    w = clipped_weights(srgb, 3.0)
    assert w.shape == (1, 1, 4, 4) and float(w[0, 0, 0, 0]) == 4.0 and float(w[0, 0, 3, 0]) == 1.0
    assert clipped_weights(srgb, 0.0) is None
    lt, lb = float(image_loss(top, target, 0.0, w)), float(image_loss(bottom, target, 0.0, w))
    assert lt == pytest.approx(4 * lb) and (lt + lb) / 2 == pytest.approx(float(image_loss(top, target, 0.0)))
