"""FAGDN: the Frame Affinity Guided De-rendering Network (Zhang et al., CVPR 2024).

All tensors are at half resolution: packed RAW [R, Gr, Gb, B] normalised to [0, 1]
and sRGB area-downsampled to the same size. One step predicts RAW(t+1) from
sRGB(t+1), sRGB(t) and RAW(t) (see ../shared/docs/PAPER.md):

1. temporal affinity prior: RAW(t) and sRGB(t) are backward-warped onto t+1 along
   optical flow (rawvid.flow, outside the network so tiles can be cut after warping);
   a small conv net turns [warped sRGB(t), sRGB(t+1)] into a confidence map M;
   the reference is (1x1 conv refinement of warped RAW) * M.
2. spatial feature fusion: two encoders of identical structure and separate weights,
   current [sRGB(t+1), reference] and previous [sRGB(t), RAW(t)]; after every level
   a GLA module adds to the current features global patch cross-attention and local
   window cross-attention over the previous features.
3. a U-Net decoder with skips from the current encoder and a sigmoid side output at
   every level; the finest side output is the prediction, the coarser ones feed the
   auxiliary loss.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + ReLU, the U-Net block of the paper."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        chans = (cin,) + tuple(widths)
        self.blocks = nn.ModuleList(conv_block(a, b) for a, b in zip(chans[:-1], chans[1:]))

    def level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[i](x if i == 0 else F.max_pool2d(x, 2))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Single-head scaled dot-product attention (B x L x C), written out: on CPU this is
    faster than F.scaled_dot_product_attention's math path, which spends its time on mask checks."""
    w = torch.bmm(q, k.transpose(1, 2)).mul_(q.shape[-1] ** -0.5).softmax(dim=-1)
    return torch.bmm(w, v)


class GLA(nn.Module):
    """Global-local attention: current features query previous-frame features."""

    def __init__(self, channels: int, patch: int, use_global: bool = True, use_local: bool = True):
        super().__init__()
        self.patch, self.use_global, self.use_local = patch, use_global, use_local
        c = channels
        if use_global:
            self.g_embed_q = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, c))
            self.g_embed_kv = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, 2 * c))
            self.g_out = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, c))
        if use_local:
            self.l_q = nn.Conv2d(c, c, 1)
            self.l_kv = nn.Conv2d(c, 2 * c, 1)
            self.l_out = nn.Conv2d(c, c, 1)

    def global_guidance(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        n, c, h, w = cur.shape
        p = self.patch
        qt = F.adaptive_max_pool2d(cur, (p, p)).flatten(2).transpose(1, 2)  # N x p*p x C
        kt = F.adaptive_max_pool2d(prev, (p, p)).flatten(2).transpose(1, 2)
        q = self.g_embed_q(qt)
        k, v = self.g_embed_kv(kt).chunk(2, dim=-1)
        g = self.g_out(attention(q, k, v)).transpose(1, 2).reshape(n, c, p, p)
        return F.interpolate(g, size=(h, w), mode="nearest")

    def local_guidance(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        n, c, h, w = cur.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"feature size {h}x{w} is not a multiple of the window {p}")

        def windows(x: torch.Tensor) -> torch.Tensor:  # N x C x H x W -> (N*nwin) x p*p x C
            cc = x.shape[1]
            x = x.reshape(n, cc, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
            return x.reshape(-1, p * p, cc)

        q = windows(self.l_q(cur))
        k, v = windows(self.l_kv(prev)).chunk(2, dim=-1)
        out = torch.empty_like(q)
        step = 1024  # windows per attention call: bounds memory on large frames (256 MB at 16x16)
        for s in range(0, q.shape[0], step):
            out[s : s + step] = attention(q[s : s + step], k[s : s + step], v[s : s + step])
        out = out.reshape(n, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)
        return self.l_out(out)

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        out = cur
        if self.use_global:
            out = out + self.global_guidance(cur, prev)
        if self.use_local:
            out = out + self.local_guidance(cur, prev)
        return out


#: the exposure ratio of two priors is clamped to exp(+-RATIO_LOG_MAX) (about 0.22x to 4.5x)
RATIO_LOG_MAX = 1.5
RATIO_EPS = 2e-3


def log_exposure_ratio(a_cur: torch.Tensor, a_ref: torch.Tensor) -> torch.Tensor:
    """log(A(t+1) / A(ref)) per pixel and channel, clamped: how much brighter the RAW is expected to be."""
    return torch.log((a_cur + RATIO_EPS) / (a_ref + RATIO_EPS)).clamp(-RATIO_LOG_MAX, RATIO_LOG_MAX)


def lowpass(x: torch.Tensor) -> torch.Tensor:
    """Separable [1, 4, 6, 4, 1] / 16 blur per channel (replicate border): the reference without its noise."""
    c = x.shape[1]
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16.0
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


class FAGDN(nn.Module):
    """The de-rendering network. Inputs and outputs are N x C x H x W at half resolution."""

    def __init__(self, config: FAGDNConfig | None = None):
        super().__init__()
        self.config = cfg = config or CONFIGS["paper"]
        cw = cfg.conf_width
        self.confidence = nn.Sequential(
            nn.Conv2d(2 * SRGB_CH, cw, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(cw, cw, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cw, 1, 3, padding=1))
        self.refine = nn.Conv2d(RAW_CH, RAW_CH, 1)
        if cfg.prior:  # start as "take the warped residual as it is"
            nn.init.eye_(self.refine.weight.view(RAW_CH, RAW_CH))
            nn.init.zeros_(self.refine.bias)
        extra = RAW_CH if cfg.prior else 0
        if cfg.key_reference:
            extra += RAW_CH
            self.key_confidence = nn.Sequential(
                nn.Conv2d(2 * SRGB_CH, cw, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(cw, cw, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cw, 1, 3, padding=1))
            self.key_refine = nn.Conv2d(RAW_CH, RAW_CH, 1)
            nn.init.eye_(self.key_refine.weight.view(RAW_CH, RAW_CH))
            nn.init.zeros_(self.key_refine.bias)
        if cfg.adaptive_refs:
            # in: |r - lowpass(r)| for both references, A(t+1), both log exposure ratios (5 x 4 channels)
            # out: confidence logit corrections for both references and their low-pass shares
            self.ref_gate = nn.Sequential(
                nn.Conv2d(5 * RAW_CH, cw, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(cw, cw, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cw, 4, 3, padding=1))
            nn.init.zeros_(self.ref_gate[-1].weight)  # starts as "no correction, 2% low-pass"
            with torch.no_grad():
                self.ref_gate[-1].bias.copy_(torch.tensor([0.0, 0.0, -4.0, -4.0]))
        self.enc_cur = Encoder(SRGB_CH + RAW_CH + extra, cfg.widths)
        self.enc_prev = Encoder(SRGB_CH + RAW_CH, cfg.widths)
        self.gla = nn.ModuleList(
            GLA(c, p, cfg.global_attention, cfg.local_attention) if lvl >= cfg.gla_from else nn.Identity()
            for lvl, (c, p) in enumerate(zip(cfg.widths, cfg.patches)))
        self.bottleneck = conv_block(cfg.widths[-1], cfg.bottleneck)
        ups, decs, sides = [], [], []
        below = cfg.bottleneck
        for c in reversed(cfg.widths):
            ups.append(nn.ConvTranspose2d(below, c, 2, stride=2))
            decs.append(conv_block(2 * c, c))
            sides.append(nn.Conv2d(c, RAW_CH, 1))
            below = c
        self.ups, self.decs, self.sides = nn.ModuleList(ups), nn.ModuleList(decs), nn.ModuleList(sides)
        if cfg.prior:  # the untrained network outputs exactly A(t+1) + gated warped residual
            for side in self.sides:
                nn.init.zeros_(side.weight)
                nn.init.zeros_(side.bias)

    def forward(self, srgb_cur: torch.Tensor, srgb_prev: torch.Tensor, raw_prev: torch.Tensor,
                warped_raw: torch.Tensor, warped_srgb: torch.Tensor, prior_cur: torch.Tensor | None = None,
                prior_prev_warped: torch.Tensor | None = None,
                prior_prev: torch.Tensor | None = None, key_residual_warped: torch.Tensor | None = None,
                key_srgb_warped: torch.Tensor | None = None,
                key_prior_warped: torch.Tensor | None = None) -> dict[str, torch.Tensor | list]:
        """One chained step. Returns {"pred", "sides" (coarse to fine), "confidence"}.

        With ``config.prior``: ``prior_cur`` is the global-fit prediction A(t+1), and
        ``prior_prev_warped`` / ``prior_prev`` are A(t) warped / unwarped, so the reference is
        the warped residual RAW(t) - A(t) and the output is A(t+1) + reference + correction.
        ``key_prior_warped`` (A of the keyframe, warped) is needed with ``config.ratio_refs``.
        """
        cfg = self.config
        logit = self.confidence(torch.cat([warped_srgb, srgb_cur], 1))
        if cfg.prior:
            r = warped_raw - prior_prev_warped
            if cfg.key_reference:
                rk = key_residual_warped
                logit_k = self.key_confidence(torch.cat([key_srgb_warped, srgb_cur], 1))
                if cfg.ratio_refs or cfg.adaptive_refs:
                    lr = log_exposure_ratio(prior_cur, prior_prev_warped)
                    lrk = log_exposure_ratio(prior_cur, key_prior_warped)
                if cfg.ratio_refs:
                    r, rk = r * torch.exp(lr), rk * torch.exp(lrk)
                if cfg.adaptive_refs:
                    r_lp, rk_lp = lowpass(r), lowpass(rk)
                    g = self.ref_gate(torch.cat([(r - r_lp).abs(), (rk - rk_lp).abs(), prior_cur, lr, lrk], 1))
                    logit, logit_k = logit + g[:, 0:1], logit_k + g[:, 1:2]
                    r = r - torch.sigmoid(g[:, 2:3]) * (r - r_lp)
                    rk = rk - torch.sigmoid(g[:, 3:4]) * (rk - rk_lp)
            m = torch.sigmoid(logit)
            ref = self.refine(r) * m
            x_prev = torch.cat([srgb_prev, raw_prev - prior_prev], 1)
            base = prior_cur + ref
            if cfg.key_reference:
                mk = torch.sigmoid(logit_k)
                ref_key = self.key_refine(rk) * mk
                x_cur = torch.cat([srgb_cur, prior_cur, ref, ref_key], 1)
                base = base + (1 - m) * ref_key  # the keyframe fills in where the chained reference is not trusted
            else:
                x_cur = torch.cat([srgb_cur, prior_cur, ref], 1)
        else:
            m = torch.sigmoid(logit)
            ref = self.refine(warped_raw) * m
            x_cur = torch.cat([srgb_cur, ref], 1)
            x_prev = torch.cat([srgb_prev, raw_prev], 1)
        skips = []
        for i in range(cfg.depth):
            x_cur = self.enc_cur.level(i, x_cur)
            x_prev = self.enc_prev.level(i, x_prev)
            x_cur = self.gla[i](x_cur, x_prev) if i >= cfg.gla_from else x_cur
            skips.append(x_cur)
        x = self.bottleneck(F.max_pool2d(x_cur, 2))
        sides = []
        n_levels = len(self.sides)
        for k, (up, dec, side, skip) in enumerate(zip(self.ups, self.decs, self.sides, reversed(skips))):
            x = dec(torch.cat([up(x), skip], 1))
            if cfg.prior:
                f = 1 << (n_levels - 1 - k)
                b = F.avg_pool2d(base, f) if f > 1 else base
                sides.append((b + side(x)).clamp(0.0, 1.0))
            else:
                sides.append(torch.sigmoid(side(x)))
        return {"pred": sides[-1], "sides": sides, "confidence": m}


# --------------------------------------------------------------------------- weights
#: The model encode records in the manifest and decode uses unless told otherwise.
DEFAULT_MODEL = "fagdn-default"
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


def memory_format(layout: str) -> torch.memory_format:
    """The torch memory format of a network layout (one of LAYOUTS)."""
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def models_dirs() -> list[Path]:
    """Where weights are looked up: $RAWVID_MODELS (if set), the weights installed with the
    package, then the repository's models/ (a source checkout)."""
    env = os.environ.get("RAWVID_MODELS")
    dirs = ([Path(env)] if env else []) + [p for p in (_package_weights(),) if p is not None] + [MODELS_DIR]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def save_model(model: FAGDN, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write weights as safetensors, with the configuration in the file's metadata."""
    from safetensors.torch import save_file

    from .atomic import atomic_path

    meta = {"config": json.dumps(model.config.to_dict()), "architecture": "FAGDN"}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


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


def load_model(name_or_path: str, config: FAGDNConfig | None = None, device: str = "cpu") -> FAGDN:
    """Load weights (safetensors only: never unpickle); a config mismatch is a clear error."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = resolve_model(name_or_path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:
        raise RawvidError(path, f"not a safetensors weights file ({exc})") from None
    stored = FAGDNConfig.from_dict(json.loads(meta["config"])) if "config" in meta else None
    cfg = config or stored
    if cfg is None:
        raise RawvidError(path, "weights carry no configuration; pass one")
    model = FAGDN(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RawvidError(path, f"weights do not match the configuration {cfg.widths}/{cfg.bottleneck}: {first}") from None
    return model.to(device).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pad_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H and W at the bottom/right by reflection up to a multiple (replicate if too small)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def tile_weights(size: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blending weights of a tile along one axis.

    Near a cut edge (not a frame edge) the weight is 0 for the first quarter of the
    overlap, where zero padding corrupts the output, then ramps linearly to 1 across the
    next half; so local operators with a receptive radius under overlap/4 tile exactly,
    and anything non-local (global attention) is feathered instead of seamed.
    """
    w = torch.ones(size)
    if overlap >= 4:
        d = torch.arange(size, dtype=torch.float32)
        lo, hi = overlap / 4, 3 * overlap / 4
        ramp = lambda dist: ((dist - lo) / (hi - lo)).clamp(0, 1)  # noqa: E731
        if not at_start:
            w = torch.minimum(w, ramp(d))
        if not at_end:
            w = torch.minimum(w, ramp(size - 1 - d))
    return w


def step_inputs(config: FAGDNConfig, srgb_cur: torch.Tensor, srgb_prev: torch.Tensor, raw_prev: torch.Tensor,
                flow: torch.Tensor, prior_cur: torch.Tensor | None = None,
                prior_prev: torch.Tensor | None = None, key_srgb: torch.Tensor | None = None,
                key_residual: torch.Tensor | None = None, key_flow: torch.Tensor | None = None,
                key_prior: torch.Tensor | None = None, key_trust: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The network's inputs for one chained step (N x C x H x W each), warps included.

    Decode and training both build their inputs here, so the warp (bilinear) and the
    order of inputs can never differ between the two. ``key_trust`` (N x 1 x H x W, 0 or 1):
    where the flow to the keyframe is not trusted, the warped keyframe residual is zero (the
    keyframe then adds nothing to the global map and the chained reference).
    """
    if config.prior and (prior_cur is None or prior_prev is None):
        raise ValueError("this model needs the global-fit prior of both frames")
    # everything warped by one flow is warped in one call (per channel the same arithmetic, so the
    # same numbers; one sampling grid instead of one per image)
    warped_raw, warped_srgb, *warped_prior = _warp_all([raw_prev, srgb_prev] + ([prior_prev] if config.prior else []),
                                                       flow)
    inputs = [srgb_cur, srgb_prev, raw_prev, warped_raw, warped_srgb]
    if config.prior:
        inputs += [prior_cur, warped_prior[0], prior_prev]
    if config.key_reference:
        if key_srgb is None or key_residual is None or key_flow is None:
            raise ValueError("this model needs the keyframe (sRGB, residual) and the flow to it")
        ratio = config.ratio_refs or config.adaptive_refs
        if ratio and key_prior is None:
            raise ValueError("this model needs the keyframe's global-fit prior A(k)")
        key_warped, key_srgb_warped, *key_prior_warped = _warp_all(
            [key_residual, key_srgb] + ([key_prior] if ratio else []), key_flow)  # type: ignore[list-item]
        if key_trust is not None:
            key_warped = key_warped * key_trust
        inputs += [key_warped, key_srgb_warped, *key_prior_warped]
    return inputs


def _warp_all(images: list[torch.Tensor], flow: torch.Tensor) -> list[torch.Tensor]:
    """Backward-warp several N x C_i x H x W images by one flow: the images, warped, in order."""
    from .flow import backward_warp

    warped, _ = backward_warp(torch.cat(images, 1), flow)
    return list(torch.split(warped, [x.shape[1] for x in images], 1))


#: memory layouts the network can run in: ``channels_last`` (NHWC) is what new files are coded
#: with (measured: the forward 25-33% faster on this CPU, outputs within 6e-8 of the default
#: layout); ``contiguous`` (NCHW) is what files without a ``network_layout`` were coded with
LAYOUTS = ("contiguous", "channels_last")


def run_network(model: FAGDN, inputs: list[torch.Tensor], tile: int | None = None, overlap: int = 256,
                layout: str = "contiguous") -> torch.Tensor:
    """Predict RAW (1 x 4 x H x W) from :func:`step_inputs`' list.

    Pads to the network's multiple and crops back. With ``tile`` (half-resolution pixels),
    processes overlapping tiles aligned to the multiple and blends them with linear ramps.
    ``layout``: the memory format the model's weights are in (one of LAYOUTS); the inputs follow.
    """
    h, w = inputs[0].shape[-2:]
    mult = model.config.multiple
    fmt = memory_format(layout)
    if not tile or (h <= tile and w <= tile):
        padded = [pad_multiple(x, mult).contiguous(memory_format=fmt) for x in inputs]
        return model(*padded)["pred"][..., :h, :w].contiguous()
    tile = max(mult, tile // mult * mult)
    overlap = min(overlap // mult * mult if overlap >= mult else 0, tile // 2)
    stride = tile - overlap
    out = torch.zeros((1, RAW_CH, h, w), dtype=inputs[0].dtype, device=inputs[0].device)
    weight = torch.zeros((1, 1, h, w), dtype=inputs[0].dtype, device=inputs[0].device)

    def starts(n: int) -> list[int]:
        s = list(range(0, max(n - tile, 0) + 1, stride))
        if s[-1] + tile < n:
            s.append(s[-1] + stride)
        return s

    ys, xs = starts(h), starts(w)
    for y in ys:
        for x in xs:
            crop = [pad_multiple(t[..., y : y + tile, x : x + tile], mult).contiguous(memory_format=fmt) for t in inputs]
            th, tw = min(tile, h - y), min(tile, w - x)
            pred = model(*crop)["pred"][..., :th, :tw].contiguous()
            wy = tile_weights(th, overlap, y == 0, y + th >= h).to(pred)
            wx = tile_weights(tw, overlap, x == 0, x + tw >= w).to(pred)
            wt = (wy[:, None] * wx[None, :])[None, None]
            out[..., y : y + th, x : x + tw] += pred * wt
            weight[..., y : y + th, x : x + tw] += wt
    return out / weight.clamp_min(1e-8)


def receptive_radius(config: FAGDNConfig) -> int:
    """Half-width (half-resolution pixels) of the region a local output pixel depends on."""
    r = 0
    for lvl in range(config.depth):
        r += 2 * (1 << lvl) * 2  # two 3x3 convs in the encoder and two in the decoder
        if config.local_attention:
            r += config.patches[lvl] * (1 << lvl)
    r += 2 * (1 << config.depth)  # bottleneck block
    return int(math.ceil(r))
