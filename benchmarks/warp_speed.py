"""The bilinear backward warp in each place it could run, at the network's half resolution of 1600x900.

The network's inputs are warped once per frame by the flow to the previous frame (11
channels: RAW, sRGB and prior) and once by the flow to the keyframe (7). Timed here, on
random smooth images and a flow of ~30 px, best of ``--repeat`` after a warm-up:

- ``torch``: ``rawvid.flow.backward_warp`` (grid_sample, what the PyTorch runtime uses);
- ``numpy``: ``rawvid.flow.warp`` (what the ONNX Runtime path uses), on rawvid's CPU threads
  (bands of rows) and on one (``numpy-1-thread``);
- ``onnxruntime``: the same warp exported to ONNX (GridSample) and run by ONNX Runtime;
- ``opencv``: ``cv2.remap`` INTER_LINEAR (fixed-point weights in 1/32 pixel: not the trained warp).

Each with its largest difference from ``torch``.

    python benchmarks/warp_speed.py [--channels 11] [--repeat 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from rawvid.flow import backward_warp, warp
from rawvid.pipeline import cpu_threads


def remap(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    c, h, w = img.shape
    mx = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    my = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    valid = ((mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)).astype(np.float32)
    m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
    hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
    parts = [cv2.remap(np.ascontiguousarray(hwc[..., s : s + 4]), m1, m2, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(h, w, -1) for s in range(0, c, 4)]
    return np.concatenate(parts, -1).transpose(2, 0, 1) * valid[None]


def ort_warp(td: Path):
    import onnxruntime as ort

    class W(torch.nn.Module):
        def forward(self, img, flow):
            return backward_warp(img, flow)

    c, h, w = (torch.export.Dim(n, min=2, max=8192) for n in "chw")
    prog = torch.onnx.export(W().eval(), (torch.rand(1, 5, 40, 60), torch.randn(1, 2, 40, 60)),
                             input_names=["img", "flow"], output_names=["warped", "valid"], dynamo=True,
                             dynamic_shapes=({1: c, 2: h, 3: w}, {2: h, 3: w}), opset_version=18, verbose=False)
    prog.save(str(td / "warp.onnx"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = cpu_threads()
    s = ort.InferenceSession(str(td / "warp.onnx"), so, providers=["CPUExecutionProvider"])
    return lambda img, flow: s.run(None, {"img": img[None], "flow": np.ascontiguousarray(flow.transpose(2, 0, 1))[None]})[0][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=11)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(cpu_threads())
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((450, 800, args.channels), dtype=np.float32), (0, 0), 2)
    img = np.ascontiguousarray(img.reshape(450, 800, -1).transpose(2, 0, 1))
    flow = cv2.GaussianBlur((rng.standard_normal((450, 800, 2)) * 30).astype(np.float32), (0, 0), 8) * 8
    tflow = torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))[None]
    with tempfile.TemporaryDirectory() as td:
        fns = {"torch": lambda: backward_warp(torch.from_numpy(img)[None], tflow)[0][0].numpy(),
               "numpy": lambda: warp(img, flow)[0], "numpy-1-thread": lambda: warp(img, flow, threads=1)[0],
               "onnxruntime": (lambda f: lambda: f(img, flow))(ort_warp(Path(td))),
               "opencv": lambda: remap(img, flow)}
        ref = fns["torch"]()
        rows = {}
        for name, fn in fns.items():
            out = fn()
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            rows[name] = {"ms": round(1000 * min(times), 1), "max_abs_diff_vs_torch": float(np.abs(out - ref).max())}
            print(name, rows[name], flush=True)
    if args.json:
        args.json.write_text(json.dumps({"shape": list(img.shape), "threads": cpu_threads(), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
