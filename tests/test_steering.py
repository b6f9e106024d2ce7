"""Per-frame QP steering of a directly coded RAW layer: dither, real x265 offsets, the controllers."""
from __future__ import annotations

import math

import numpy as np

from rawvid import rawlayer as rl
from rawvid.video import VideoSettings
from rawvid.codec import EncodeOptions, decode, encode
from rawvid.container import RvdFile
from rawvid.metrics import psnr_black
from rawvid.rawlayer import LayerSettings
from rawvid.ratecontrol import OFFSET_GROWTH, OffsetController, clamp_offset, intra_offset
from rawvid.steering import GROUP, dither_rows

from conftest import run_cli
from test_rawlayer import _decoded, _mlv


def test_dither_spreads_a_fraction_of_a_qp_over_the_rows():
    for height in (96, 320, 900):
        rows = math.ceil(height / GROUP)
        for offset in (-2.75, -1.0, 0.0, 0.3, 1.5, 3.9):
            base, extra = dither_rows(height, offset)
            assert base == math.floor(offset) and len(set(extra)) == len(extra)
            assert all(0 <= r < rows for r in extra)
            assert abs(base + len(extra) / rows - offset) <= 1.0 / rows + 1e-9
    _, extra = dither_rows(320, 0.5)  # evenly: every other row, not the top half
    assert np.diff(extra).max() <= 2


def _texture(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    return np.clip(2048 + 600 * np.sin(x / 5.0) * np.cos(y / 7.0) + rng.normal(0, 60, (h, w)), 0, 4095)


def test_offsets_move_x265s_quantiser_both_ways(tmp_path):
    """Real x265: a positive offset codes coarser and smaller, a negative one finer and larger; a picture
    at offset 0 after one without offsets and one with them (the order that crashed x265 when pictures
    without offsets carried no side data) codes as the constant-QP layer would."""
    settings = LayerSettings(target_psnr=45.0)
    out = {}
    for name, offsets in {"coarse": [0.0, 3.0, 3.0], "fine": [0.0, -3.0, -3.0], "zero": [0.0, 1.5, 0.0]}.items():
        w = rl.LayerWriter(tmp_path / f"{name}.mkv", 128, 96, 25.0, 12, settings, None, 22, steered=True)
        sizes, errs = [], []
        for i, o in enumerate(offsets):
            before = w.bytes
            frame = _texture(seed=i).astype(np.uint16)
            dec = w.code(frame, i, i == 0, o)
            sizes.append(w.bytes - before)
            errs.append(float(np.mean((dec.astype(float) - frame) ** 2)))
        w.close()
        out[name] = sizes, errs
    assert out["coarse"][0][1] < out["fine"][0][1] and out["coarse"][1][1] > out["fine"][1][1]
    assert out["coarse"][0][2] < out["fine"][0][2] and out["coarse"][1][2] > out["fine"][1][2]
    # the first picture (offset 0) is the same picture everywhere
    assert out["coarse"][0][0] == out["fine"][0][0] == out["zero"][0][0]


def test_offset_controller_lands_a_drifting_clip():
    """A plant losing 0.1 dB a frame at a fixed offset, 0.75 dB per QP, starting 1.9 dB over: the
    controller coarsens at most OFFSET_GROWTH a frame, then keeps every frame within 0.15 dB of its aim."""
    oc = OffsetController(target=45.0, aim=45.1)
    got = []
    for t in range(20):
        o = oc.next_offset()
        p = 47.0 - 0.1 * t - 0.75 * o
        got.append(p)
        oc.observe(o, p)
    assert all(abs(p - 45.1) < 0.15 for p in got[3:]), got
    assert all(b - a <= OFFSET_GROWTH * 0.75 + 0.1 + 1e-9 for a, b in zip(got[1:], got))  # never faster
    oc2 = OffsetController(target=45.0, aim=45.1)
    oc2.seed(46.5)  # the pilot saw the first P-frame 1.4 dB over at offset 0
    assert oc2.next_offset() == OFFSET_GROWTH  # coarser, but no faster than a frame may grow
    # at QP 0 x265 codes no finer: a frame short of the target does not push the offset under -QP
    oc3 = OffsetController(target=60.0, aim=60.1, lo=0.0)
    for _ in range(5):
        o = oc3.next_offset()
        oc3.observe(o, 53.0)
    assert oc3.next_offset() == 0.0
    # P-frames stay within IP_QP_GAP of the IDR's QP, however far over the target they land
    from rawvid.ratecontrol import IP_QP_GAP

    oc4 = OffsetController(target=45.0, aim=45.1, hi=20.0, qp_hi=20.0)
    oc4.after_idr(-4.0)
    for _ in range(5):
        o = oc4.next_offset()
        oc4.observe(o, 50.0)
    assert oc4.next_offset() == -4.0 + IP_QP_GAP


def test_intra_offset_keeps_the_coarsest_trial_reaching_the_aim():
    calls = []

    def trial(o):
        calls.append(o)
        return 50.0 - 0.8 * o + 0.05 * math.sin(o)

    o, trials = intra_offset(trial, 48.0, 0.0, 0.1)
    assert len(calls) == len(trials) <= 3
    assert trial(o) >= 47.9 and o == max(t[0] for t in trials if t[1] >= 47.9)
    assert clamp_offset(40.0) == 12.0 and clamp_offset(0.33) == 0.3125 and clamp_offset(-5.0, -2.0) == -2.0
    o, trials = intra_offset(trial, 60.0, 0.0, 0.1, lo=-1.0)  # out of reach: the finest allowed, no lower
    assert min(t[0] for t in trials) >= -1.0 and o == -1.0


def test_direct_layer_steered_to_the_target_closed_loop(mlv_factory, tmp_path):
    """``--target-psnr`` with direct coding: the QP steered per frame (x265 CRF mode, qcomp=1, offsets),
    every frame in the band, the decoder rebuilding the encoder's reconstructions."""
    path, info, mosaics = _mlv(mlv_factory, n=8)
    target = 48.0
    rvd = tmp_path / "d.rvd"
    enc = encode(path, rvd, EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=target, predictor="direct"),
                                          refine="off"))
    lay = RvdFile(rvd).manifest["raw_layer"]
    assert "qcomp=1" in lay["options"]["x265-params"] and "aq-mode=0" not in lay["options"]["x265-params"]
    assert lay["qp_steered"] is True
    assert "moved per frame" in run_cli("info", rvd).stdout
    assert len(enc.layer["qp_offsets"]) == 8 and len(set(enc.layer["qp_offsets"])) > 1
    res = decode(rvd, tmp_path / "out")
    got = [psnr_black(d, t, info.cfa, info.black, info.white) for d, t in zip(_decoded(tmp_path / "out", 8), mosaics)]
    assert np.allclose(got, enc.layer["psnr_black"], atol=1e-6) and not res.notes
    assert all(target - 0.3 <= p <= target + 0.6 for p in got), got


def test_raw_under_12_bits_is_spread_over_the_codes_by_direct_coding_and_the_reference():
    """x265 codes nothing finer than QP 0 (about 10 codes at 12 bits): direct coding and x265 on the
    Bayer planes spread a 10-bit RAW over the 12-bit codes; 12 bits and over are as they were."""
    from conftest import make_info
    from rawvid.rd import ladder
    from rawvid.layer_coder import scale_bounds

    assert scale_bounds(make_info(bits=10), "direct")[1] < 0.26
    assert scale_bounds(make_info(bits=12), "direct")[1] == 1.001 and scale_bounds(make_info(), "direct")[1] == 4.006
    assert ladder([30, 2], 14) == [30, 2] and ladder([30, 2], 10) == [42, 30, 14, 2] and max(ladder([45], 10)) == 51


def test_a_10_bit_clip_reaches_a_high_target_in_one_pass(mlv_factory, tmp_path):
    """Unspread, a 10-bit clip's directly coded frames needed top-ups past about 52 dB; spread, x265
    reaches the target at a QP over 0."""
    path, info, mosaics = _mlv(mlv_factory, n=4, bits=10)
    target = 56.0
    enc = encode(path, tmp_path / "t.rvd", EncodeOptions(video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=target,
                                                                                 predictor="direct"),
                                                         refine="off"))
    assert enc.layer["passes"] == [1, 1, 1, 1], enc.layer
    assert all(target - 0.3 <= p <= target + 0.6 for p in enc.layer["psnr_black"]), enc.layer["psnr_black"]
