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

import contextlib
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import RawvidError
from .netinputs import assemble, pad_amounts, tiles
from .weights import (  # noqa: F401  (the names were defined here first; importers keep working)
    CONFIGS, DEFAULT_MODEL, LAYOUTS, MODELS_DIR, RAW_CH, SRGB_CH, FAGDNConfig, missing_weights_note, model_label,
    models_dirs, resolve_model, stored_config,
)


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


def _grid_max(x: torch.Tensor, p: int) -> torch.Tensor:
    """``F.adaptive_max_pool2d(x, (p, p))``. When exporting to ONNX (where the sides divide by p: the
    network pads to its multiple), the same values as a reshape and max, which the export keeps
    dynamic in height and width; eager PyTorch keeps its own pooling, 20x faster here."""
    n, c, h, w = x.shape
    if not torch.compiler.is_exporting() or h % p or w % p:
        return F.adaptive_max_pool2d(x, (p, p))
    return x.reshape(n, c, p, h // p, p, w // p).amax(dim=(3, 5))


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
        qt = _grid_max(cur, p).flatten(2).transpose(1, 2)  # N x p*p x C
        kt = _grid_max(prev, p).flatten(2).transpose(1, 2)
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
        step = 1024  # windows per attention call: bounds memory on large frames (256 MB at 16x16)
        if torch.compiler.is_exporting():  # an exported graph has no loops over data-dependent sizes
            out = attention(q, k, v)
        else:
            out = torch.empty_like(q)
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
        """One chained step. Returns {"pred", "sides" (coarse to fine; in eval mode the finest alone), "confidence"}.

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
            if not self.training and k < n_levels - 1:
                continue  # the coarse side outputs feed only the training loss (inference: 3-4% of a forward)
            if cfg.prior:
                f = 1 << (n_levels - 1 - k)
                b = F.avg_pool2d(base, f) if f > 1 else base
                sides.append((b + side(x)).clamp(0.0, 1.0))
            else:
                sides.append(torch.sigmoid(side(x)))
        return {"pred": sides[-1], "sides": sides, "confidence": m}


# --------------------------------------------------------------------------- weights
def memory_format(layout: str) -> torch.memory_format:
    """The torch memory format of a network layout (one of LAYOUTS)."""
    return torch.channels_last if layout.startswith("channels_last") else torch.contiguous_format


def precision(layout: str, device: torch.device | str = "cpu"):
    """The context a network layout's arithmetic runs in: bfloat16 autocast for ``*_bf16``."""
    if layout.endswith("_bf16"):
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_model(model: FAGDN, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write weights as safetensors, with the configuration in the file's metadata."""
    from safetensors.torch import save_file

    from .atomic import atomic_path

    meta = {"config": json.dumps(model.config.to_dict()), "architecture": "FAGDN"}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def load_model(name_or_path: str, config: FAGDNConfig | None = None, device: str = "cpu") -> FAGDN:
    """Load weights (safetensors only: never unpickle); a config mismatch is a clear error."""
    from safetensors.torch import load_file

    path = resolve_model(name_or_path)
    cfg = config or stored_config(path)
    if cfg is None:
        raise RawvidError(path, "weights carry no configuration; pass one")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise RawvidError(path, f"not a safetensors weights file ({exc})") from None
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
    ph, pw, reflect = pad_amounts(*x.shape[-2:], multiple)
    if not ph and not pw:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="reflect" if reflect else "replicate")


def step_inputs(config: FAGDNConfig, srgb_cur: torch.Tensor, srgb_prev: torch.Tensor, raw_prev: torch.Tensor,
                flow: torch.Tensor, prior_cur: torch.Tensor | None = None,
                prior_prev: torch.Tensor | None = None, key_srgb: torch.Tensor | None = None,
                key_residual: torch.Tensor | None = None, key_flow: torch.Tensor | None = None,
                key_prior: torch.Tensor | None = None, key_trust: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The network's inputs for one chained step (N x C x H x W each), warps included.

    Decode and training both build their inputs here (and ONNX Runtime's path through the same
    :func:`rawvid.netinputs.assemble`), so the warp (bilinear) and the order of inputs can never
    differ between them. ``key_trust``: N x 1 x H x W, 0 or 1.
    """
    return assemble(config, _warp_all, srgb_cur, srgb_prev, raw_prev, flow, prior_cur, prior_prev, key_srgb,
                    key_residual, key_flow, key_prior, key_trust)


def _warp_all(images: list[torch.Tensor], flow: torch.Tensor) -> list[torch.Tensor]:
    """Backward-warp several N x C_i x H x W images by one flow: the images, warped, in order."""
    from .flow import backward_warp

    warped, _ = backward_warp(torch.cat(images, 1), flow)
    return list(torch.split(warped, [x.shape[1] for x in images], 1))


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
        with precision(layout, inputs[0].device):
            pred = model(*padded)["pred"]
        return pred[..., :h, :w].float().contiguous()
    tile, plan = tiles(h, w, tile, overlap, mult)
    out = torch.zeros((1, RAW_CH, h, w), dtype=inputs[0].dtype, device=inputs[0].device)
    weight = torch.zeros((1, 1, h, w), dtype=inputs[0].dtype, device=inputs[0].device)
    for y, x, wt in plan:
        th, tw = wt.shape
        crop = [pad_multiple(t[..., y : y + tile, x : x + tile], mult).contiguous(memory_format=fmt) for t in inputs]
        with precision(layout, inputs[0].device):
            pred = model(*crop)["pred"]
        pred = pred[..., :th, :tw].float().contiguous()
        wt = torch.from_numpy(wt).to(pred)[None, None]
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
