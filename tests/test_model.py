"""The FAGDN network plumbing with small random models: shapes, CFA packing, padding, tiling, weights, flow."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rawvid.bayer import PLANE_OFFSETS, denormalise, normalise, pack, srgb_half, unpack
from rawvid.errors import RawvidError
from rawvid.flow import backward_warp, compose, dis_flow, flow_to_tensor, warp_error
from rawvid.model import (CONFIGS, FAGDN, FAGDNConfig, count_parameters, load_model, log_exposure_ratio, lowpass,
                          run_network, save_model)

LOCAL_ONLY = FAGDNConfig(widths=(4, 8), bottleneck=8, patches=(4, 4), conf_width=4, global_attention=False)


def _inputs(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand((1, c, h, w), generator=g) for c in (3, 3, 4, 4, 3)]


@pytest.mark.parametrize("cfa", list(PLANE_OFFSETS))
def test_cfa_pack_round_trip(cfa):
    m = np.random.default_rng(1).integers(0, 1 << 14, (6, 10)).astype(np.uint16)
    planes = pack(m, cfa)
    assert planes.shape == (4, 3, 5)
    assert np.array_equal(unpack(planes, cfa), m)
    r, gr, gb, b = (m[dy, dx] for dy, dx in PLANE_OFFSETS[cfa])
    # the R plane sits where the pattern says red is, whatever the layout
    assert planes[0, 0, 0] == r and planes[3, 0, 0] == b and {planes[1, 0, 0], planes[2, 0, 0]} == {gr, gb}


def test_normalise_round_trip_is_exact_for_in_range_values():
    v = np.arange(2048, 15001, dtype=np.uint16).reshape(1, 1, -1)
    assert np.array_equal(denormalise(normalise(v, 2048, 15000), 2048, 15000, 14), v)
    assert denormalise(np.array([1.7, -0.3]), 2048, 15000, 14).tolist() == [16383, 0]


def test_srgb_half_is_an_area_average():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[0, 0] = 255
    half = srgb_half(rgb)
    assert half.shape == (3, 2, 3) and half[0, 0, 0] == pytest.approx(0.25)


@pytest.mark.parametrize("cfg", ["tiny", "fast-key-g2"])
def test_forward_shapes_and_side_outputs(cfg):
    """Training sees a side output per level; inference computes the finest alone, to the same bits."""
    from rawvid.train import TRAIN_CONFIGS

    torch.manual_seed(0)
    net = FAGDN(TRAIN_CONFIGS[cfg])
    for side in net.sides:  # the prior models start with zero side outputs: make them count
        torch.nn.init.normal_(side.weight, std=0.1)
    c = net.config
    g = torch.Generator().manual_seed(2)
    chans = (3, 3, 4, 4, 3) + ((4, 4, 4) if c.prior else ()) + ((4, 3) if c.key_reference else ())
    x = [torch.rand((1, k, 64, 96), generator=g) for k in chans]
    with torch.no_grad():
        train_out = net.train()(*x)
        out = net.eval()(*x)
    assert [tuple(s.shape[-2:]) for s in train_out["sides"]] == [(8, 12), (16, 24), (32, 48), (64, 96)]
    assert len(out["sides"]) == 1 and torch.equal(out["pred"], train_out["pred"])
    assert out["pred"].shape == (1, 4, 64, 96)
    assert out["confidence"].shape == (1, 1, 64, 96)
    assert 0 <= float(out["pred"].min()) and float(out["pred"].max()) <= 1


def test_paper_configuration_size():
    # the authors' definition has about 10.6M parameters; ours must be of the same size
    n = count_parameters(FAGDN(CONFIGS["paper"]))
    assert 8e6 < n < 12e6
    assert CONFIGS["paper"].widths == (32, 64, 128, 256) and CONFIGS["paper"].bottleneck == 512
    assert count_parameters(FAGDN(CONFIGS["small"])) < n


@pytest.mark.parametrize("h,w", [(45, 70), (33, 33), (64, 64)])
def test_padding_any_size(h, w):
    net = FAGDN(CONFIGS["tiny"]).eval()
    with torch.no_grad():
        assert run_network(net, _inputs(h, w)).shape == (1, 4, h, w)


def test_tiling_equals_untiled_for_local_operators():
    torch.manual_seed(0)
    net = FAGDN(LOCAL_ONLY).eval()
    ins = _inputs(160, 224)
    with torch.no_grad():
        full = run_network(net, ins)
        tiled = run_network(net, ins, tile=128, overlap=128)
    assert torch.allclose(full, tiled, atol=1e-5), float((full - tiled).abs().max())


def test_tiling_with_global_attention_is_seamless():
    # global guidance sees each tile, not the frame: close to untiled, and no seam at tile edges
    torch.manual_seed(0)
    net = FAGDN(CONFIGS["tiny"]).eval()
    ins = _inputs(192, 256)
    with torch.no_grad():
        full = run_network(net, ins)
        tiled = run_network(net, ins, tile=128, overlap=64)
    diff = (full - tiled).abs()
    assert float(diff.mean()) < 0.02
    step = (tiled[..., :, 1:] - tiled[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    assert float(step.max()) < 4 * float(step.median()) + 1e-3


def test_weights_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(3)
    net = FAGDN(CONFIGS["tiny"])
    save_model(net, tmp_path / "m.safetensors")
    back = load_model(str(tmp_path / "m.safetensors"))
    assert back.config == net.config
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(RawvidError, match="do not match the configuration"):
        load_model(str(tmp_path / "m.safetensors"), config=CONFIGS["small"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(RawvidError, match="not a safetensors"):
        load_model(str(tmp_path / "bad.safetensors"))
    with pytest.raises(RawvidError, match="model not found"):
        load_model("no-such-model")


def test_warp_identity_and_shift():
    img = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    same, valid = backward_warp(img, torch.zeros(1, 2, 5, 7))
    assert torch.allclose(same, img) and bool(valid.all())
    flow = torch.zeros(1, 2, 5, 7)
    flow[:, 0] = -2  # take each pixel from two columns to the left
    moved, valid = backward_warp(img, flow)
    assert torch.allclose(moved[..., 2:], img[..., :-2])
    assert float(valid[..., :2].sum()) == 0 and float(moved[..., :2].abs().sum()) == 0


def test_chained_flows_add_up_and_the_warp_error_finds_a_wrong_flow():
    shift = torch.zeros(1, 2, 16, 24)
    shift[:, 0] = -1.0  # one column to the left, twice
    both, valid = compose(shift, shift)
    assert torch.allclose(both[:, 0, :, 1:], torch.full((1, 16, 23), -2.0))  # two columns in all
    assert float(both[:, 1].abs().max()) == 0
    assert float(valid[..., 0].sum()) == 0  # the path leaves the frame at the left edge
    g = torch.Generator().manual_seed(0)
    src = torch.rand((1, 3, 16, 24), generator=g)
    tgt, _ = backward_warp(src, both)
    assert float(warp_error(src, both, tgt)[..., 4:-4, 6:-4].max()) < 1e-5  # the right flow: no error
    assert float(warp_error(src, torch.zeros_like(both), tgt)[..., 4:-4, 6:-4].mean()) > 0.1  # the wrong one
    assert float(warp_error(src, both, tgt * 1.5)[..., 4:-4, 6:-4].max()) < 0.05  # an exposure change is not an error


def test_safe_keyframe_flow_runs_the_same_network():
    from rawvid.network import Network

    cfg = FAGDNConfig(widths=(4, 8), bottleneck=8, patches=(4, 4), conf_width=4, prior=True, key_reference=True)
    torch.manual_seed(0)
    model = FAGDN(cfg)
    rng = np.random.default_rng(1)
    srgb = [rng.random((3, 16, 24), dtype=np.float32) for _ in range(3)]
    raw = rng.random((4, 16, 24), dtype=np.float32)
    outs = {}
    for mode in ("direct", "safe"):
        net = Network(model, key_flow=mode)
        net.keyframe(raw, srgb[0])
        a = net.predict(raw, srgb[0], srgb[1])
        outs[mode] = net.predict(a, srgb[1], srgb[2])
        assert outs[mode].shape == (4, 16, 24) and np.isfinite(outs[mode]).all()
    assert net.key_chain is not None and net.key_chain.shape == (1, 2, 16, 24)
    with pytest.raises(ValueError, match="keyframe flow"):
        Network(model, key_flow="sideways")


def test_dis_flow_recovers_a_shift():
    rng = np.random.default_rng(0)
    base = (rng.random((140, 200, 3)) * 255).astype(np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (9, 9), 2)
    source = base[10:130, 10:190]
    target = base[10:130, 7:187]  # target[x] = source[x - 3]
    flow = dis_flow(target, source)
    assert flow.shape == (120, 180, 2)
    assert np.median(flow[20:-20, 20:-20, 0]) == pytest.approx(-3, abs=0.3)
    assert abs(np.median(flow[20:-20, 20:-20, 1])) < 0.3
    assert flow_to_tensor(flow).shape == (1, 2, 120, 180)


def test_lowpass_keeps_flat_planes_and_cuts_white_noise():
    flat = torch.full((1, 4, 16, 16), 0.3)
    assert torch.allclose(lowpass(flat), flat)
    noise = torch.randn((1, 4, 160, 160), generator=torch.Generator().manual_seed(0))
    kept = float(lowpass(noise)[..., 4:-4, 4:-4].var() / noise.var())
    assert kept == pytest.approx((70 / 256) ** 2, rel=0.15)  # sum of the squared [1,4,6,4,1]/16 taps, per axis


KEY_REF = FAGDNConfig(widths=(4, 8), bottleneck=8, patches=(4, 4), conf_width=4, prior=True, key_reference=True)


def _key_step(cfg: FAGDNConfig, gain: float, seed: int = 0) -> list[torch.Tensor]:
    """Inputs of one step whose chained reference is empty and whose keyframe prior is ``gain`` times darker."""
    g = torch.Generator().manual_seed(seed)
    r = lambda c: torch.rand((1, c, 16, 16), generator=g)  # noqa: E731
    srgb_cur, srgb_prev, raw_prev, warped_srgb = r(3), r(3), r(4), r(3)
    prior_cur = 0.2 + 0.5 * r(4)
    warped_prior = r(4)
    inputs = [srgb_cur, srgb_prev, raw_prev, warped_prior.clone(), warped_srgb, prior_cur, warped_prior, r(4),
              0.05 * (r(4) - 0.5), r(3)]
    if cfg.ratio_refs or cfg.adaptive_refs:
        inputs.append(prior_cur / gain)
    return inputs


def test_ratio_references_follow_exposure():
    """The keyframe residual is scaled by A(t+1) / A(k): twice the exposure, twice the correction."""
    torch.manual_seed(0)
    plain = FAGDN(KEY_REF).eval()
    ratio = FAGDN(FAGDNConfig(**{**KEY_REF.to_dict(), "ratio_refs": True})).eval()
    ratio.load_state_dict(plain.state_dict())  # the flag adds no weights
    with torch.no_grad():
        base = _key_step(plain.config, 1.0)
        ref_plain = plain(*base)["pred"] - base[5]
        doubled = ratio(*_key_step(ratio.config, 2.0))["pred"] - base[5]
        same = ratio(*_key_step(ratio.config, 1.0))["pred"] - base[5]
    assert float(ref_plain.abs().mean()) > 1e-3
    assert torch.allclose(same, ref_plain, atol=1e-5)
    scale = torch.exp(log_exposure_ratio(base[5], base[5] / 2))  # 2x up to the small epsilon of the ratio
    assert float(scale.min()) > 1.95
    assert torch.allclose(doubled, scale * ref_plain, atol=1e-5)
    assert float(log_exposure_ratio(torch.tensor(1.0), torch.tensor(0.0))) == pytest.approx(1.5)  # clamped


def test_adaptive_gate_starts_near_the_plain_references():
    """Untrained, the gate changes nothing but a 2% low-pass share; trained models load strictly."""
    torch.manual_seed(0)
    ratio = FAGDN(FAGDNConfig(**{**KEY_REF.to_dict(), "ratio_refs": True})).eval()
    adaptive = FAGDN(FAGDNConfig(**{**KEY_REF.to_dict(), "ratio_refs": True, "adaptive_refs": True})).eval()
    missing = adaptive.load_state_dict(ratio.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("ref_gate.") for k in missing)
    with torch.no_grad():
        x = _key_step(adaptive.config, 1.5)
        a, b = adaptive(*x)["pred"], ratio(*x)["pred"]
    assert 0 < float((a - b).abs().max()) < 2e-3
    with pytest.raises(ValueError, match="need key_reference"):
        FAGDNConfig(prior=True, adaptive_refs=True)
