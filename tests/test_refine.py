"""Block refinement: weights chosen by the encoder against the true RAW, applied by the decoder."""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
from conftest import EXAMPLE, assert_clean_error_text, run_cli

from rawvid.chain import network_layout
from rawvid.video import VideoSettings
from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode, frame_name
from rawvid.container import RvdFile, sha256_file
from rawvid.dng import read_dng
from rawvid.errors import RawvidError
from rawvid.metrics import psnr_black
from rawvid.mlv import MLVReader
from rawvid.model import DEFAULT_MODEL, resolve_model
from rawvid.rawlayer import LayerSettings
from rawvid.refine import (BLOCK, GAINS, LEVELS, apply_gains, blend, choose_frame, choose_gains, choose_weights,
                           grid_shape, pack, refine_frame, unpack)


def _blocks_up(index: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.repeat(np.repeat(index, BLOCK, 0), BLOCK, 1)[:h, :w]


def test_choose_weights_finds_each_blocks_level():
    rng = np.random.default_rng(0)
    h, w = 3 * BLOCK + 5, 2 * BLOCK + 7  # partial blocks at the edges
    base = rng.uniform(0.3, 0.6, (4, h, w)).astype(np.float32)
    pred = rng.uniform(0.3, 0.6, (4, h, w)).astype(np.float32)
    truth_index = rng.integers(0, len(LEVELS), grid_shape(h, w))
    weights = np.asarray(LEVELS)[_blocks_up(truth_index, h, w)]
    target = base + weights[None] * (pred - base)
    index = choose_weights(pred, base, target)
    assert index.dtype == np.uint8 and index.shape == grid_shape(h, w)
    assert np.array_equal(index, truth_index)
    assert np.allclose(blend(pred, base, index), target, atol=1e-6)


def test_no_block_ends_worse_than_the_base():
    rng = np.random.default_rng(1)
    h, w = 40, 56
    target = rng.uniform(0.1, 0.9, (4, h, w))
    base = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
    pred = np.clip(target + rng.normal(0, 0.08, target.shape), 0, 1).astype(np.float32)
    out = blend(pred, base, choose_weights(pred, base, target))

    def block_err(a):
        e = np.pad((a - target) ** 2, ((0, 0), (0, 48 - h), (0, 64 - w)))
        return e.reshape(4, 3, BLOCK, 4, BLOCK).sum(axis=(0, 2, 4))

    assert np.all(block_err(out) <= block_err(base) + 1e-9)
    assert block_err(out).sum() < block_err(base).sum()  # two noisy estimates: a blend beats either
    assert LEVELS.index(0.0) >= 0 and LEVELS.index(1.0) >= 0  # global-fit and the network alone are levels


def test_block_gains_find_each_channels_gain_and_never_hurt():
    rng = np.random.default_rng(3)
    h, w = 2 * BLOCK + 3, 3 * BLOCK + 9
    x = rng.uniform(0.2, 0.7, (4, h, w)).astype(np.float32)
    truth_index = rng.integers(0, len(GAINS), (4, *grid_shape(h, w)))
    gains = np.asarray(GAINS)[truth_index]
    target = x * np.repeat(np.repeat(gains, BLOCK, 1), BLOCK, 2)[:, :h, :w]
    index = choose_gains(x, target)
    assert index.dtype == np.uint8 and index.shape == (4, *grid_shape(h, w))
    assert np.array_equal(index, truth_index)
    assert np.allclose(apply_gains(x, index), target, atol=1e-6)
    # on noisy data: every block's error at most what it was (gain 1 is a level)
    base = rng.uniform(0.2, 0.7, (4, h, w)).astype(np.float32)
    noisy = np.clip(target + rng.normal(0, 0.03, target.shape), 0, 1)
    idx, out = choose_frame(x, base, noisy, gains=True)
    assert idx.shape == (5, *grid_shape(h, w)) and GAINS.index(1.0) >= 0
    assert np.array_equal(out, refine_frame(x, base, idx))  # the decoder rebuilds the encoder's frame exactly
    weights_only = blend(x, base, idx[0])
    assert np.mean((out - noisy) ** 2) < np.mean((weights_only - noisy) ** 2)
    idx1, out1 = choose_frame(x, base, noisy)  # weights alone: as files before block gains
    assert idx1.shape == grid_shape(h, w) and np.array_equal(out1, weights_only)
    assert np.array_equal(refine_frame(x, base, idx1), weights_only)


def test_pack_round_trip_and_untrusted_data():
    maps = np.random.default_rng(2).integers(0, len(LEVELS), (5, 3, 4)).astype(np.uint8)
    data = pack(maps)
    assert np.array_equal(unpack(data, 5, (3, 4), len(LEVELS)), maps)
    with pytest.raises(ValueError, match="expected 48"):
        unpack(data, 4, (3, 4), len(LEVELS))
    with pytest.raises(ValueError, match="expected"):
        unpack(data, 6, (3, 4), len(LEVELS))
    with pytest.raises(ValueError, match="names no level"):
        unpack(pack(np.full((1, 2, 2), len(LEVELS), np.uint8)), 1, (2, 2), len(LEVELS))
    with pytest.raises(ValueError, match="not zlib"):
        unpack(b"not zlib at all", 1, (2, 2), len(LEVELS))
    bomb = zlib.compress(bytes(200_000_000))  # 200 MB of zeros in ~200 kB: refused without inflating it all
    with pytest.raises(ValueError, match="expected 4"):
        unpack(bomb, 1, (2, 2), len(LEVELS))
    # with block gains: frames x 5 x grid, each plane checked against its own levels
    both = np.concatenate([maps[:, None], np.full((5, 4, 3, 4), len(GAINS) - 1, np.uint8)], axis=1)
    assert np.array_equal(unpack(pack(both), 5, (3, 4), len(LEVELS), len(GAINS)), both)
    with pytest.raises(ValueError, match="expected"):
        unpack(pack(both), 5, (3, 4), len(LEVELS))  # read without gains: five times too many bytes
    bad = both.copy()
    bad[2, 3, 1, 1] = len(GAINS)
    with pytest.raises(ValueError, match="names no gain"):
        unpack(pack(bad), 5, (3, 4), len(LEVELS), len(GAINS))


def test_encode_refines_and_no_frame_falls_below_global_fit(mlv_factory, tmp_path):
    path, info, mosaics = mlv_factory(n=5, width=160, height=96)
    rvd_path = encode(path, tmp_path / "c.rvd").output
    rvd = RvdFile(rvd_path)
    r = rvd.manifest["refine"]
    assert r["mode"] == "blocks" and r["grid"] == list(grid_shape(48, 80)) and r["frames"] == 5
    assert r["model"] == DEFAULT_MODEL and r["model_sha256"] == sha256_file(resolve_model(DEFAULT_MODEL))
    assert rvd.sizes()["side_info_bytes"] == len(rvd.attachment(r["file"])) > 0
    decode(rvd_path, tmp_path / "net", DecodeOptions(method="network"))
    decode(rvd_path, tmp_path / "gf", DecodeOptions(method="global-fit"))
    for i in range(1, 5):
        def score(folder):
            return psnr_black(read_dng(tmp_path / folder / frame_name("clip", i))[0], mosaics[i], info.cfa, info.black,
                              info.white)
        assert score("net") >= score("gf") - 0.01, i


def test_refinement_pays_on_the_example(tmp_path):
    with MLVReader(EXAMPLE) as clip:
        info = clip.info
        truth = [clip.read(i) for i in range(1, len(clip))]
    scores = {}
    for mode in ("off", "weights", "blocks"):
        rvd = encode(EXAMPLE, tmp_path / f"{mode}.rvd", EncodeOptions(refine=mode)).output
        res = decode(rvd, tmp_path / mode, DecodeOptions(method="network"))
        assert res.notes == []
        scores[mode] = np.mean([psnr_black(read_dng(tmp_path / mode / frame_name(res.clip, i))[0], t, info.cfa, info.black,
                                           info.white) for i, t in enumerate(truth, start=1)])
    assert RvdFile(tmp_path / "off.rvd").manifest["refine"] == {"mode": "off"}
    assert scores["weights"] > scores["off"] + 0.2, scores
    # block gains: stored beside the weights (format 5), and they pay
    blocks, weights = RvdFile(tmp_path / "blocks.rvd").manifest, RvdFile(tmp_path / "weights.rvd").manifest
    assert blocks["refine"]["gains"] == list(GAINS) and blocks["format_version"] == 5
    assert "gains" not in weights["refine"] and blocks["refine"]["levels"] == weights["refine"]["levels"]
    assert scores["blocks"] > scores["weights"] + 0.1, scores
    def shown(name):  # the info table's text, its borders and wrapping left out
        return re.sub(r"[│\s]+", " ", run_cli("info", tmp_path / name).stdout)

    assert "with gains" in shown("blocks.rvd") and "with gains" not in shown("weights.rvd")


def test_other_model_skips_the_refinement(mlv_factory, tiny_model, tmp_path):
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    rvd = encode(path, tmp_path / "c.rvd").output
    res = decode(rvd, tmp_path / "o", DecodeOptions(method="network", model=tiny_model))
    assert res.frames == 3 and any("not applied" in n for n in res.notes)
    own = encode(path, tmp_path / "t.rvd", EncodeOptions(model=tiny_model)).output
    assert decode(own, tmp_path / "t", DecodeOptions(method="network", model=tiny_model)).notes == []


def test_refinement_needs_raw_for_every_frame(camera_pair, tmp_path):
    video, dng = camera_pair
    with pytest.raises(RawvidError, match="needs the RAW of every frame"):
        encode(None, tmp_path / "v.rvd", EncodeOptions(refine="blocks"), video=video, raw=dng)
    auto = encode(None, tmp_path / "a.rvd", video=video, raw=dng).output
    assert RvdFile(auto).manifest["refine"] == {"mode": "off"}
    res = run_cli("encode", "--video", video, "--raw", dng, "-o", tmp_path / "b.rvd", "--refine", "blocks")
    assert_clean_error_text(res, "block refinement needs the RAW of every frame")
    assert not (tmp_path / "b.rvd").exists()


def _tampered(rvd_path, tmp_path, edit_manifest=None, refine_data=None):
    """The same clip re-muxed with an edited manifest or refinement attachment (checksums kept valid)."""
    import json
    import subprocess

    from rawvid.container import MANIFEST_NAME, MIME_BINARY, MIME_DNG, MIME_JSON, mux
    from rawvid.video import ffmpeg_exe

    rvd = RvdFile(rvd_path)
    m = json.loads(json.dumps(rvd.manifest))
    parts = tmp_path / "parts"
    parts.mkdir()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(rvd_path), "-map", "0:v", "-c", "copy",
                    str(parts / "v.mkv")], check=True)
    files = []
    for name in m["attachments"]:
        data = rvd.attachment(name)
        if name == m["refine"].get("file") and refine_data is not None:
            data = refine_data
        (parts / name).write_bytes(data)
        m["attachments"][name] = sha256_file(parts / name)
        files.append((parts / name, MIME_DNG if name.endswith(".dng") else MIME_JSON if name.endswith(".json")
                      else MIME_BINARY))
    if edit_manifest:
        edit_manifest(m)
    from rawvid.checksums import sealed_json

    (parts / MANIFEST_NAME).write_bytes(sealed_json(m))  # edited on purpose: sealed again
    out = tmp_path / "tampered.rvd"
    mux(parts / "v.mkv", out, [(parts / MANIFEST_NAME, MIME_JSON), *files])
    return out


@pytest.mark.parametrize("case", ["grid", "levels", "gains", "bad-index", "bad-gain", "bomb"])
def test_tampered_refinement_is_a_clean_error(mlv_factory, tmp_path, case):
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    rvd = encode(path, tmp_path / "c.rvd").output
    grid = grid_shape(32, 48)
    edits = {"grid": dict(edit_manifest=lambda m: m["refine"].update(grid=[1, 1])),
             "levels": dict(edit_manifest=lambda m: m["refine"].update(levels=["x"] * 9)),
             "gains": dict(edit_manifest=lambda m: m["refine"].update(gains=[1.0] * 9)),
             "bad-index": dict(refine_data=pack(np.full((3, 5, *grid), 200, np.uint8))),
             "bad-gain": dict(refine_data=pack(np.concatenate([np.zeros((3, 1, *grid), np.uint8),
                                                               np.full((3, 4, *grid), 9, np.uint8)], axis=1))),
             "bomb": dict(refine_data=zlib.compress(bytes(50_000_000)))}[case]
    bad = _tampered(rvd, tmp_path, **edits)
    with pytest.raises(RawvidError, match="refinement"):
        decode(bad, tmp_path / "out", DecodeOptions(method="network"))
    res = run_cli("decode", bad, "-o", tmp_path / "cli")
    assert_clean_error_text(res, str(bad.name), "refinement")


def test_block_gains_in_an_older_format_are_refused(mlv_factory, tmp_path):
    """A format-4 reader would decode a file with block gains without them: such a file says 5, and
    one that says 4 but carries gains is a damaged or forged manifest."""
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    rvd = encode(path, tmp_path / "c.rvd").output
    assert RvdFile(rvd).manifest["format_version"] == 5 and RvdFile(rvd).manifest["refine"]["gains"]
    bad = _tampered(rvd, tmp_path, edit_manifest=lambda m: m.update(format_version=4))
    assert_clean_error_text(run_cli("decode", bad, "-o", tmp_path / "cli"), bad.name, "refine.gains", "format version 5")


def test_encode_on_a_missing_gpu_is_a_clean_error(mlv_factory, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    path, _, _ = mlv_factory(n=2, width=64, height=48)
    res = run_cli("encode", path, "-o", tmp_path / "c.rvd", "--device", "cuda")
    assert_clean_error_text(res, "no CUDA device is available")
    assert not (tmp_path / "c.rvd").exists()


def test_cuda_encodes_and_decodes_what_the_cpu_does(mlv_factory, tmp_path):
    """--device cuda (skipped without a GPU): the encoder's chain on the GPU, in float32 (bfloat16 is
    chosen for CPUs only), and the decoded frames within rounding of the same file decoded on the CPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    assert network_layout("cuda") == "channels_last"
    path, info, mosaics = mlv_factory(n=4, width=128, height=96)
    rvd = encode(path, tmp_path / "g.rvd", EncodeOptions(device="cuda")).output
    assert RvdFile(rvd).manifest["network_layout"] == "channels_last"
    decode(rvd, tmp_path / "gpu", DecodeOptions(device="cuda"))
    decode(rvd, tmp_path / "cpu", DecodeOptions(device="cpu"))
    for i in range(4):
        g = read_dng(tmp_path / "gpu" / frame_name("clip", i))[0].astype(int)
        c = read_dng(tmp_path / "cpu" / frame_name("clip", i))[0].astype(int)
        assert np.abs(g - c).max() <= 8
        assert psnr_black(g, mosaics[i], info.cfa, info.black, info.white) > 30


def test_network_layout_is_recorded_and_followed(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    assert RvdFile(encode(path, tmp_path / "auto.rvd").output).manifest["network_layout"] == network_layout()
    rvd = encode(path, tmp_path / "c.rvd", EncodeOptions(layout="channels_last")).output
    assert RvdFile(rvd).manifest["network_layout"] == "channels_last"  # what the encoder's refinement ran in
    new = decode(rvd, tmp_path / "new")
    old = _tampered(rvd, tmp_path, edit_manifest=lambda m: m.pop("network_layout"))
    (tmp_path / "parts").rename(tmp_path / "parts-old")
    assert decode(old, tmp_path / "old").frames == new.frames == 3  # a file from before: decoded NCHW
    for i in range(3):
        a, b = read_dng(tmp_path / "new" / frame_name("clip", i))[0], read_dng(tmp_path / "old" / frame_name("clip", i))[0]
        assert np.abs(a.astype(int) - b).max() <= 1  # the two layouts differ by float rounding at most
    bad = _tampered(rvd, tmp_path, edit_manifest=lambda m: m.update(network_layout="sideways"))
    res = run_cli("decode", bad, "-o", tmp_path / "bad")
    assert_clean_error_text(res, "unknown network_layout 'sideways'")


def test_bfloat16_layout_round_trips_closed_loop(mlv_factory, tmp_path):
    """A file coded with the network in bfloat16 names it; decode follows it, rebuilding the encoder's
    RAW layer to the bit, and the same file decoded in float32 stays within a few DN."""
    path, info, mosaics = mlv_factory(n=4, width=128, height=96)
    rvd = tmp_path / "b.rvd"
    enc = encode(path, rvd, EncodeOptions(layout="channels_last_bf16", video=VideoSettings.make(crf=16),
                                          raw_layer=LayerSettings(target_psnr=50.0, predictor="chain")))
    assert RvdFile(rvd).manifest["network_layout"] == "channels_last_bf16"
    res = decode(rvd, tmp_path / "out")
    assert not any("CRC" in n for n in res.notes), res.notes
    got = [read_dng(tmp_path / "out" / frame_name("clip", i))[0] for i in range(4)]
    psnrs = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(got, mosaics)]
    assert np.allclose(psnrs, enc.layer["psnr_black"], atol=1e-6)  # the decoder's chain is the encoder's
    paper = encode(path, tmp_path / "p.rvd", EncodeOptions(layout="channels_last_bf16")).output
    decode(paper, tmp_path / "p16")
    f32 = _tampered(paper, tmp_path, edit_manifest=lambda m: m.update(network_layout="channels_last"))
    decode(f32, tmp_path / "p32")
    for i in range(1, 4):
        a = read_dng(tmp_path / "p16" / frame_name("clip", i))[0].astype(int)
        b = read_dng(tmp_path / "p32" / frame_name("clip", i))[0].astype(int)
        assert 0 < np.abs(a - b).max() <= 64 and np.abs(a - b).mean() < 2  # rounding, not another picture


@pytest.mark.parametrize("where", ["model", "refine"])
def test_a_file_may_name_a_model_but_not_point_at_one(mlv_factory, tmp_path, where):
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    rvd = encode(path, tmp_path / "c.rvd").output
    weights = str(resolve_model("fagdn-default"))  # a real weights file anywhere on disk

    def edit(m):
        if where == "model":
            m["model"] = weights
        else:
            m["refine"]["model"] = "../../" + "x"

    bad = _tampered(rvd, tmp_path, edit_manifest=edit)
    res = run_cli("decode", bad, "-o", tmp_path / "out")
    assert_clean_error_text(res, str(bad.name), "must be a model name")
    assert not list((tmp_path / "out").glob("*.dng")) if (tmp_path / "out").exists() else True
    ok = decode(rvd, tmp_path / "fine", DecodeOptions(model=weights))  # the user's own --model may be a path
    assert ok.method == "network"


def test_a_refused_decode_leaves_no_output_folder(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=3, width=96, height=64)
    rvd = encode(path, tmp_path / "c.rvd").output
    bad = _tampered(rvd, tmp_path, refine_data=b"not zlib")
    res = run_cli("decode", bad, "-o", tmp_path / "out")
    assert_clean_error_text(res, "refinement")
    assert not (tmp_path / "out").exists()  # validated before the folder and its marker were made


def test_unclip_mean_removes_the_clipped_means_lift():
    """Issue 13 item 6: a prediction m of E[max(X, 0)], X ~ N(s, sigma^2), loses most of the lift m - s."""
    from math import erf, exp, pi, sqrt

    from rawvid.noise import NoiseModel, unclip_mean

    noise = NoiseModel(scale=0.0, offset=1e-4)  # sigma 0.01

    def clipped_mean(s):
        u = s / 0.01
        return 0.01 * (u * 0.5 * (1 + erf(u / sqrt(2))) + exp(-u * u / 2) / sqrt(2 * pi))

    s = np.array([0.0, 0.005, 0.01, 0.02, 0.03, 0.2, 0.9])
    m = np.array([clipped_mean(v) for v in s])
    got = unclip_mean(m, noise)
    left = np.abs(got - s) / np.maximum(np.abs(m - s), 1e-12)
    assert np.all(left[:4] < [0.45, 0.3, 0.16, 0.03]) and np.abs(got - s)[4:] == pytest.approx(0, abs=1e-7)
    assert unclip_mean(np.array([0.0]), noise)[0] == pytest.approx(-0.4 * 0.01, abs=1e-4)  # the floor: 0.4 sigma under
    assert unclip_mean(np.array([0.0, 0.5]), NoiseModel(0.0, 0.0)).tolist() == [0.0, 0.5]  # no noise: unchanged


def test_shadows_keep_values_under_black(tmp_path):
    """Issue 13 item 6: a dark noisy clip decodes with values under black and without the clipped mean's lift;
    a file from before (no ``shadows`` in its manifest) decodes as it always did."""
    from conftest import make_info, make_mosaic

    from rawvid import MLVWriter

    info = make_info(width=256, height=192)  # big enough for the noise measurement to find flat blocks
    mosaics = [make_mosaic(info, seed=i, shift=2 * i, gain=0.03) for i in range(4)]
    with MLVWriter(tmp_path / "dark.MLV", info) as w:
        for i, mos in enumerate(mosaics):
            w.write_frame(mos, number=i)
    rvd = encode(tmp_path / "dark.MLV", tmp_path / "dark.rvd", EncodeOptions(refine="off")).output
    m = RvdFile(rvd).manifest
    assert m["shadows"] == "unclipped" and m["noise_profile"][1] > 0
    old = _tampered(rvd, tmp_path, edit_manifest=lambda d: d.pop("shadows"))
    stats = {}
    for name, f in (("new", rvd), ("old", old)):
        res = decode(f, tmp_path / name, DecodeOptions(method="global-fit"))
        got = np.stack([read_dng(tmp_path / name / frame_name(res.clip, i))[0] for i in range(1, 4)]).astype(float)
        truth = np.stack(mosaics[1:]).astype(float)
        stats[name] = ((got < info.black).mean(), (got - truth).mean())
    assert (truth < info.black).mean() > 0.02  # the source: noise around a dark signal
    assert stats["old"][0] == 0 and stats["new"][0] > 0.001, stats  # only the unclipped decode goes under black
    assert stats["old"][1] > 0.4 and abs(stats["new"][1]) < stats["old"][1], stats  # and less of a lift
