"""Inference runtimes for the shipped network on this CPU: same weights, same inputs, side by side.

Captures the network's inputs for one real 1600x900 frame through the decoder's own path
(profile_decode.capture_inputs), then times the forward pass (padded to the network's
multiple, as decode runs it) with:

- ``eager``: PyTorch as decode runs it today (``torch.no_grad``);
- ``inference_mode``: ``torch.inference_mode`` instead;
- ``channels_last``: weights and inputs in NHWC memory format;
- ``bf16``: channels-last under CPU autocast to bfloat16 (AVX512-BF16 where the CPU has it);
- ``openvino`` / ``openvino_bf16``: the ONNX export compiled by OpenVINO's CPU plugin, float32 or
  its bfloat16 inference precision (``pip install openvino``; not a rawvid dependency);
- ``compile``: ``torch.compile`` (inductor, C++ codegen for the CPU);
- ``onnxruntime``: exported with ``torch.onnx.export`` and run by ONNX Runtime's CPU provider
  (all graph optimisations, intra-op threads = torch's).

Each: warm-up, then the best of ``--repeat`` runs; the largest absolute difference from
eager and the PSNR of its output against eager's (both on [0, 1] RAW); and whether two runs
give the same bytes (decode must be deterministic).

    python benchmarks/runtimes.py [--runtimes eager,inference_mode,channels_last,compile,onnxruntime] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from encode_speed import make_clip
from profile_decode import capture_inputs
from rawvid.codec import encode
from rawvid.model import pad_multiple


def best_of(fn, repeat: int) -> tuple[float, np.ndarray]:
    out = fn()
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def runners(model, inputs: list[torch.Tensor], td: Path) -> dict:
    """name -> a function that runs the forward once and returns the prediction as a numpy array."""
    padded = [pad_multiple(x, model.config.multiple).contiguous() for x in inputs]

    def eager():
        with torch.no_grad():
            return model(*padded)["pred"].numpy()

    def inference():
        with torch.inference_mode():
            return model(*padded)["pred"].numpy()

    def channels_last_fn():
        m = channels_last_fn.model
        xs = channels_last_fn.xs
        with torch.inference_mode():
            return m(*xs)["pred"].contiguous().numpy()

    def bf16():
        m = channels_last_fn.model
        xs = channels_last_fn.xs
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return m(*xs)["pred"].float().contiguous().numpy()

    def compiled():
        with torch.inference_mode():
            return compiled.fn(*padded)["pred"].numpy()

    def ort():
        return ort.session.run(["pred"], dict(zip(ort.names, ort.feeds)))[0]

    def openvino():
        return openvino.request.infer(ort.feeds)[0].copy()

    def openvino_bf16():
        return openvino_bf16.request.infer(ort.feeds)[0].copy()

    def setup(name):
        if name in ("channels_last", "bf16"):
            import copy

            channels_last_fn.model = copy.deepcopy(model).to(memory_format=torch.channels_last)
            channels_last_fn.xs = [x.to(memory_format=torch.channels_last) for x in padded]
        elif name == "compile":
            compiled.fn = torch.compile(model)
        elif name in ("onnxruntime", "openvino", "openvino_bf16"):
            import onnxruntime

            class Pred(torch.nn.Module):
                def __init__(self, m):
                    super().__init__()
                    self.m = m

                def forward(self, *xs):
                    return self.m(*xs)["pred"]

            path = td / "fagdn.onnx"
            ort.names = [f"in{i}" for i in range(len(padded))]
            torch.onnx.export(Pred(model), tuple(padded), str(path), input_names=ort.names, output_names=["pred"],
                              dynamo=True)
            so = onnxruntime.SessionOptions()
            so.intra_op_num_threads = torch.get_num_threads()
            so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            ort.session = onnxruntime.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            ort.feeds = [x.numpy() for x in padded]
            if name.startswith("openvino"):  # the same ONNX graph, compiled by OpenVINO's CPU plugin
                import openvino as ov

                precision = "bf16" if name.endswith("bf16") else "f32"
                fn = openvino if precision == "f32" else openvino_bf16
                fn.request = ov.Core().compile_model(str(path), "CPU", {
                    "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                    "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()

    table = {"eager": eager, "inference_mode": inference, "channels_last": channels_last_fn, "compile": compiled, "bf16": bf16,
             "openvino": openvino, "openvino_bf16": openvino_bf16,
             "onnxruntime": ort}
    return table, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtimes", default="eager,inference_mode,channels_last,compile,onnxruntime")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                 "runs": {}}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        make_clip(td / "clip.MLV", 3)
        rvd = encode(td / "clip.MLV", td / "clip.rvd").output
        model, inputs, _tile, _layout = capture_inputs(rvd, td)
        model = model.to(memory_format=torch.contiguous_format).eval()  # eager as before: NCHW
        out["input_shape"] = list(pad_multiple(inputs[0], model.config.multiple).shape)
        table, setup = runners(model, inputs, td)
        ref = None
        for name in args.runtimes.split(","):
            try:
                t0 = time.perf_counter()
                setup(name)
                setup_s = time.perf_counter() - t0
                best, pred = best_of(table[name], args.repeat)
                again = table[name]()
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this model is a finding
                out["runs"][name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                print(name, "failed:", out["runs"][name]["error"], flush=True)
                continue
            if ref is None:
                ref = pred
            diff = float(np.abs(pred.astype(np.float64) - ref).max())
            mse = float(np.mean((np.clip(pred, 0, 1).astype(np.float64) - np.clip(ref, 0, 1)) ** 2))
            out["runs"][name] = {"forward_s": round(best, 4), "setup_s": round(setup_s, 2),
                                 "max_abs_diff_vs_eager": diff,
                                 "psnr_vs_eager_db": None if mse == 0 else round(10 * math.log10(1 / mse), 2),
                                 "deterministic": bool(np.array_equal(pred, again))}
            print(name, json.dumps(out["runs"][name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
