"""The RAW layer: residual mappings, closed-loop round trips, rate control, lossless, bad layers, RD helpers."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from rawvid import ratecontrol as rctl, rawlayer as rl
from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode, frame_name
from rawvid.container import RvdFile
from rawvid.dng import read_dng
from rawvid.errors import FormatError
from rawvid.metrics import psnr_black
from rawvid.rawlayer import LayerSettings
from rawvid.video import VideoSettings

from conftest import assert_clean_error_text, run_cli


def test_tile_and_mappings_are_exact_where_they_must_be():
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 65536, size=(4, 6, 10), dtype=np.uint16)
    assert np.array_equal(rl.untile(rl.tile(planes)), planes)
    truth = rng.integers(0, 65536, size=(12, 20), dtype=np.uint16)
    pred = rng.integers(0, 65536, size=(12, 20), dtype=np.uint16)
    assert np.array_equal(rl.lossless_recon(pred, rl.lossless_code(truth, pred)), truth)  # wraps, still exact
    for scale in (0.5, 1.0, 4.0, 3.3):
        res = np.rint(rng.uniform(-2000, 2000, size=(12, 20)) * scale)  # inside the 12-bit range
        back = rl.from_code(rl.to_code(res, scale), scale)
        assert np.abs(back - res).max() <= scale / 2 + 0.5
    code = rl.to_code(np.array([1e9, -1e9]), 1.0)  # out of range: clipped, not wrapped
    assert code.tolist() == [rl.X265_MAX, 0]


def test_the_hadamard_transform_is_orthonormal_and_inverted_within_a_step():
    """The layer's picture is the Hadamard of each 2x2 quad: energy (squared error, PSNR) is the same in
    both domains, and codes decode back to the residual within the scale's step."""
    rng = np.random.default_rng(1)
    res = np.rint(rng.normal(0, 300, size=(4, 6, 10)))
    pic = rl.analyse(res, "hadamard")
    assert pic.shape == (12, 20) and np.isclose(np.sum(pic ** 2), np.sum(res ** 2))
    flat = np.full((4, 6, 10), 7.0)  # a flat quad is all mean: three tiles of zeros
    assert np.allclose(rl.untile(rl.analyse(flat, "hadamard"))[1:], 0)
    for scale in (0.5, 1.0, 2.7):
        back = rl.synthesise(rl.to_code(pic, scale), scale, "hadamard")
        assert back.shape == res.shape and np.abs(back - res).max() <= scale + 0.5
        assert np.array_equal(rl.synthesise(rl.to_code(rl.analyse(res, "none"), scale), scale, "none"),
                              rl.untile(rl.from_code(rl.to_code(rl.tile(res), scale), scale)))


def test_direct_coding_transforms_only_targets_its_scale_reaches():
    """The transform doubles direct coding's scale: a target near x265's finest step on it codes the
    planes as they are; the chain's small residuals always transform; lossless never does."""
    from conftest import make_info

    info = make_info(bits=14)
    low, high = LayerSettings(target_psnr=45.0), LayerSettings(target_psnr=58.0)
    assert rl.layer_transform(low, "direct", info) == "hadamard"
    assert rl.layer_transform(high, "direct", info) == "none"
    assert rl.layer_transform(high, "chain", info) == "hadamard"
    assert rl.layer_transform(LayerSettings(crf=4), "direct", info) == "hadamard"
    assert LayerSettings(codec="ffv1").transform == "none"
    assert rl.layer_transform(LayerSettings(target_psnr=45.0, transform="none"), "chain", info) == "none"
    with pytest.raises(ValueError, match="QP -2"):  # x265 would not check it: a negative QP crashed it
        LayerSettings(target_psnr=45.0).codec_options(qp=-2)


@pytest.mark.parametrize("transform", ["hadamard", "none"])
def test_both_transforms_round_trip_and_write_their_format(mlv_factory, tmp_path, transform):
    """A transformed layer is format 6 and says so; an untransformed one is still written at the
    version before (older readers open it) and both decode to the encoder's reconstructions."""
    path, info, mosaics = _mlv(mlv_factory, n=4)
    rvd = tmp_path / "t.rvd"
    enc = encode(path, rvd, EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=48.0, predictor="chain",
                                                                  transform=transform), refine="off"))
    m = RvdFile(rvd).manifest
    assert m["raw_layer"].get("transform", "none") == transform
    assert (m["format_version"] == 6) == (transform == "hadamard")
    res = decode(rvd, tmp_path / "out")
    got = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(_decoded(tmp_path / "out", 4), mosaics)]
    assert np.allclose(got, enc.layer["psnr_black"], atol=1e-6) and not any("CRC" in n for n in res.notes)


def _mlv(mlv_factory, n=8, **kw):
    return mlv_factory(n=n, width=128, height=96, **kw)


def _decoded(out, n):
    return [read_dng(out / frame_name("clip", i))[0] for i in range(n)]


def test_target_psnr_round_trip_is_closed_loop(mlv_factory, tmp_path):
    path, info, mosaics = _mlv(mlv_factory)
    target = 50.0
    rvd = tmp_path / "t.rvd"
    enc = encode(path, rvd, EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=target, predictor="chain"),
                                          refine="off"))
    f = RvdFile(rvd)
    lay = f.manifest["raw_layer"]
    assert f.manifest["keyframes"] == [] and lay["idr"] == [0] and f.sizes()["raw_layer_bytes"] > 0
    assert f.sizes()["keyframe_bytes"] == 0  # keyframes are intra frames of the layer, not DNGs
    res = decode(rvd, tmp_path / "out")
    frames = _decoded(tmp_path / "out", len(mosaics))
    got = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(frames, mosaics)]
    # the decoder rebuilt exactly the encoder's reconstructions (same PSNR, same CRC, no note)
    assert np.allclose(got, enc.layer["psnr_black"], atol=1e-6)
    assert not any("CRC" in n for n in res.notes)
    assert min(got) >= target - 0.5, got
    assert np.mean(got) <= target + 1.5, got
    # the IDR's scale came from trial encodes: it lands just above the target (at the P-frames' scale an
    # IDR landed 0.8-3.2 dB above), unless its prediction alone is already there
    if enc.layer["prediction_psnr_black"][0] < target:
        assert target - 0.3 <= got[0] <= target + 0.6, got


@pytest.mark.parametrize("refine", ["off", "blocks"])
def test_lossy_keyframes_code_only_the_keyframes_and_decode_closed_loop(mlv_factory, tmp_path, refine):
    """``--keyframe-psnr``: the paper's mode (``refine off``) or the default (block refinement with gains,
    adaptive calibration) with its keyframes coded by x265 instead of lossless DNGs: a picture for each
    keyframe only, each at its target, the rest the chain alone; encoder and decoder rebuild the same
    frames (CRCs), also from a later keyframe, and the RAW part is smaller than the lossless keyframes'."""
    import av

    path, info, mosaics = _mlv(mlv_factory, n=7)
    target = 50.0
    calibration = "keyframe" if refine == "off" else "auto"
    rvd = tmp_path / "k.rvd"
    enc = encode(path, rvd, EncodeOptions(raw_layer=LayerSettings(target_psnr=target, keyframes_only=True),
                                          keyframe_interval=3, refine=refine, calibration=calibration))
    f = RvdFile(rvd)
    m, lay = f.manifest, f.manifest["raw_layer"]
    assert lay["keyframes_only"] is True and lay["intra"] == lay["idr"] == [0, 3, 6]
    assert [bool(sc) for sc in lay["scales"]] == [i % 3 == 0 for i in range(7)]
    assert m["keyframes"] == [] and f.sizes()["keyframe_bytes"] == 0
    if refine == "blocks":  # nothing is coded between the keyframes: the side information stays as without a layer
        assert m["refine"].get("gains") and m["calibration"]["mode"] in ("keyframe", "adaptive")
    with av.open(str(rvd)) as c:
        assert sum(1 for p in c.demux(c.streams.video[1]) if p.size) == sum(len(sc) for sc in lay["scales"])
    res = decode(rvd, tmp_path / "out")
    assert not any("CRC" in n for n in res.notes), res.notes
    got = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(_decoded(tmp_path / "out", 7), mosaics)]
    assert np.allclose(got, enc.layer["psnr_black"], atol=1e-6)
    assert all(got[k] >= target - 0.5 for k in (0, 3, 6)), got
    part = decode(rvd, tmp_path / "part", DecodeOptions(start=4, stop=6))  # from the keyframe at 3
    assert part.frames == 2 and not any("CRC" in n for n in part.notes)
    for i in (4, 5):
        assert (tmp_path / "part" / frame_name("clip", i)).read_bytes() == \
            (tmp_path / "out" / frame_name("clip", i)).read_bytes()
    paper = tmp_path / "p.rvd"
    encode(path, paper, EncodeOptions(keyframe_interval=3, refine=refine, calibration=calibration))
    lossless = RvdFile(paper).sizes()
    assert f.sizes()["raw_part_bits_per_pixel"] < lossless["raw_part_bits_per_pixel"] / 2


def test_targets_relative_to_the_measured_noise_floor(mlv_factory, tmp_path):
    """``--keyframe-psnr auto`` and ``--target-psnr floor-N``: the encoder measures the floor on the first
    frame (as bench does) and records the absolute target beside the offset it came from."""
    from rawvid.noise import measure_clip_noise
    from rawvid.rawlayer import FLOOR_TARGET_RANGE, KEYFRAME_FLOOR_DB

    path, info, mosaics = _mlv(mlv_factory, n=3)
    floor = measure_clip_noise(mosaics[0], info)[1]
    assert 30 < floor < 70
    for args, offset in ((("--keyframe-psnr", "auto"), KEYFRAME_FLOOR_DB), (("--target-psnr", "floor-3"), -3.0)):
        rvd = tmp_path / "a.rvd"
        res = run_cli("encode", path, "-o", rvd, "--refine", "off", "-f", *args)
        assert res.returncode == 0, res.stderr
        m = RvdFile(rvd).manifest
        assert m["noise_floor_db"] == round(floor, 3)  # rawvid info shows it: what floor-N is relative to
        want = round(min(max(floor + offset, FLOOR_TARGET_RANGE[0]), FLOOR_TARGET_RANGE[1]), 2)
        assert m["raw_layer"]["target_psnr"] == want and m["raw_layer"]["target_floor_offset"] == offset
        assert (m["video"]["crf"] == 16) == (args[0] == "--keyframe-psnr")  # lossy keyframes: the paper's sRGB
        assert ("crf_pilot" in m["video"]) == (args[0] == "--target-psnr")  # a target: the encoder chose it
        info_out = " ".join(run_cli("info", rvd).stdout.replace("│", " ").split())  # the table's cells, unwrapped
        assert f"noise floor {floor:.2f} dB" in info_out and f"the noise floor {offset:+g} dB" in info_out
    for args, message in ((("--keyframe-psnr", "45", "--target-psnr", "45"), "choose one of"),
                          (("--keyframe-psnr", "loud"), "takes a PSNR in dB or floor[+-N]"),
                          (("--target-psnr", "floor*3"), "takes a PSNR in dB or floor[+-N]"),
                          (("--target-psnr", "floor+90"), "within 40 dB of the floor"),
                          (("--keyframe-psnr", "500"), "--keyframe-psnr 500.0 is outside")):
        assert_clean_error_text(run_cli("encode", path, "-o", tmp_path / "x.rvd", *args), message)


def test_frames_the_prediction_reaches_have_no_picture_and_decode_alike(tmp_path):
    """A P-frame whose prediction alone clears the aim costs no picture in the layer track (format 4):
    the decoder's reconstruction is its own prediction, the encoder's too, so the closed loop holds
    and the track holds one picture per pass."""
    import av

    from conftest import make_info, make_mosaic
    from rawvid.mlv import MLVWriter

    info = make_info(width=128, height=96)
    base = make_mosaic(info, seed=0)
    path = tmp_path / "clip.MLV"
    with MLVWriter(path, info) as w:
        for i in range(6):
            w.write_frame(base, number=i)
    rvd = tmp_path / "s.rvd"
    enc = encode(path, rvd, EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=30.0, predictor="chain"),
                                          refine="off"))
    lay = RvdFile(rvd).manifest["raw_layer"]
    skipped = [i for i, sc in enumerate(lay["scales"]) if not sc]
    assert skipped and 0 not in skipped
    assert all(enc.layer["prediction_psnr_black"][i] >= 30.0 + 0.6 for i in skipped)
    with av.open(str(rvd)) as c:
        pictures = sum(1 for p in c.demux(c.streams.video[1]) if p.size)
    assert pictures == sum(len(sc) for sc in lay["scales"])
    res = decode(rvd, tmp_path / "out")
    got = [psnr_black(d, base, info.cfa, info.black, info.white) for d in _decoded(tmp_path / "out", 6)]
    assert np.allclose(got, enc.layer["psnr_black"], atol=1e-6) and not any("CRC" in n for n in res.notes)
    res = decode(rvd, tmp_path / "part", DecodeOptions(start=3, stop=6))  # from the IDR, through the gaps
    assert res.frames == 3


@pytest.mark.parametrize("predictor", ["direct", "auto"])
def test_direct_and_auto_predictors_round_trip(mlv_factory, tmp_path, predictor):
    path, info, mosaics = _mlv(mlv_factory, n=6)
    rvd = tmp_path / "d.rvd"
    enc = encode(path, rvd, EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=48.0, predictor=predictor),
                                          refine="off"))
    lay = RvdFile(rvd).manifest["raw_layer"]
    assert lay["predictor"]["mode"] == enc.layer["predictor"] in ("chain", "direct")
    if predictor == "auto":  # the pilot coded the first frames both ways and kept the cheaper
        pilot = lay["pilot"]
        assert pilot["chosen"] == enc.layer["predictor"]
        assert pilot[pilot["chosen"]]["cost"] <= min(pilot["chain"]["cost"], pilot["direct"]["cost"])
        assert all(pilot[k]["worst_psnr_black"] >= 48.0 or pilot[k]["crf"] == 0 for k in ("chain", "direct"))
        # the layer codes with the transform the pilot kept: the chain's residual was also coded without
        # it, and kept so only where that cost less at the target
        assert lay.get("transform", "none") == pilot["transform"]
        if pilot["chosen"] == "chain":
            alt = pilot["chain"]["untransformed"]
            assert (pilot["transform"] == "none") == (alt["bytes"] == pilot["chain"]["bytes"] and alt["worst_psnr_black"]
                                                      >= 48.0 + rctl.AIM_DB)
    res = decode(rvd, tmp_path / "out")
    got = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(_decoded(tmp_path / "out", 6), mosaics)]
    assert np.allclose(got, enc.layer["psnr_black"], atol=1e-6) and not res.notes


def test_target_holds_when_frames_after_the_pilot_turn_hard(tmp_path):
    """The pilot sees 4 frames the prediction alone covers; the next 4 carry texture the 8-bit sRGB
    cannot: the chain's QP (capped near direct coding's) must still let the layer reach the target."""
    from conftest import make_info, make_mosaic
    from rawvid.mlv import MLVWriter
    from rawvid.layer_pilot import CHAIN_QP_HEADROOM

    info = make_info(width=128, height=96)
    rng = np.random.default_rng(5)
    mosaics = []
    for i in range(8):
        m = make_mosaic(info, seed=i).astype(np.float64)
        if i >= 4:
            m += rng.normal(0, (info.white - info.black) * 0.05, size=m.shape)
        mosaics.append(np.clip(np.round(m), 0, (1 << info.bits) - 1).astype(np.uint16))
    path = tmp_path / "hard.MLV"
    with MLVWriter(path, info) as w:
        for i, m in enumerate(mosaics):
            w.write_frame(m, number=i)
    target = 38.0
    enc = encode(path, tmp_path / "h.rvd", EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=target,
                                                                                 predictor="chain"), refine="off"))
    pilot = RvdFile(tmp_path / "h.rvd").manifest["raw_layer"]["pilot"]
    assert min(enc.layer["prediction_psnr_black"][:4]) > target + 1  # the pilot's frames: predicted
    assert max(enc.layer["prediction_psnr_black"][4:]) < target - 5  # the rest: not
    # capped over direct coding's QP as a picture of the chain's kind (the Hadamard picture spans twice the range)
    shift = round(6 * math.log2(rl.transform_gain(pilot["direct"].get("transform", "none"))
                                / rl.transform_gain("hadamard")))
    assert pilot["chain"]["qp"] <= pilot["direct"]["qp"] + shift + CHAIN_QP_HEADROOM
    assert min(enc.layer["psnr_black"]) >= target - 0.5, enc.layer["psnr_black"]


def test_raw_crf_and_frame_range_and_resume(mlv_factory, tmp_path):
    path, info, mosaics = _mlv(mlv_factory, n=9)
    rvd = tmp_path / "c.rvd"
    encode(path, rvd, EncodeOptions(raw_layer=LayerSettings(crf=10, predictor="chain"), refine="off",
                                    keyframe_interval=4))
    lay = RvdFile(rvd).manifest["raw_layer"]
    assert lay["idr"] == [0, 4, 8]
    decode(rvd, tmp_path / "all")
    full = _decoded(tmp_path / "all", 9)
    decode(rvd, tmp_path / "part", DecodeOptions(start=5, stop=7))  # starts at the IDR at frame 4
    assert sorted(p.name for p in (tmp_path / "part").glob("*.dng")) == [frame_name("clip", 5), frame_name("clip", 6)]
    for i in (5, 6):
        assert np.array_equal(read_dng(tmp_path / "part" / frame_name("clip", i))[0], full[i])
    # resume after frame 5: byte-identical DNGs
    decode(rvd, tmp_path / "res", DecodeOptions(stop=6))
    decode(rvd, tmp_path / "res", DecodeOptions(resume=True))
    for i in range(9):
        assert (tmp_path / "res" / frame_name("clip", i)).read_bytes() == (tmp_path / "all" / frame_name("clip", i)).read_bytes()


def test_lossless_raw_is_bit_exact_through_libraw(mlv_factory, tmp_path):
    import rawpy

    path, info, mosaics = mlv_factory(n=4, width=320, height=192)
    rvd = tmp_path / "l.rvd"
    encode(path, rvd, EncodeOptions(raw_layer=LayerSettings(codec="ffv1")))
    decode(rvd, tmp_path / "out")
    for i, m in enumerate(mosaics):
        with rawpy.imread(str(tmp_path / "out" / frame_name("clip", i))) as r:
            assert np.array_equal(r.raw_image, m)
    from rawvid.dng import encode_dng

    lj92 = sum(len(encode_dng(m, info, compress=True)) for m in mosaics)
    # the layer alone is smaller (whole files on real clips: benchmarks/results/rd_*.json; on a
    # 128x96 clip the sRGB track and the container's fixed costs weigh too much)
    assert RvdFile(rvd).sizes()["raw_layer_bytes"] < lj92


@pytest.mark.parametrize("gop", [None, 1])
def test_lossless_layer_decodes_from_a_keyframe_inside_ffv1s_group(mlv_factory, tmp_path, monkeypatch, gop):
    """FFV1 carries its coder's states across pictures (rawlayer.FFV1_GOP): decoding from a RAW keyframe
    that is not an FFV1 keyframe reads the packets before it, and every frame comes out bit-exact; a
    layer written before session 20 (every picture an FFV1 keyframe, ``gop`` 1) decodes alike."""
    import av

    import rawvid.rawlayer as rl_mod

    if gop is not None:
        monkeypatch.setattr(rl_mod, "FFV1_GOP", gop)
    FFV1_GOP = rl_mod.FFV1_GOP
    path, info, mosaics = _mlv(mlv_factory, n=7)
    rvd = tmp_path / "g.rvd"
    encode(path, rvd, EncodeOptions(raw_layer=LayerSettings(codec="ffv1", predictor="chain"), keyframe_interval=3,
                                    refine="off"))
    assert RvdFile(rvd).manifest["raw_layer"]["intra"] == [0, 3, 6]
    with av.open(str(rvd)) as c:
        keys = [p.is_keyframe for p in c.demux(c.streams.video[1]) if p.size]
    assert keys == [i % FFV1_GOP == 0 for i in range(7)]  # one FFV1 keyframe: frames 3 and 6 lean on 0-2
    res = decode(rvd, tmp_path / "part", DecodeOptions(start=4, stop=7))
    assert res.frames == 3 and not res.notes
    for i in range(4, 7):
        assert np.array_equal(read_dng(tmp_path / "part" / frame_name("clip", i))[0], mosaics[i])
    if FFV1_GOP > 2:  # a manifest that understates the interval: refused, not a list grown with the clip
        from conftest import with_manifest_text

        from rawvid.checksums import sealed_json

        m = copy.deepcopy(RvdFile(rvd).manifest)
        m["raw_layer"]["options"]["g"] = "2"
        with_manifest_text(rvd, tmp_path / "short.rvd", sealed_json(m))
        with pytest.raises(FormatError, match="no FFV1 keyframe in the 2 pictures before frame 2"):
            decode(tmp_path / "short.rvd", tmp_path / "short", DecodeOptions(start=4, stop=7))


def test_ffprobe_style_listing_shows_both_tracks(mlv_factory, tmp_path):
    import av

    path, info, _ = _mlv(mlv_factory, n=3)
    rvd = tmp_path / "p.rvd"
    encode(path, rvd, EncodeOptions(raw_layer=LayerSettings(crf=20), refine="off"))
    with av.open(str(rvd)) as c:
        videos = [s for s in c.streams if s.type == "video"]
        assert [s.codec_context.name for s in videos] == ["hevc", "hevc"]
        assert videos[0].codec_context.pix_fmt.startswith("yuv444p")  # the sRGB track stays first
        assert videos[1].codec_context.pix_fmt == "gray12le"
        assert "RAW layer" in videos[1].metadata.get("title", "")


def _layer_packet_offsets(rvd):
    """File offsets of the RAW layer's packets (Matroska SimpleBlocks of track 2)."""
    from rawvid import container as ct

    hits = []
    with open(rvd, "rb") as f:
        lay = ct.scan(f, str(rvd))
        data = f.seek(0) or f.read()
    start = 0
    while True:  # SimpleBlock ID 0xA3, a 1-byte track number 0x82 after the size
        k = data.find(b"\xa3", start)
        if k < 0:
            break
        start = k + 1
        n = 8 - data[k + 1].bit_length() + 1 if data[k + 1] else 0
        if 1 <= n <= 8 and k + 1 + n < len(data) and data[k + 1 + n] == 0x82:
            hits.append(k + 1 + n + 4)
    assert lay.track_types
    return hits


def test_corrupt_or_truncated_layer_is_refused(mlv_factory, tmp_path):
    path, info, _ = _mlv(mlv_factory, n=6)
    rvd = tmp_path / "x.rvd"
    encode(path, rvd, EncodeOptions(raw_layer=LayerSettings(crf=8), refine="off"))
    data = bytearray(rvd.read_bytes())
    offsets = _layer_packet_offsets(rvd)
    assert len(offsets) >= 6
    for off in offsets[2:]:
        for j in range(off, min(off + 40, len(data))):
            data[j] ^= 0x5A
    bad = tmp_path / "bad.rvd"
    bad.write_bytes(bytes(data))
    res = run_cli("decode", bad, "-o", tmp_path / "o1")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "bad.rvd" in res.stderr


def test_layer_manifest_is_checked():
    good = {"codec": "hevc", "scales": [[4.0], [4.0, 2.0]], "idr": [0], "intra": [0], "crc32": [1, 2],
            "predictor": {"mode": "chain", "method": "global-fit"}}
    lay = rl.parse_layer({"raw_layer": good}, 2, "f.rvd")
    assert lay.passes == [1, 2]
    assert rl.parse_layer({"raw_layer": {**good, "scales": [[4.0], []]}}, 2, "f.rvd").passes == [1, 0]
    lay.load_maps(np.full(115, 0.5, "<f2").tobytes(), 115, "f.rvd")
    for data in (b"", np.full(115, np.nan, "<f2").tobytes(), np.zeros(116, "<f2").tobytes()):
        with pytest.raises(FormatError, match="f.rvd"):
            lay.load_maps(data, 115, "f.rvd")
    cases = [("codec", "x264"), ("scales", [[4.0]]), ("scales", [[1e9], [1.0]]), ("scales", [[True], [1.0]]),
             ("idr", [1]), ("intra", [5]), ("intra", [0, 0]), ("crc32", [1]), ("crc32", [1, -2]),
             ("scales", [[1.0] * (rl.MAX_PASSES + 1), [1.0]]), ("scales", "4"), ("predictor", None),
             ("predictor", {"mode": "x"}),
             ("predictor", {"mode": "chain", "method": "network", "model": 3}),
             ("scales", [[], [4.0]]), ("transform", "dct"), ("transform", ["hadamard"])]
    assert rl.parse_layer({"raw_layer": {**good, "transform": "hadamard"}}, 2, "f.rvd").transform == "hadamard"
    with pytest.raises(FormatError, match="lossless"):
        rl.parse_layer({"raw_layer": {**good, "codec": "ffv1", "scales": [[1.0], [1.0]], "transform": "hadamard"}},
                       2, "f.rvd")
    for key, value in cases:
        with pytest.raises(FormatError, match="f.rvd"):
            rl.parse_layer({"raw_layer": {**good, key: value}}, 2, "f.rvd")
    ffv1 = {**good, "codec": "ffv1", "scales": [[1.0], [1.0]]}
    assert rl.parse_layer({"raw_layer": {**ffv1, "options": {"g": "16"}}}, 2, "f.rvd").gop == 16
    assert rl.parse_layer({"raw_layer": ffv1}, 2, "f.rvd").gop == 1  # as every layer before session 20
    for g in ("0", "-1", 16, "1e3", str(rl.MAX_FFV1_GOP + 1), "٣"):
        with pytest.raises(FormatError, match="options.g"):
            rl.parse_layer({"raw_layer": {**ffv1, "options": {"g": g}}}, 2, "f.rvd")


def test_layer_needs_every_raw_frame(camera_pair, tmp_path):
    video, dng = camera_pair
    res = run_cli("encode", "--video", video, "--raw", dng, "-o", tmp_path / "v.rvd", "--target-psnr", "45")
    assert_clean_error_text(res, "RAW layer needs the RAW of every frame")
    res = run_cli("encode", "--video", video, "--raw", dng, "-o", tmp_path / "v.rvd", "--raw-crf", "10",
                  "--lossless-raw")
    assert_clean_error_text(res, "choose one of")


def test_rate_controller_follows_misses_within_its_bounds():
    rc = rctl.RateController(50.0, lo=1.0, hi=16.0)
    assert rc.first_guess(4.0) == 4.0
    rc.observe(4.0, 45.0)
    assert 1.0 <= rc.scale < 4.0  # missed: finer next time
    rc.observe(rc.scale, 60.0)
    assert rc.scale <= 1.25 * 4.0  # far above: grows, but slowly
    for _ in range(40):
        rc.observe(rc.scale, 70.0)
    assert rc.scale == 16.0  # never past its bound
    assert rc.top_up_scale(8.0, 49.9) <= 8.0 * rctl.TOP_UP_STEP  # a top-up pass is finer by at least a step
    assert rc.top_up_scale(8.0, 44.0) < rc.top_up_scale(8.0, 49.0)  # and by more for a larger miss
    assert rc.top_up_scale(8.0, 49.0, 3) < rc.top_up_scale(8.0, 49.0, 2) < rc.top_up_scale(8.0, 49.0)  # and per try


def test_distortion_model_is_monotone_and_inverts():
    c = rctl.dct_matrix(8)
    assert np.allclose(c @ c.T, np.eye(8))  # orthonormal: energies in DN^2, as the PSNR's MSE
    rng = np.random.default_rng(0)
    res = rng.normal(0, 20, (64, 96)) + np.kron(rng.normal(0, 200, (8, 12)), np.ones((8, 8)))
    spec = rctl.Spectrum.of(res)
    assert spec.mean == pytest.approx(np.mean(res[:64, :96] ** 2), rel=1e-9)  # Parseval: nothing coded, all lost
    ts = [1.0, 10.0, 100.0, 1e3, 1e4]
    mses = [spec.mse(t) for t in ts]
    assert all(a < b for a, b in zip(mses, mses[1:])) and mses[-1] <= spec.mean
    for t in ts[:-1]:
        assert spec.noise_power(spec.mse(t)) == pytest.approx(t, rel=1e-3)
    assert spec.noise_power(2 * spec.mean) is None  # the prediction alone reaches it: nothing to code
    big = rctl.Spectrum.of(rng.normal(0, 5, (1200, 1600)))  # large frames: a regular subsample of blocks
    assert len(big.energy) <= rctl.MODEL_SAMPLES and big.mean == pytest.approx(25, rel=0.02)


def test_rate_controller_model_lands_the_next_frame():
    """Learnt on one frame, the model's scale for a frame with twice the noise lands it on the aim
    (a quantiser that behaves as the model says: the model is then exact)."""
    rng = np.random.default_rng(1)
    peak = 4000.0

    def coded_psnr(spec, scale, gain=3.0):  # what x265 would give, as the model has it
        return 10 * np.log10(peak ** 2 / spec.mse(gain * scale ** 2))

    rc = rctl.RateController(45.0, lo=0.25, hi=64.0, peak=peak)
    a, b = rctl.Spectrum.of(rng.normal(0, 30, (128, 128))), rctl.Spectrum.of(rng.normal(0, 60, (128, 128)))
    rc.observe(4.0, coded_psnr(a, 4.0), inter=True, gain=a.gain_at(coded_psnr(a, 4.0), 4.0, peak))
    s = rc.first_guess(4.0, b)
    assert coded_psnr(b, s) == pytest.approx(45.0 + rctl.AIM_DB, abs=0.02)
    assert rc.first_guess(4.0, rctl.Spectrum.of(rng.normal(0, 0.01, (128, 128)))) == 64.0  # nothing to code


def test_rate_controller_smooths_a_gain_that_swings():
    """A gain that alternates between frames (x265's dead zone at coarse scales) is followed at
    GAIN_WEIGHT: the guess lands between the two, not on the last frame's, so it cannot swing with it."""
    rng = np.random.default_rng(2)
    peak = 4000.0
    spec = rctl.Spectrum.of(rng.normal(0, 30, (128, 128)))

    def coded_psnr(scale, gain):
        return 10 * np.log10(peak ** 2 / spec.mse(gain * scale ** 2))

    rc = rctl.RateController(45.0, lo=0.25, hi=64.0, peak=peak)
    for gain in (1.0, 4.0, 1.0, 4.0):
        rc.observe(4.0, coded_psnr(4.0, gain), inter=True, gain=spec.gain_at(coded_psnr(4.0, gain), 4.0, peak))
    assert 1.0 < rc.gain < 4.0
    want = 1.0 ** (1 - rctl.GAIN_WEIGHT) * 4.0 ** rctl.GAIN_WEIGHT  # after 1 then 4, at the weight
    rc = rctl.RateController(45.0, lo=0.25, hi=64.0, peak=peak)
    for gain in (1.0, 4.0):
        rc.observe(4.0, coded_psnr(4.0, gain), inter=True, gain=spec.gain_at(coded_psnr(4.0, gain), 4.0, peak))
    assert rc.gain == pytest.approx(want, rel=1e-3)
    # a gain that moved against a scale that moved (new content: an exposure step) is taken whole
    s = 4.0 / rctl.GAIN_MOVED
    rc.observe(s, coded_psnr(s, 40.0), inter=True, gain=spec.gain_at(coded_psnr(s, 40.0), s, peak))
    assert rc.gain == pytest.approx(40.0, rel=1e-3)


def test_intra_scale_keeps_the_largest_trial_that_reaches_the_aim():
    rng = np.random.default_rng(2)
    res = rng.normal(0, 40, (64, 64))
    spec = rctl.Spectrum.of(res)
    calls = []

    def trial(s):  # an encoder 0.4 dB better than the model says
        calls.append(s)
        return 10 * np.log10(4000.0 ** 2 / spec.mse(2.0 * s * s)) + 0.4

    s, trials = rctl.intra_scale(trial, res, 50.0, 4000.0, 0.5, 64.0, 4.0, spec)
    assert len(calls) == len(trials) <= rctl.INTRA_TRIALS and trials[0][0] == 4.0
    assert trial(s) >= 50.0 and s == max(t[0] for t in trials if t[1] >= 50.0)
    assert trial(s) < 50.3  # and it lands close


def test_intra_scale_steps_off_a_plateau_at_the_nominal_slope():
    """Two trials on one of x265's plateaus (scales 5.53 and 5.45 both 49.97 dB, as measured): their
    secant is nearly flat and had sent the third trial to 0.74 (68 dB, kept as the only one over the
    aim). The nominal 20 dB per decade steps just past the plateau instead."""
    res = np.random.default_rng(3).normal(0, 40, (64, 64))

    def trial(s):  # about 20 dB per decade, flat between 5.4 and 5.6
        return 49.97 + 0.02 * (s - 5.4) if 5.4 <= s <= 5.6 else 64.5 - 20 * np.log10(s) - 0.5 * (s > 5.6)

    s, trials = rctl.intra_scale(trial, res, 50.1, 4000.0, 0.5, 16.0, 5.529, rctl.Spectrum.of(res))
    assert [round(t, 3) for t, _ in trials[:1]] == [5.529] and len(trials) <= rctl.INTRA_TRIALS
    assert all(2.7 <= t <= 11.0 for t, _ in trials), trials  # never a jump of 7x (the secant's clamp)
    assert 49.6 <= trial(s) <= 50.4


def test_a_fresh_start_after_an_exposure_step_is_scaled_by_trial_encodes(tmp_path, monkeypatch):
    """An exposure step (x1.7, highlights clipped) that the chain cannot follow: the frame starts afresh
    from its own global map (intra, still a P-picture), its scale found by trial encodes as an IDR's
    (the controller's model, learnt before the step, missed such frames by 1-4 dB), and it lands in
    the band; without the step no frame is a fresh start and no trials run after frame 0's."""
    from conftest import make_info, make_mosaic
    from rawvid.mlv import MLVWriter

    info = make_info(width=128, height=96)
    calls: list[float] = []
    real = rctl.intra_scale

    def counted(trial, residual, aim, *rest, **kw):
        calls.append(aim)
        return real(trial, residual, aim, *rest, **kw)

    monkeypatch.setattr(rctl, "intra_scale", counted)
    target, counts = 45.0, {}
    for step in (1.0, 1.7):
        base = make_mosaic(info, seed=0).astype(np.float64)
        mosaics = [np.clip(np.round(info.black + (base - info.black) * (step if i >= 5 else 1.0)), 0, info.white)
                   .astype(np.uint16) for i in range(8)]
        path = tmp_path / f"step{step}.MLV"
        with MLVWriter(path, info) as w:
            for i, m in enumerate(mosaics):
                w.write_frame(m, number=i)
        calls.clear()
        enc = encode(path, tmp_path / f"s{step}.rvd", EncodeOptions(
            video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=target, predictor="chain"), refine="off"))
        lay = RvdFile(tmp_path / f"s{step}.rvd").manifest["raw_layer"]
        counts[step] = len(calls)
        assert min(enc.layer["psnr_black"]) >= target - 0.5, enc.layer["psnr_black"]
        if step == 1.0:
            assert lay["intra"] == [0]
        else:
            assert lay["intra"] == [0, 5] and lay["idr"] == [0]
            assert enc.layer["prediction_psnr_black"][5] < target - 5  # the chain's own guess was far off
    assert counts[1.7] > counts[1.0]


def test_a_pass_that_codes_nothing_is_followed_by_a_trial_scaled_top_up(tmp_path):
    """At a high QP x265's dead zone swallows a residual whole down to some scale: a first pass there gains
    nothing, and a top-up a step finer (0.9x) would gain nothing again. The next scale comes from trial
    encodes of the remaining error: one more pass lands the frame in the band."""
    from conftest import make_info
    from rawvid.layer_coder import STALL_DB, LayerState, code_layer

    info = make_info(width=128, height=96)
    rng = np.random.default_rng(3)
    span = info.white - info.black
    pred = np.full((4, 48, 64), info.black + span // 4, np.uint16)  # 4 planes of a 96x128 mosaic
    truth = np.clip(pred + rng.normal(0, span * 0.01, pred.shape), 0, info.white).astype(np.uint16)
    p_pred = rl.psnr_black(pred, truth, info.black, info.white)
    target = p_pred + 6.0
    settings = LayerSettings(target_psnr=target)
    writer = rl.LayerWriter(tmp_path / "l.mkv", info.width, info.height, 25.0, info.bits, settings, qp=40)
    st = LayerState(settings, "chain", qp=40)
    rc = rctl.RateController(target, 0.25, 64.0, peak=float(span))
    code_layer(writer, rc, st, 0, True, pred, pred, info, 0.0, 4.0)  # an IDR of nothing to code
    rc.gain, rc.scale = None, 64.0  # a controller whose next guess is far too coarse
    recon = code_layer(writer, rc, st, 1, False, pred, truth, info, 0.0, 4.0, p_pred)
    writer.close()
    first, *rest = st.scales[1]
    assert rest and rest[0] < first * 0.5  # not a 0.9x step after the stalled pass
    assert len(st.scales[1]) <= 3
    assert rl.psnr_black(recon, truth, info.black, info.white) >= target - rctl.TOP_UP_DB
    assert STALL_DB > 0


def test_idr_trials_start_from_the_last_probes_step(mlv_factory, tmp_path, monkeypatch):
    """The pilot's probes (a bisection over QPs, per predictor) each code an IDR: the first probe of a
    predictor runs the trial encodes, the later ones code it at the quantiser step they found, and
    the main pass's trials start from it."""
    from rawvid import layer_pilot

    path, _, _ = _mlv(mlv_factory)
    calls = {"trial": 0, "probe": 0}
    trial, probe = rl.LayerWriter.trial, layer_pilot._probe

    def counted_trial(self, img, *rest):
        calls["trial"] += 1
        return trial(self, img, *rest)

    def counted_probe(*a, **kw):
        calls["probe"] += 1
        return probe(*a, **kw)

    monkeypatch.setattr(rl.LayerWriter, "trial", counted_trial)
    monkeypatch.setattr(layer_pilot, "_probe", counted_probe)
    enc = encode(path, tmp_path / "t.rvd", EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=50.0), refine="off"))
    assert calls["probe"] >= 8  # direct and chain, each a bisection
    # direct, chain (+ blocks): once each; a close call's two probes coded again with rate control; main pass
    extended = "extended" in RvdFile(tmp_path / "t.rvd").manifest["raw_layer"]["pilot"]
    assert calls["trial"] <= rctl.INTRA_TRIALS * (3 + 1 + 2 * extended), calls
    assert min(enc.layer["psnr_black"]) >= 50.0 - rctl.TOP_UP_DB


def test_noise_profile_is_measured_and_written(mlv_factory, tmp_path):
    import tifffile

    from rawvid.noise import estimate_noise

    rng = np.random.default_rng(3)
    clean = np.clip(np.linspace(0.05, 0.9, 400)[None, None, :] * np.ones((4, 300, 1)), 0, 1)
    noisy = clean + rng.normal(size=clean.shape) * np.sqrt(3e-4 * clean + 1e-5)
    m = estimate_noise(noisy)
    assert abs(m.scale / 3e-4 - 1) < 0.15 and abs(m.offset / 1e-5 - 1) < 0.5
    # a small frame (a 128x96 mosaic: 168 blocks) still measures its noise, with fewer level bins
    small = 0.4 + 0.1 * np.sin(np.arange(64) / 9.0)[None, None, :] * np.ones((4, 48, 1))
    small = small + rng.normal(size=small.shape) * np.sqrt(1e-5)
    assert abs(estimate_noise(small).variance(np.array([0.4]))[0] / 1e-5 - 1) < 0.3
    path, info, _ = _mlv(mlv_factory, n=3)
    rvd = tmp_path / "n.rvd"
    encode(path, rvd, EncodeOptions(refine="off"))
    noise = RvdFile(rvd).manifest["noise_profile"]
    decode(rvd, tmp_path / "o", DecodeOptions(method="global-fit"))
    with tifffile.TiffFile(tmp_path / "o" / frame_name("clip", 1)) as t:
        assert list(t.pages[0].tags[51041].value) == pytest.approx(noise)


def test_bd_rate():
    from rawvid.rd import bd_rate

    ref = [(0.01, 40.0), (0.02, 43.0), (0.04, 46.0), (0.08, 49.0)]
    assert bd_rate(ref, ref) == pytest.approx(0.0, abs=1e-9)
    half = [(r / 2, p) for r, p in ref]
    assert bd_rate(ref, half) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(ref, [(1.0, 10.0), (2.0, 12.0)]) is None  # no overlap


def test_cli_layered_encode_info_decode(mlv_factory, tmp_path):
    path, info, mosaics = _mlv(mlv_factory, n=4)
    rvd = tmp_path / "cli.rvd"
    res = run_cli("encode", path, "-o", rvd, "--target-psnr", "47", "--refine", "off")
    assert res.returncode == 0, res.stderr
    res = run_cli("info", rvd)
    assert res.returncode == 0 and "RAW layer" in res.stdout and "NoiseProfile" in res.stdout, res.stdout
    shown = " ".join(res.stdout.replace("│", " ").split())
    assert "CRF chosen by the encoder among 24, 28, 32, 36" in shown
    pilot = RvdFile(rvd).manifest["raw_layer"]["pilot"]  # what the pilot chose, and the bytes it foretold
    assert f"chose {pilot['chosen']} on the first 4 frames (the layer foretold for the clip: chain " in shown
    video = RvdFile(rvd).manifest["video"]
    # with --target-psnr and no --crf the encoder chose the sRGB CRF with the smallest foretold whole file
    from rawvid.srgb_pilot import CANDIDATE_CRFS

    foretold = {int(k): v["srgb"] + v["layer"] for k, v in video["crf_pilot"]["foretold_bytes"].items()}
    assert sorted(foretold) == sorted(CANDIDATE_CRFS) and video["crf"] == video["crf_pilot"]["chosen"]
    assert foretold[video["crf"]] == min(foretold.values())
    # where the chain's residual cost less without the quad transform, the candidate says so
    assert all(v.get("transform", "none") == "none" for v in video["crf_pilot"]["foretold_bytes"].values())
    res = run_cli("decode", rvd, "-o", tmp_path / "f")
    assert res.returncode == 0, res.stderr
    got = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(_decoded(tmp_path / "f", 4), mosaics)]
    assert min(got) >= 47 - 0.5, got


def test_resume_with_per_frame_calibration_is_identical(mlv_factory, tmp_path):
    path, info, mosaics = _mlv(mlv_factory, n=6)
    rvd = tmp_path / "pf.rvd"
    encode(path, rvd, EncodeOptions(calibration="per-frame", refine="off",
                                    raw_layer=LayerSettings(codec="ffv1", predictor="chain")))
    decode(rvd, tmp_path / "all")
    decode(rvd, tmp_path / "res", DecodeOptions(stop=3))
    res = decode(rvd, tmp_path / "res", DecodeOptions(resume=True))  # lossless: a CRC mismatch would raise
    assert res.frames == 3
    for i in range(6):
        assert (tmp_path / "res" / frame_name("clip", i)).read_bytes() == (tmp_path / "all" / frame_name("clip", i)).read_bytes()
        assert np.array_equal(read_dng(tmp_path / "res" / frame_name("clip", i))[0], mosaics[i])


def test_srgb_crf_is_chosen_only_when_the_user_gives_none():
    """The command line and the Python API resolve the sRGB's CRF the same way (rawvid.encoder.resolve_video)."""
    from rawvid.cli import encode_options
    from rawvid.codec import resolve_video
    from rawvid.srgb_pilot import CANDIDATE_CRFS, LAYERED_SRGB_CRF, foretell

    kw = dict(keyframe_interval=0, render_mode="stable", codec="h265", preset="medium", lossless=False,
              frame_range=None, fps=None, calibration="auto", refine="auto", model=None, device="auto",
              runtime="auto", raw_crf=None, lossless_raw=False, raw_preset="fast", raw_predictor="auto")

    def resolved(opts):
        video, crfs = resolve_video(opts.video, opts.srgb_crfs, opts.raw_layer)
        return video.crf, crfs

    auto = encode_options(crf=None, target_psnr=45.0, **kw)
    assert resolved(auto) == (LAYERED_SRGB_CRF, CANDIDATE_CRFS)
    # the API's defaults are the command line's
    assert resolved(EncodeOptions(raw_layer=LayerSettings(target_psnr=45.0))) == resolved(auto)
    assert resolved(encode_options(crf=None, target_psnr="floor-3", **kw)) == resolved(auto)
    assert resolved(encode_options(crf=28, target_psnr=45.0, **kw)) == (28, ())
    assert resolved(encode_options(crf=None, target_psnr=None, **kw)) == (16, ())  # no layer: nothing to choose
    assert resolved(EncodeOptions()) == (16, ())
    lossy_keys = encode_options(crf=None, target_psnr=None, keyframe_psnr="auto", **kw)  # the paper's mode's sRGB
    assert resolved(lossy_keys) == (16, ()) and lossy_keys.raw_layer.target_psnr is None
    lossless = encode_options(crf=None, target_psnr=None, **{**kw, "lossless_raw": True})
    assert resolved(lossless) == (LAYERED_SRGB_CRF, ())
    assert resolved(EncodeOptions(raw_layer=LayerSettings(codec="ffv1"))) == resolved(lossless)
    # candidates given with a CRF are tried (the bench's target curves); a lossless preview has none
    given = EncodeOptions(video=VideoSettings.make(crf=32), srgb_crfs=(24, 36), raw_layer=LayerSettings(target_psnr=45.0))
    assert resolved(given) == (32, (24, 36))
    assert resolve_video(VideoSettings.make(lossless=True), None, LayerSettings(target_psnr=45.0))[1] == ()
    # a clip's bytes from its first packets: the intra picture once, the rest's mean per other frame
    assert foretell([1000, 100, 300], 10) == 1000 + 200 * 9 and foretell([500], 1) == 500
    assert foretell([1000, 100, 300], 600) == 3 * 1000 + 200 * 597  # an intra picture every 250 frames


def test_rd_sweep_measures_every_curve_against_direct_coding(mlv_factory, tmp_path):
    """``bench --rd`` end to end on a tiny clip: the references, the paper's mode and a --target-psnr point
    (its sRGB CRF the encoder's own choice), every rate counting the file, savings at the same PSNR."""
    from rawvid.bench import discover
    from rawvid.rd import RDOptions, run_rd
    from rawvid.srgb_pilot import CANDIDATE_CRFS

    from conftest import make_info
    from rawvid.mlv import MLVWriter

    info = make_info(width=192, height=128)  # smooth content: the noise estimate needs flat blocks
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:128, :192].astype(np.float64)
    span = info.white - info.black
    mosaics = [np.clip(np.round(info.black + span * (0.3 + 0.2 * np.sin((x + 2 * i) / 17) * np.cos(y / 23))
                                + rng.normal(0, span * 0.004, size=x.shape)), 0, 16383).astype(np.uint16)
               for i in range(4)]
    path = tmp_path / "smooth.MLV"
    with MLVWriter(path, info) as w:
        for i, m in enumerate(mosaics):
            w.write_frame(m, number=i)
    opts = RDOptions(targets=(-3.0,), paper_crfs=(32,), x265_crfs=(24, 12), x265_qps=(24, 12, 4),
                     jxl_distances=(1.0,), lossless=False, default_point=False, hadamard_crfs=(18, 6),
                     keyframe_targets=(4.0,))
    res = run_rd(discover([path]), opts, tmp_path)
    points = res["_points"]
    assert {p.codec for p in points} == {"x265-bayer", "x265-bayer-qp", "x265-hadamard", "jpegxl", "rawvid-paper",
                                         "rawvid-target", "rawvid-paper-lossykey"}
    (paper,), (lossy,) = ([p for p in points if p.codec == c] for c in ("rawvid-paper", "rawvid-paper-lossykey"))
    assert lossy.bpp_raw < paper.bpp_raw / 2 and lossy.extra["intra"] == [0] and lossy.extra["passes"][1:] == [0] * 3
    assert lossy.extra["srgb_crf"] == paper.extra["srgb_crf"] == 32  # the paper's mode's sRGB, as that point's
    assert lossy.extra["frame_psnr_black"][0] >= lossy.extra["target"] - 0.5  # the keyframe at its target
    coarse, fine = sorted((p for p in points if p.codec == "x265-hadamard"), key=lambda p: p.bpp)
    assert 40 < coarse.psnr_black < fine.psnr_black  # decoded through the inverse transform, finer for more bits
    assert "x265-hadamard" in res["summary"]["bd_rate_vs_x265_bayer_percent"]
    assert "rawvid-target" in res["summary"]["bd_rate_vs_x265_hadamard_percent"]
    target = next(p for p in points if p.codec == "rawvid-target")
    assert target.extra["srgb_crf"] in CANDIDATE_CRFS and 0 < target.bpp_raw < target.bpp
    assert target.min_frame_psnr_black >= target.extra["target"] - 0.5
    for p in points:
        assert p.frames == len(mosaics) and p.bpp > 0 and (p.bpp_raw == p.bpp) == (not p.codec.startswith("rawvid"))
    (row,) = res["target_savings"]
    assert row["target_minus_floor"] == -3.0 and row["bpp_raw"] == target.bpp_raw
    assert 44 < res["floors"][target.clip] < 52  # the 0.4% noise put in: 48 dB
    import cv2

    from rawvid.rd import plot_savings

    png = plot_savings(res["target_savings"], tmp_path / "plots" / "savings.png")  # what --plots adds
    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] > img.shape[0] > 300 and img.std() > 5


def test_savings_are_measured_at_the_same_pooled_psnr_and_at_the_same_worst_frame():
    """A ladder whose hard frame falls 3 dB under its mean: at rawvid's pooled PSNR it needs less than at
    rawvid's worst frame; each saving is against the lower of the two ladders, log-interpolated."""
    from rawvid.rd import RDPoint, savings_at_targets

    def ref(codec, bpp, psnr, worst):
        return RDPoint(codec, "", "c", bpp, bpp, psnr, psnr + 1, worst, 8)

    pts = [ref("x265-bayer-qp", 0.1, 40.0, 37.0), ref("x265-bayer-qp", 0.4, 44.0, 41.0),
           ref("x265-bayer", 0.2, 41.0, 38.0), ref("x265-bayer", 0.3, 42.0, 39.0),
           RDPoint("rawvid-target", "t", "c", 0.3, 0.15, 42.0, 43.0, 41.5, 8, extra={"target": 41.4})]
    (row,) = savings_at_targets(pts, {"c": 44.4})
    assert row["target_minus_floor"] == -3.0
    qp_at_42 = math.exp(np.interp(42.0, [40, 44], np.log([0.1, 0.4])))  # 0.2, under the CRF ladder's 0.3
    assert row["x265_bayer_qp_bpp_same_psnr"] == pytest.approx(qp_at_42)
    assert row["saving_percent"] == pytest.approx((1 - 0.15 / qp_at_42) * 100)
    # the worst frame 41.5: outside the CRF ladder (38-39), on the QP ladder's 37-41 only at its end: none
    assert row["x265_bayer_bpp_same_worst_frame"] is None and row["saving_same_worst_frame_percent"] is None
    pts[1] = ref("x265-bayer-qp", 0.8, 46.0, 43.0)
    (row,) = savings_at_targets(pts, {"c": 44.4})
    qp_worst = math.exp(np.interp(41.5, [37, 43], np.log([0.1, 0.8])))
    assert row["x265_bayer_qp_bpp_same_worst_frame"] == pytest.approx(qp_worst)
    assert row["saving_same_worst_frame_percent"] == pytest.approx((1 - 0.15 / qp_worst) * 100)
    assert row["saving_same_worst_frame_percent"] > row["saving_percent"]


def test_the_pilots_half_steps_coarsen_by_scale_past_the_qp_cap():
    """Up to the cap a half-step is QP h // 2 (odd: the scale x 2^(1/12)); past it the QP stays and only
    the chain's base scale grows, so the quantiser keeps its range for frames the prediction misses."""
    from rawvid.layer_pilot import HALF_QP, half_step

    assert half_step(10, 20) == (5, 1.0) and half_step(11, 20) == (5, HALF_QP)
    assert half_step(20, 20) == (10, 1.0) and half_step(26, 20) == (10, pytest.approx(2 ** 0.5))
    assert half_step(21, 21) == (10, HALF_QP) and half_step(23, 21) == (10, pytest.approx(HALF_QP ** 3))


def test_a_close_call_is_coded_again_on_more_frames(mlv_factory, tmp_path, monkeypatch):
    """Where the predictors' foretold bytes lie within PILOT_EXTEND_RATIO of each other, the main pass's
    pilot codes direct coding and the better chain again on PILOT_EXTEND_FRAMES frames (with the main
    pass's rate control) and chooses on those bytes; the file still decodes to what the encoder made,
    from a range's first frame as from the clip's."""
    from rawvid import layer_pilot

    path, info, mosaics = _mlv(mlv_factory, n=10)
    layer = LayerSettings(target_psnr=48.0)
    monkeypatch.setattr(layer_pilot, "PILOT_EXTEND_RATIO", 1e9)  # every call is close
    enc = encode(path, tmp_path / "e.rvd", EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=layer, refine="off", srgb_crfs=(16,), start=1))
    pilot = RvdFile(tmp_path / "e.rvd").manifest["raw_layer"]["pilot"]
    assert pilot["extended"]["frames"] == layer_pilot.PILOT_EXTEND_FRAMES
    again = [k for k in ("direct", "chain") if "first_bytes" in pilot[k]]
    assert again == ["direct", "chain"] and pilot["chosen"] in again
    assert pilot[pilot["chosen"]]["bytes"] == min(pilot[k]["bytes"] for k in again)
    decode(tmp_path / "e.rvd", tmp_path / "out")
    decoded = [read_dng(p)[0] for p in sorted((tmp_path / "out").glob("*.dng"))]
    got = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(decoded, mosaics[1:])]
    assert len(got) == 9 and np.allclose(got, enc.layer["psnr_black"], atol=1e-6)
    monkeypatch.setattr(layer_pilot, "PILOT_EXTEND_RATIO", 0.0)  # off: the 4-frame pilot decides
    encode(path, tmp_path / "f.rvd", EncodeOptions(raw_layer=layer, refine="off", srgb_crfs=(16,)))
    pilot = RvdFile(tmp_path / "f.rvd").manifest["raw_layer"]["pilot"]
    assert "extended" not in pilot and not any("first_bytes" in v for v in pilot.values() if isinstance(v, dict))


def test_the_main_pass_reuses_the_srgb_pilots_direct_coding(mlv_factory, tmp_path, monkeypatch):
    """Direct coding codes the RAW alone, whatever the sRGB: choosing the sRGB CRF probes it once and
    the main pass's pilot reuses that entry (and its IDR step) instead of probing it again, with the
    same choice and the same file as a pilot that probes it itself."""
    from rawvid import layer_pilot

    path, _, _ = _mlv(mlv_factory)
    probes: list[str] = []
    probe = layer_pilot._probe

    def counted_probe(frames, info, keys, method, layer, predictor, *a, **kw):
        probes.append(predictor)
        return probe(frames, info, keys, method, layer, predictor, *a, **kw)

    monkeypatch.setattr(layer_pilot, "_probe", counted_probe)
    layer = LayerSettings(target_psnr=48.0)
    alone = encode(path, tmp_path / "a.rvd", EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=layer, refine="off"))
    direct_alone = probes.count("direct")
    probes.clear()
    chosen = encode(path, tmp_path / "c.rvd", EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=layer, refine="off",
                                                             srgb_crfs=(16,)))
    assert direct_alone > 0 and probes.count("direct") == direct_alone  # once, in the sRGB pilot
    assert chosen.layer["pilot"]["direct"] == alone.layer["pilot"]["direct"]
    assert RvdFile(tmp_path / "c.rvd").manifest["track_crc32"] == RvdFile(tmp_path / "a.rvd").manifest["track_crc32"]


def test_the_pilots_search_finds_the_bisections_answer_from_any_guess():
    """search_half: on a monotone 'reaches' the answer whatever the guess (and none when nothing
    reaches), in 2 probes from the right guess, never more than bisection plus galloping's bracket."""
    from rawvid.layer_pilot import search_half

    top = 54
    for answer in (-1, 0, 7, 30, top):
        for guess in (None, 0, 5, answer, answer + 1, 53, top):
            probes: list[int] = []

            def reaches(h):
                probes.append(h)
                return h <= answer, ("payload", h)

            best = search_half(reaches, top, guess)
            assert best == (None if answer < 0 else ("payload", answer)), (answer, guess)
            assert len(set(probes)) == len(probes) and len(probes) <= 13
            if guess == answer and 0 <= answer < top:
                assert probes == [answer, answer + 1]
    probes = []
    capped = search_half(lambda h: (probes.append(h) or h <= 40, h), top, 20, cap=lambda: 31)
    assert capped == 30 and max(probes) <= 31  # a cap lowers the top after a probe


def test_info_reads_the_pilots_record_without_trusting_it():
    """`rawvid info` shows the pilot's choice from the manifest, which it reads but does not trust."""
    from rawvid.cli import _pilot_line

    good = {"frames": 4, "chosen": "direct", "direct": {"bytes": 2000.0}, "chain": {"bytes": 4000},
            "extended": {"frames": 8, "ratio": 0.5}}
    assert _pilot_line(good) == ("chose direct on the first 4 frames (the layer foretold for the clip: chain 4.00 KB, "
                                 "direct 2.00 KB); a close call, coded again on 8 frames")
    for bad in (None, [1], {"chosen": 3}, {}):
        assert _pilot_line(bad) is None
    odd = {"chosen": "chain", "frames": "4", "chain": {"bytes": "x"}, "direct": {"bytes": True}, "extended": [8]}
    assert _pilot_line(odd) == "chose chain on the first ? frames"
