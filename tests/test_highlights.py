"""Issue 11 item 3: the overexposure-mask fusion of the keyframe into the network's clipped regions."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_info, make_mosaic

from rawvid import MLVWriter
from rawvid.video import VideoSettings
from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode, frame_name
from rawvid.container import RvdFile
from rawvid.dng import read_dng
from rawvid.errors import FormatError
from rawvid.highlights import AGREE, KEY_SHARE, MASK_HI, MASK_LO, MODE, fuse, overexposed_mask
from rawvid.manifest import validate


def test_mask_is_a_soft_threshold_of_the_brightest_channel():
    srgb = np.zeros((3, 1, 4), dtype=np.float32)
    srgb[1, 0] = [0.5, MASK_LO, (MASK_LO + MASK_HI) / 2, 1.0]  # only green rises: any channel counts
    assert overexposed_mask(srgb)[0, 0].tolist() == pytest.approx([0, 0, 0.5, 1])


def _scene(h=40, w=48):  # big enough for the exposure ratio's samples
    srgb = np.full((3, h, w), 0.5, dtype=np.float32)
    srgb[:, :, w // 2 :] = 1.0  # the right half clipped
    key = np.full((4, h, w), 0.3, dtype=np.float32)
    return srgb, key


def test_fuse_takes_part_of_the_exposure_scaled_keyframe_where_clipped():
    srgb, key = _scene()
    key[:, :, 24:] = 0.45  # what the keyframe knew of the highlight
    pred = np.full_like(key, 0.6)  # the network: twice the keyframe where both see the scene...
    pred[:, :, 24:] = 0.8  # ...and about the clip level in the highlight
    out = fuse(pred, srgb, key, np.zeros((40, 48, 2), dtype=np.float32))
    assert np.array_equal(out[:, :, :24], pred[:, :, :24])  # not clipped: the network's
    want = 0.8 + KEY_SHARE * (2 * 0.45 - 0.8)  # the keyframe at the measured exposure ratio (x2), half of it
    assert out[:, :, 24:] == pytest.approx(want, abs=1e-6)


def test_fuse_does_not_trust_a_keyframe_darker_than_the_network():
    srgb, key = _scene()
    key[:, :, 24:] = 0.35  # x2: 0.7, under the network's 0.8 by more than AGREE: warped from elsewhere
    assert 2 * 0.35 < 0.8 - AGREE
    pred = np.where(np.arange(48) < 24, 0.6, 0.8).astype(np.float32) * np.ones((4, 40, 1), dtype=np.float32)
    out = fuse(pred, srgb, key, np.zeros((40, 48, 2), dtype=np.float32))
    assert np.array_equal(out, pred)


def test_fuse_leaves_frames_without_clipped_pixels_and_out_of_view_samples():
    srgb, key = _scene()
    pred = np.full_like(key, 0.6)
    flat = np.full_like(srgb, 0.5)
    assert fuse(pred, flat, key + 0.3, np.zeros((40, 48, 2), dtype=np.float32)) is pred
    flow = np.zeros((40, 48, 2), dtype=np.float32)
    flow[..., 0] = 100.0  # everything comes from outside the keyframe
    assert np.array_equal(fuse(pred, srgb, key + 0.3, flow), pred)


def _hot_clip(tmp_path, n: int = 4):
    """An MLV whose bright squares are over sRGB white (its RAW is not), and its mosaics."""
    info = make_info(width=256, height=192)
    mosaics = [make_mosaic(info, seed=i, shift=i, gain=1.6) for i in range(n)]
    with MLVWriter(tmp_path / "hot.MLV", info) as w:
        for i, mos in enumerate(mosaics):
            w.write_frame(mos, number=i)
    return info, mosaics


def test_clipped_clip_decodes_closer_to_the_truth_with_the_fusion(tmp_path):
    """End to end in the paper's mode: the file records the fusion, the decoder applies it, and inside
    the clipped regions it is closer to the true RAW than the same file decoded as files from before."""
    from test_refine import _tampered

    info, mosaics = _hot_clip(tmp_path)
    rvd = encode(tmp_path / "hot.MLV", tmp_path / "hot.rvd", EncodeOptions(refine="off")).output
    m = dict(RvdFile(rvd).manifest)
    assert m["highlights"] == MODE
    from conftest import run_cli

    info_out = run_cli("info", rvd)
    assert info_out.returncode == 0 and "highlights fused from the" in " ".join(info_out.stdout.split()), info_out.stdout
    m["highlights"] = "sky-replacement"  # untrusted: only the one fusion rawvid knows
    with pytest.raises(FormatError, match="highlights"):
        validate(m, rvd, rvd.stat().st_size)
    old = _tampered(rvd, tmp_path, edit_manifest=lambda d: d.pop("highlights"))
    errs = {}
    for name, f in (("new", rvd), ("old", old)):
        res = decode(f, tmp_path / name, DecodeOptions(method="network"))
        got = np.stack([read_dng(tmp_path / name / frame_name(res.clip, i))[0] for i in range(1, 4)]).astype(float)
        errs[name] = got - np.stack(mosaics[1:]).astype(float)
    hot = np.stack(mosaics[1:]) > info.black + 0.7 * (info.white - info.black)
    assert hot.mean() > 0.05  # the precondition: a share of the scene is a highlight
    assert not np.array_equal(errs["new"], errs["old"])
    assert np.mean(errs["new"][hot] ** 2) < np.mean(errs["old"][hot] ** 2)


def test_warp_points_is_the_warp_at_those_pixels():
    from rawvid.flow import warp, warp_points

    rng = np.random.default_rng(3)
    img = rng.random((4, 30, 50), dtype=np.float32)
    flow = rng.normal(0, 4, (30, 50, 2)).astype(np.float32)  # some sources outside the frame
    full, valid = warp(img, flow)
    ys, xs = np.nonzero(rng.random((30, 50)) < 0.5)
    got, ok = warp_points(img, flow, ys, xs)
    assert np.array_equal(ok, valid[ys, xs] > 0) and 0 < ok.mean() < 1
    assert np.array_equal(got, full[:, ys, xs])  # the same arithmetic as the whole warp


def test_fusion_keeps_the_raw_layer_closed_loop(tmp_path):
    """With a RAW layer the encoder predicts with the fusion as the decoder does: every decoded frame
    matches the encoder's reconstruction (the layer's CRCs), with block refinement on."""
    from rawvid.metrics import psnr_black
    from rawvid.rawlayer import LayerSettings

    info, mosaics = _hot_clip(tmp_path, 5)
    enc = encode(tmp_path / "hot.MLV", tmp_path / "hot.rvd",
                 EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=50.0, predictor="chain")))
    assert RvdFile(enc.output).manifest["highlights"] == MODE
    res = decode(enc.output, tmp_path / "out")
    assert not any("CRC" in n for n in res.notes), res.notes
    got = [psnr_black(read_dng(tmp_path / "out" / frame_name(res.clip, i))[0], t, info.cfa, info.black, info.white)
           for i, t in enumerate(mosaics)]
    assert np.allclose(got, enc.layer["psnr_black"], atol=1e-6)
