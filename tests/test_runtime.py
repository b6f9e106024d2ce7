"""The network in ONNX Runtime: the numpy twins of the warps and tiling, the export, and encode/decode
on a machine without PyTorch (a subprocess where ``import torch`` fails)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLE, ROOT, assert_clean_error_text

from rawvid.codec import DecodeOptions, decode, frame_name
from rawvid.container import RvdFile
from rawvid.dng import read_dng
from rawvid.errors import RawvidError
from rawvid.flow import backward_warp, warp
from rawvid.metrics import psnr_black
from rawvid.mlv import MLVReader
from rawvid.model import DEFAULT_MODEL, load_model, run_network, step_inputs
from rawvid.runtime import OnnxModel, export_onnx, onnx_path
from rawvid.runtime import run_network as np_run_network
from rawvid.runtime import step_inputs as np_step_inputs

#: the command line as a user without PyTorch runs it
NO_TORCH = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['rawvid'] + sys.argv[1:]; "
            "runpy.run_module('rawvid', run_name='__main__', alter_sys=True)")


def run_without_torch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_numpy_warp_is_torchs_bilinear_warp():
    rng = np.random.default_rng(0)
    img = rng.random((5, 200, 60), dtype=np.float32)  # tall enough for three bands of rows
    flow = (rng.standard_normal((200, 60, 2)) * 8).astype(np.float32)  # many pixels from outside the frame
    got, valid = warp(img, flow)
    ref, ref_valid = backward_warp(torch.from_numpy(img)[None], torch.from_numpy(flow.transpose(2, 0, 1))[None])
    assert 0.05 < 1 - valid.mean() < 0.9
    assert np.array_equal(valid, ref_valid[0, 0].numpy())
    assert np.abs(got - ref[0].numpy()).max() < 1e-5
    assert np.array_equal(warp(img, flow, threads=1)[0], warp(img, flow, threads=3)[0])  # bands: any thread count


@pytest.mark.parametrize("h", [200, 201])  # the last band padded or not
def test_banded_torch_warp_is_one_grid_sample(h, monkeypatch):
    """One image's warp cut into row bands (a batch, so PyTorch runs them on both cores) gives the very
    bits of the single call: decoded frames must not depend on the core count."""
    import rawvid.flow as fl

    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.random((1, 7, h, 90), dtype=np.float32))
    flow = torch.from_numpy((rng.standard_normal((1, 2, h, 90)) * 6).astype(np.float32))
    monkeypatch.setattr(fl, "cpu_threads", lambda: 3)
    assert fl._warp_bands(1, h, "cpu") == 3
    banded, valid = fl.backward_warp(img, flow)
    monkeypatch.setattr(fl, "cpu_threads", lambda: 1)
    single, valid1 = fl.backward_warp(img, flow)
    assert torch.equal(banded, single) and torch.equal(valid, valid1)


def _inputs(config, h, w, seed=0):
    rng = np.random.default_rng(seed)
    r = lambda c: rng.random((c, h, w), dtype=np.float32)  # noqa: E731
    flow = (rng.standard_normal((h, w, 2)) * 3).astype(np.float32)
    return dict(srgb_cur=r(3), srgb_prev=r(3), raw_prev=r(4), flow=flow, prior_cur=r(4), prior_prev=r(4),
                key_srgb=r(3), key_residual=r(4) * 0.1, key_flow=flow[::-1, ::-1].copy(), key_prior=r(4))


@pytest.mark.parametrize("name,tile", [(DEFAULT_MODEL, None), (DEFAULT_MODEL, 64), ("fagdn-default", None)])
def test_onnx_runtime_predicts_as_pytorch(name, tile):
    """The shipped exports (the default and the earlier model older files name), numpy inputs and tiling
    against PyTorch's, at a size the exports never saw."""
    model, ort = load_model(name), OnnxModel(name)
    assert ort.config == model.config
    a = _inputs(model.config, 100, 170)  # not a multiple of 32: padded and cropped back
    t = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1) if v.ndim == 3 and v.shape[-1] == 2 else v))[None]
         for k, v in a.items()}
    with torch.no_grad():
        ref = run_network(model, step_inputs(model.config, **t), tile=tile, overlap=32)[0].numpy()
    got = np_run_network(ort, np_step_inputs(ort.config, **a), tile=tile, overlap=32)
    assert got.shape == ref.shape == (4, 100, 170)
    assert np.abs(got - ref).max() < 1e-4


def test_export_is_checked_and_a_stale_export_refused(tiny_model, tmp_path):
    path = export_onnx(str(tiny_model))
    assert path == onnx_path(Path(tiny_model)) and path.is_file()
    assert OnnxModel(str(tiny_model)).config == load_model(str(tiny_model)).config
    from rawvid.model import CONFIGS, FAGDN, save_model

    torch.manual_seed(1)
    save_model(FAGDN(CONFIGS["tiny"]), tiny_model)  # retrained weights, the old export beside them
    with pytest.raises(RawvidError, match="exported from other weights"):
        OnnxModel(str(tiny_model))
    path.unlink()
    with pytest.raises(RawvidError, match="no ONNX export"):
        OnnxModel(str(tiny_model))


def test_encode_and_decode_without_pytorch(tmp_path):
    """Issue 13 item 10: what the README's install gives (no PyTorch): the example encodes with block
    refinement and decodes with the network, in ONNX Runtime; PyTorch decodes the same file within a DN."""
    rvd = tmp_path / "c.rvd"
    res = run_without_torch("encode", EXAMPLE, "-o", rvd, "--frames", "0:8")
    assert res.returncode == 0, res.stderr[-2000:]
    m = RvdFile(rvd).manifest
    assert m["network_runtime"] == "onnxruntime" and m["refine"]["mode"] == "blocks"
    info = run_without_torch("info", rvd)
    assert info.returncode == 0 and "network run in onnxruntime" in " ".join((info.stdout + info.stderr).split())
    res = run_without_torch("decode", rvd, "-o", tmp_path / "ort")
    assert res.returncode == 0, res.stderr[-2000:]
    out = " ".join((res.stdout + res.stderr).split())
    assert "network on cpu" in out and "warning" not in out
    dec = decode(rvd, tmp_path / "pt", DecodeOptions(runtime="torch"))
    assert dec.method == "network" and any("coded with the network in onnxruntime" in n for n in dec.notes)
    with MLVReader(EXAMPLE) as clip:
        info_ = clip.info
        truth = [clip.read(i) for i in range(8)]
    scores = {}
    for name in ("ort", "pt"):
        frames = [read_dng(tmp_path / name / frame_name(dec.clip, i))[0] for i in range(8)]
        scores[name] = np.mean([psnr_black(f, t, info_.cfa, info_.black, info_.white)
                                for f, t in zip(frames[1:], truth[1:])])
        scores[name + "_frames"] = frames
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(scores["ort_frames"], scores["pt_frames"])) <= 2
    assert abs(scores["ort"] - scores["pt"]) < 0.05 and scores["ort"] > 50, scores["ort"]


def test_runtime_torch_without_pytorch_is_a_clean_error(tmp_path):
    res = run_without_torch("encode", EXAMPLE, "-o", tmp_path / "c.rvd", "--runtime", "torch")
    assert_clean_error_text(res, "PyTorch is not installed")
    res = run_without_torch("encode", EXAMPLE, "-o", tmp_path / "c.rvd", "--device", "cuda")
    assert_clean_error_text(res, "--device cuda needs --runtime torch")


def test_a_file_coded_in_onnxruntime_decodes_without_importing_torch():
    """Choosing the runtime of a file coded in ONNX Runtime must not pay for importing PyTorch."""
    import subprocess
    import sys

    code = ("import sys\nfrom rawvid.chain import select_runtime\n"
            "assert select_runtime('auto', 'onnxruntime') == 'onnxruntime'\n"
            "assert select_runtime('onnxruntime') == 'onnxruntime'\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
