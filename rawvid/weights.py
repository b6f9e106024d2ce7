"""The shipped networks' names, sizes and files, without PyTorch: what encode and decode need
to find a model, record it in a file and read its configuration (the network itself:
:mod:`rawvid.model`; run without PyTorch: :mod:`rawvid.runtime`)."""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import RawvidError

RAW_CH, SRGB_CH = 4, 3


@dataclass(frozen=True)
class FAGDNConfig:
    """Network size. ``paper`` matches the authors' widths; smaller ones trade quality for speed."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    bottleneck: int = 512
    patches: tuple[int, ...] = (16, 8, 4, 4)  # GLA grid (global) and window (local) size per level
    conf_width: int = 16
    global_attention: bool = True
    local_attention: bool = True
    #: GLA at encoder levels >= this (0: every level, the paper; 1 skips the finest, costliest level)
    gla_from: int = 0
    #: rawvid's extension: condition on the global-fit prediction A and predict RAW as
    #: A + gated warped residual (RAW(t) - A(t)) + a learned correction (see PAPER.md, prototypes)
    prior: bool = False
    #: rawvid's extension (with ``prior``): a second, non-accumulating reference: the keyframe's residual
    #: RAW(k) - A(k) warped by direct flow from frame t+1 to the keyframe, with its own confidence map
    key_reference: bool = False
    #: rawvid's extension (with ``prior``): scale both residual references by the local exposure
    #: ratio of the priors, A(t+1) / warped A(ref), so that they stay valid across exposure changes
    ratio_refs: bool = False
    #: rawvid's extension (with ``prior``): a small gate net that sees the references' high-frequency
    #: energy and the exposure ratios; it corrects both confidence maps and, per pixel, swaps part of
    #: each reference for its low-passed copy, so that a noisy keyframe's noise is not copied forward
    adaptive_refs: bool = False

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.patches) or not self.widths:
            raise ValueError("widths and patches need one entry per level")
        if self.key_reference and not self.prior:
            raise ValueError("key_reference needs prior")
        if (self.ratio_refs or self.adaptive_refs) and not self.key_reference:
            raise ValueError("ratio_refs and adaptive_refs need key_reference (and prior)")

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (pooling levels times the coarsest window)."""
        need = 1
        for lvl, p in enumerate(self.patches):
            if lvl >= self.gla_from:
                need = max(need, (1 << lvl) * (p if self.local_attention else 1))
        return max(need, 1 << self.depth)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FAGDNConfig":
        d = dict(d)  # weights saved before a flag existed load with its default (off)
        for k in ("widths", "patches"):
            d[k] = tuple(d[k])
        return cls(**d)


CONFIGS: dict[str, FAGDNConfig] = {
    "paper": FAGDNConfig(),
    "small": FAGDNConfig(widths=(16, 32, 64, 128), bottleneck=256),
    # level-1 local windows of 8x8 instead of 16x16: the window attention over the full
    # half-resolution frame dominates CPU time, and this cuts its cost by 4x
    "fast": FAGDNConfig(widths=(16, 32, 64, 128), bottleneck=256, patches=(8, 8, 4, 4)),
    "tiny": FAGDNConfig(widths=(8, 16, 16, 32), bottleneck=32, conf_width=8),
}


#: The model encode records in the manifest and decode uses unless told otherwise.
DEFAULT_MODEL = "fagdn-v2"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def _package_weights() -> Path | None:
    """The weights installed with the package (``rawvid._weights``: models/ in the wheel)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("rawvid._weights")
    except (ImportError, ValueError):
        return None
    paths = list(spec.submodule_search_locations or []) if spec else []
    return Path(paths[0]) if paths else None


#: what a file may record of its model: a name (model_label makes one), never a path
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def model_label(name_or_path: str) -> str:
    """What a file records of the model it was made with: its name, never a path (``runs/x/best.safetensors``
    -> ``best``); the decoder finds it by that name, or the user names the weights with --model."""
    stem = Path(name_or_path).name.removesuffix(".safetensors")
    label = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-")[:64]
    return label or "unnamed"


def missing_weights_note(model: str, what: str) -> str:
    """The warning for weights that cannot be found: what happens, and that quality drops to global-fit's."""
    where = ", ".join(str(d) for d in models_dirs())
    return (f"warning: no weights for model {model!r} (looked in {where}): {what}; the decoded quality will be "
            "global-fit's, about 1-2 dB lower (install the package with its weights, or set RAWVID_MODELS)")


def models_dirs() -> list[Path]:
    """Where weights are looked up: $RAWVID_MODELS (if set), the weights installed with the
    package, then the repository's models/ (a source checkout)."""
    env = os.environ.get("RAWVID_MODELS")
    dirs = ([Path(env)] if env else []) + [p for p in (_package_weights(),) if p is not None] + [MODELS_DIR]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def resolve_model(name_or_path: str) -> Path:
    """A model name (``fagdn-small`` -> models/fagdn-small.safetensors) or a path."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" and p.is_file():
        return p
    if any(ch in name_or_path for ch in "/\\") or name_or_path.startswith("."):
        raise RawvidError(name_or_path, "model not found")
    for d in models_dirs():
        cand = d / f"{name_or_path}.safetensors"
        if cand.is_file():
            return cand
    raise RawvidError(name_or_path, f"model not found in {', '.join(str(d) for d in models_dirs())}")


#: memory layouts the network can run in: ``channels_last`` (NHWC) is what new files are coded
#: with (measured: the forward 25-33% faster on this CPU, outputs within 6e-8 of the default
#: layout); ``contiguous`` (NCHW) is what files without a ``network_layout`` were coded with;
#: ``channels_last_bf16``: NHWC with the convolutions in bfloat16 (PyTorch CPU autocast)
LAYOUTS = ("contiguous", "channels_last", "channels_last_bf16")


def stored_config(path: Path) -> FAGDNConfig | None:
    """The configuration in a weights file's metadata (None when it carries none), read without
    loading a tensor and without PyTorch (safetensors' numpy reader)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own types for a file that is not one
        raise RawvidError(path, f"not a safetensors weights file ({exc})") from None
    if "config" not in meta:
        return None
    try:
        return FAGDNConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise RawvidError(path, f"unreadable network configuration ({exc})") from None


def read_config(path: Path) -> FAGDNConfig:
    """The configuration stored in a weights file's metadata."""
    cfg = stored_config(path)
    if cfg is None:
        raise RawvidError(path, "weights carry no configuration")
    return cfg
