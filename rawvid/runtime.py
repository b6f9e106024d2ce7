"""The network without PyTorch: the shipped weights exported to ONNX and run by ONNX Runtime.

PyPI's PyTorch wheels for Linux pull gigabytes of CUDA libraries; ONNX Runtime's CPU wheel
is about 20 MB. So encode and decode run FAGDN in either: PyTorch (:mod:`rawvid.network`)
or ONNX Runtime (here), whichever is installed, and the manifest records which one coded a
file (``network_runtime``) because a RAW layer's closed loop needs the decoder to compute
the encoder's predictions to the bit.

The ONNX graph is the network alone, with dynamic height and width (multiples of the
configuration's ``multiple``); the warps, padding and tiling around it are numpy copies
of :func:`rawvid.model.step_inputs` and :func:`rawvid.model.run_network`, so the two
runtimes agree to float rounding (measured: the forward within 2e-7, decoded frames within
a DN). ``rawvid export-onnx`` writes the graph beside the weights (PyTorch needed there, once);
its metadata names the SHA-256 of the weights it came from, and a stale export is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .container import sha256_file
from .errors import RawvidError
from .flow import warp
from .netinputs import assemble, pad_amounts, tiles
from .methods import NetworkBase
from .pipeline import cpu_threads
from .weights import RAW_CH, FAGDNConfig, resolve_model

#: ONNX opset of the exported graphs (the dynamo exporter's)
OPSET = 18


def onnx_path(weights: Path) -> Path:
    """Where the ONNX export of a weights file lives: beside it, ``NAME.onnx``."""
    return weights.with_suffix(".onnx")


# --------------------------------------------------------------------------- numpy twins of model.py
def pad_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """:func:`rawvid.model.pad_multiple` for C x H x W arrays: reflect (edge if too small) at bottom/right."""
    ph, pw, reflect = pad_amounts(*x.shape[-2:], multiple)
    if not ph and not pw:
        return x
    return np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect" if reflect else "edge")


def _warp_all(images: list[np.ndarray], flow: np.ndarray) -> list[np.ndarray]:
    warped, _ = warp(np.concatenate(images, 0), flow)
    return np.split(warped, np.cumsum([x.shape[0] for x in images])[:-1], 0)


def step_inputs(config: FAGDNConfig, srgb_cur, srgb_prev, raw_prev, flow, **refs) -> list[np.ndarray]:
    """:func:`rawvid.model.step_inputs` in numpy (C x H x W arrays, flows H x W x 2), the same order."""
    inputs = assemble(config, _warp_all, srgb_cur, srgb_prev, raw_prev, flow, **refs)
    return [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]


class OnnxModel:
    """An exported FAGDN in an ONNX Runtime session (CPU): ``model(inputs)`` -> 4 x H x W prediction."""

    def __init__(self, name_or_path: str, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RawvidError(None, "the onnxruntime runtime needs the onnxruntime package "
                              "(pip install onnxruntime)") from None
        from .weights import read_config

        weights = resolve_model(name_or_path)
        path = onnx_path(weights)
        if not path.is_file():
            raise RawvidError(path, f"no ONNX export of {weights.name} (make it once with: rawvid export-onnx "
                              f"{name_or_path}; that needs PyTorch)")
        self.config = read_config(weights)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or cpu_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for a damaged file
            raise RawvidError(path, f"not a loadable ONNX graph ({str(exc).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("weights_sha256") != sha256_file(weights):
            raise RawvidError(path, f"exported from other weights than {weights.name} (export it again: "
                              f"rawvid export-onnx {name_or_path})")
        try:
            same = FAGDNConfig.from_dict(json.loads(meta["config"])) == self.config
        except (KeyError, ValueError, TypeError):
            same = False
        if not same:
            raise RawvidError(path, "its configuration differs from the weights'")
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, inputs: list[np.ndarray]) -> np.ndarray:
        feeds = {n: x[None] for n, x in zip(self.names, inputs)}
        return self.session.run(None, feeds)[0][0]


def run_network(model: OnnxModel, inputs: list[np.ndarray], tile: int | None = None,
                overlap: int = 256) -> np.ndarray:
    """:func:`rawvid.model.run_network` in numpy: pad, run (in tiles above ``tile``), crop back."""
    h, w = inputs[0].shape[-2:]
    mult = model.config.multiple
    if not tile or (h <= tile and w <= tile):
        return np.ascontiguousarray(model([pad_multiple(x, mult) for x in inputs])[:, :h, :w])
    tile, plan = tiles(h, w, tile, overlap, mult)
    out = np.zeros((RAW_CH, h, w), dtype=np.float32)
    weight = np.zeros((1, h, w), dtype=np.float32)
    for y, x, wt in plan:
        th, tw = wt.shape
        pred = model([pad_multiple(t[:, y : y + tile, x : x + tile], mult) for t in inputs])[:, :th, :tw]
        out[:, y : y + th, x : x + tw] += pred * wt[None]
        weight[:, y : y + th, x : x + tw] += wt[None]
    return out / np.maximum(weight, 1e-8)


class OnnxNetwork(NetworkBase):
    """The ``network`` method in ONNX Runtime (the keyframe reference by direct flow, as trained)."""

    def __init__(self, model: OnnxModel, tile: int | None = None, flow_preset: str = "fast"):
        super().__init__(model.config, tile, flow_preset)
        self.model = model

    def _forward(self, srgb, prev_srgb, prev_raw, flow, key_flow, priors: dict) -> np.ndarray:
        keys = dict(self.key_arrays, key_flow=key_flow) if key_flow is not None else {}
        inputs = step_inputs(self.config, srgb, prev_srgb, prev_raw, flow, **priors, **keys)
        return run_network(self.model, inputs, tile=self.tile)


# --------------------------------------------------------------------------- export (needs PyTorch)
def export_onnx(name_or_path: str, out: str | os.PathLike | None = None) -> Path:
    """Export weights to ONNX (dynamic height and width) beside them or to ``out``; checked against PyTorch.

    The check runs both on random inputs of a size other than the export's: a graph that
    disagrees by more than 1e-4 is not written.
    """
    try:
        import torch
    except ImportError:
        raise RawvidError(None, "export-onnx needs PyTorch (pip install torch)") from None
    from .atomic import atomic_path
    from .model import load_model
    from .model import step_inputs as torch_step_inputs

    weights = resolve_model(name_or_path)
    model = load_model(str(weights)).eval()
    cfg, mult = model.config, model.config.multiple

    def example(h: int, w: int, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        r = lambda c: torch.rand(1, c, h, w, generator=g)  # noqa: E731
        flow = torch.randn(1, 2, h, w, generator=g) * 3
        extra = {}
        if cfg.prior:
            extra.update(prior_cur=r(RAW_CH), prior_prev=r(RAW_CH))
        if cfg.key_reference:
            extra.update(key_srgb=r(3), key_residual=r(RAW_CH) * 0.1, key_flow=flow, key_prior=r(RAW_CH))
        return torch_step_inputs(cfg, r(3), r(3), r(RAW_CH), flow, **extra)

    inputs = example(2 * mult, 3 * mult, 0)
    names = [f"in{i}" for i in range(len(inputs))]

    class Pred(torch.nn.Module):  # one positional argument per input: what the exporter's dynamic shapes need
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *xs):
            return self.m(*xs)["pred"]

    h, w = torch.export.Dim("h", min=1, max=4096), torch.export.Dim("w", min=1, max=4096)
    dyn = (tuple({2: mult * h, 3: mult * w} for _ in inputs),)
    dest = Path(out) if out else onnx_path(weights)
    meta = {"config": json.dumps(cfg.to_dict()), "weights_sha256": sha256_file(weights), "weights": weights.name,
            "architecture": "FAGDN"}
    with atomic_path(dest) as tmp:
        prog = torch.onnx.export(Pred(model), tuple(inputs), input_names=names, output_names=["pred"],
                                 dynamo=True, dynamic_shapes=dyn, opset_version=OPSET, verbose=False)
        prog.model.metadata_props.update(meta)
        prog.save(str(tmp))
        check = OnnxModelFile(tmp)
        x = example(3 * mult, 5 * mult, 1)
        with torch.no_grad():
            ref = model(*x)["pred"][0].numpy()
        diff = float(np.abs(check([t[0].numpy() for t in x]) - ref).max())
        if not diff < 1e-4:
            raise RawvidError(dest, f"the exported graph differs from PyTorch by {diff:.2g}; not written")
    return dest


class OnnxModelFile(OnnxModel):
    """An ONNX graph run straight from a file, unchecked (the export's own self-test)."""

    def __init__(self, path: Path):  # noqa: D107 - no weights lookup, no metadata check
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
