"""One frame of the decoder's chain, shared by the decoder and the encoder's own run of it.

Encoder and decoder must compute exactly the same predictions (block refinement and the
RAW layer are chosen against them), so both call these functions and nothing else.
"""
from __future__ import annotations

import numpy as np

from . import rawlayer as rl
from .bayer import denormalise, normalise
from .errors import RawvidError


#: the runtimes the network runs in: PyTorch (rawvid.network) or ONNX Runtime (rawvid.runtime)
RUNTIMES = ("torch", "onnxruntime")


def have_torch() -> bool:
    """Whether PyTorch can be imported (it is optional: ONNX Runtime runs the shipped network)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def select_runtime(requested: str = "auto", recorded: str | None = None) -> str:
    """The runtime to run the network in.

    ``auto``: the one a file was coded with (``recorded``) when it is installed, else PyTorch
    when installed, else ONNX Runtime. (Decoding in another runtime than the encoder's gives
    predictions that differ by float rounding; a lossless RAW layer then refuses, by its CRCs.)"""
    if requested not in ("auto", *RUNTIMES):
        raise RawvidError(None, f"unknown runtime {requested!r} (auto, {', '.join(RUNTIMES)})")
    if requested == "onnxruntime" or (requested == "auto" and recorded == "onnxruntime"):
        return "onnxruntime"  # without importing PyTorch (a second or two, and memory, for nothing)
    torch_ok = have_torch()
    if requested == "auto":
        requested = "torch" if torch_ok else "onnxruntime"
    if requested == "torch" and not torch_ok:
        raise RawvidError(None, "--runtime torch: PyTorch is not installed (pip install torch, or use onnxruntime)")
    return requested


def select_device(device: str, runtime: str = "torch") -> str:
    """``auto`` -> cuda when available, else cpu; an unavailable or unknown device is a clean error."""
    if device not in ("auto", "cpu", "cuda"):
        raise RawvidError(None, f"unknown device {device!r} (auto, cpu or cuda)")
    if runtime != "torch":
        if device == "cuda":
            raise RawvidError(None, f"--device cuda needs --runtime torch (PyTorch with CUDA), not {runtime}")
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RawvidError(None, "--device cuda: no CUDA device is available")
    return device


#: the network layout new files are coded with (the manifest's ``network_layout``) where the CPU
#: has no bfloat16 arithmetic (or the network runs elsewhere)
NETWORK_LAYOUT = "channels_last"
#: ... and where it has (AVX512-BF16, AMX): the forward in bfloat16, measured 1.3x faster, outputs
#: within 4e-4 of float32 (104 dB apart; README "Measuring", session 13)
BF16_LAYOUT = "channels_last_bf16"


def network_layout(device: str = "cpu", runtime: str = "torch", choice: str = "auto") -> str:
    """The layout an encoder runs the network in: ``choice`` (one of LAYOUTS), or for ``auto``
    bfloat16 where PyTorch runs it on a CPU with native bfloat16 arithmetic, else float32
    channels-last. The manifest records it and the decoder follows, whatever its CPU."""
    if choice != "auto":
        from .weights import LAYOUTS

        if choice not in LAYOUTS:
            raise RawvidError(None, f"unknown network layout {choice!r} ({', '.join(LAYOUTS)})")
        return choice
    if runtime != "torch" or device != "cpu":
        return NETWORK_LAYOUT
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return BF16_LAYOUT if native else NETWORK_LAYOUT


def network_method(model: str, width: int, height: int, device: str = "cpu", tile: int | None = None,
                   layout: str = NETWORK_LAYOUT, runtime: str = "torch"):
    """The chained network for a clip of ``width`` x ``height`` (tiled above ~2K x 1K half resolution).

    ``layout`` (PyTorch): the memory format its arithmetic runs in; ``runtime``: PyTorch or ONNX
    Runtime. Encoder and decoder must use the same (a RAW layer's reconstruction is checked to
    the bit), so the manifest records both."""
    if tile is None:
        tile = 1024 if width * height // 4 > 2048 * 1152 else None
    if runtime == "onnxruntime":
        from .runtime import OnnxModel, OnnxNetwork

        return OnnxNetwork(OnnxModel(model), tile=tile)
    from .model import load_model
    from .network import Network

    return Network(load_model(model, device=device), device=device, tile=tile, layout=layout)


def predict_frame(method, prev_raw: np.ndarray, prev_srgb: np.ndarray, srgb: np.ndarray, info,
                  gmap=None, index: np.ndarray | None = None, target: np.ndarray | None = None,
                  gains: bool = False):
    """One chained frame exactly as decode writes it; the encoder's refinement pass runs the same code.

    ``gmap``: this frame's calibration. ``index``: the stored block weights, and gains (decode);
    ``target``: the true RAW, to choose them (encode; ``gains``: block gains too). Returns (uint16
    planes, the normalised RAW the chain continues from, the block indices or None).
    """
    from .refine import choose_frame, refine_frame

    if gmap is not None:
        method.calibrate(gmap)
    pred = method.predict(prev_raw, prev_srgb, srgb)
    if target is not None or index is not None:
        pred = np.clip(pred, 0.0, 1.0)
        base = method.base(srgb)
        if target is not None:
            index, pred = choose_frame(pred, base, target, gains)
        else:
            pred = refine_frame(pred, base, index)
    if method.unclip is not None:  # the shadows' mean, not the clipped mean (down to under black)
        from .noise import unclip_mean

        pred = unclip_mean(pred, method.unclip)
    planes = denormalise(pred, info.black, info.white, info.bits)
    return planes, normalise(planes, info.black, info.white), index


def fit_own_map(srgb: np.ndarray, truth: np.ndarray, max_samples: int = 200_000):
    """An intra frame's predictor: its own sRGB through a global map fitted on the true RAW, as stored (float16).

    ``max_samples``: the pixels the fit draws (rawvid.methods.fit_global_map)."""
    from .methods import CURVE_KNOTS, GlobalMap, fit_global_map

    row = np.asarray(fit_global_map(srgb, truth, max_samples=max_samples).to_list(), dtype="<f2").astype(np.float64)
    return GlobalMap.from_list(row, CURVE_KNOTS), row


def own_prediction(values: np.ndarray, srgb: np.ndarray, info) -> np.ndarray:
    """An intra frame's prediction from its stored map (uint16 planes)."""
    from .methods import CURVE_KNOTS, GlobalMap

    return denormalise(GlobalMap.from_list(values, CURVE_KNOTS).apply(srgb), info.black, info.white, info.bits)


def direct_prediction(info) -> np.ndarray:
    """The ``direct`` layer's prediction: mid-scale everywhere, so the layer codes the RAW itself."""
    return np.full((4, info.height // 2, info.width // 2), 1 << (info.bits - 1), dtype=np.uint16)


def layer_frame(method, layer, reader, i: int, prev_raw, prev_srgb, srgb, info, gmap, index) -> np.ndarray:
    """The decoder's frame of a layered clip: its prediction plus every pass of its residual."""
    if layer.predictor == "direct":
        pred = direct_prediction(info)
    elif i in layer.intra:
        pred = own_prediction(layer.maps[i], srgb, info)
    else:
        pred, _, _ = predict_frame(method, prev_raw, prev_srgb, srgb, info, gmap, index)
    if layer.lossless:
        return rl.untile(rl.lossless_recon(rl.tile(pred), reader.next(i)))
    recon = pred
    for scale in layer.scales[i]:
        recon = rl.reconstruct(recon, reader.next(i), scale, info.bits, layer.transform)
    return recon
