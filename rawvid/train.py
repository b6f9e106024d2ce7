"""``rawvid train``: train FAGDN on RVD-layout folders, on the CPU (or a GPU), with resumable checkpoints.

Recipe (PAPER.md, with rawvid's measured additions):

* loss: L2 + SSIM loss (3x3 windows) on the prediction, plus ``aux_weight`` (0.5) times the
  mean of the same loss on the coarser side outputs against the downsampled target;
* Adam with step decay; random crops, flips and 90-degree rotations (the flow is computed
  after the augmentation, exactly as decode computes it, so it always matches);
* sRGB-codec augmentation: each clip's sRGB also passed through the default lossy encoder
  (H.265) at a random CRF, so lossy .rvd files do not cost quality;
* chained training: each sample starts at a random keyframe and is unrolled over several
  frames on the network's OWN outputs (truncated backpropagation every ``tbptt`` steps):
  what decode does, and the drift the one-step training of the paper never sees.

Checkpoints and exported weights are safetensors (never pickles).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .bayer import raw_planes, srgb_half
from .dataset import RVDLayout
from .flow import dis_flow, flow_to_tensor
from .methods import GlobalFit, Method, fit_global_map
from .network import Network
from .model import CONFIGS, FAGDN, FAGDNConfig, count_parameters, save_model, step_inputs

Log = Callable[[dict], None]


@dataclass
class TrainOptions:
    data: list[str]
    out: str = "runs/train"
    arch: str = "fast-key-g2"  # the shipped architecture (fagdn-v2)
    steps: int = 2000
    batch: int = 4
    crop: int = 128
    unroll: int = 6
    tbptt: int = 2
    lr: float = 1e-3
    lr_step: int = 800
    lr_gamma: float = 0.3
    ssim_weight: float = 1.0
    aux_weight: float = 0.5
    codec_prob: float = 0.7
    codec_crf: tuple[int, int] = (12, 26)
    val_fraction: float = 0.1
    val_every: int = 250
    val_frames: int = 24
    save_every: int = 100
    seed: int = 0
    device: str = "cpu"
    max_clips: int | None = None
    resume: bool = True
    per_frame_prob: float = 0.0  # share of samples whose prior uses each frame's own map (per-frame calibration)
    init: str | None = None  # start from these weights (fine-tuning)
    val_data: list[str] = field(default_factory=list)  # validate on these folders instead of held-out scenes
    #: extra loss weight where the sRGB is clipped (issue 11: there the RAW must come from the references)
    clipped_weight: float = 0.0


#: Configurations train can build by name: the paper's, and rawvid's with the global-fit prior.
TRAIN_CONFIGS: dict[str, FAGDNConfig] = {
    **CONFIGS,
    "fast-prior": FAGDNConfig(widths=(8, 16, 32, 64), bottleneck=64, patches=(16, 8, 4, 4), conf_width=8,
                              prior=True, gla_from=1),
    "small-prior": FAGDNConfig(widths=(12, 24, 48, 96), bottleneck=96, patches=(16, 8, 4, 4), conf_width=8,
                               prior=True, gla_from=1),
    "paper-prior": FAGDNConfig(prior=True),
    "fast-key": FAGDNConfig(widths=(8, 16, 32, 64), bottleneck=64, patches=(16, 8, 4, 4), conf_width=8,
                            prior=True, gla_from=1, key_reference=True),
    # fast-key without attention at level 1 (the finest level that had it): the forward 17% faster;
    # shipped as fagdn-v2 (fine-tuned from fagdn-default: models/fagdn-v2.md)
    "fast-key-g2": FAGDNConfig(widths=(8, 16, 32, 64), bottleneck=64, patches=(16, 8, 4, 4), conf_width=8,
                               prior=True, gla_from=2, key_reference=True),
    # fast-key + references scaled by the exposure ratio of the priors + the adaptive reference gate
    "fast-adaptive": FAGDNConfig(widths=(8, 16, 32, 64), bottleneck=64, patches=(16, 8, 4, 4), conf_width=8,
                                 prior=True, gla_from=1, key_reference=True, ratio_refs=True, adaptive_refs=True),
}


# --------------------------------------------------------------------------- data
@dataclass
class ClipData:
    """One training clip in memory: packed normalised RAW and its sRGB variants at half resolution."""

    name: str
    raw: np.ndarray  # T x 4 x h x w float32
    srgb: list[np.ndarray]  # variants, each T x 3 x h x w float32 (0: as given; others: codec-augmented)


def _codec_variant(frames_rgb: list[np.ndarray], crf: int, fps: float) -> list[np.ndarray]:
    """The frames after a round trip through the default lossy encoder at ``crf``."""
    from .video import VideoSettings, VideoWriter, read_frames

    h, w = frames_rgb[0].shape[:2]
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "v.mkv"
        with VideoWriter(path, w, h, fps, VideoSettings.make("h265", crf)) as wr:
            for f in frames_rgb:
                wr.write(f)
        return list(read_frames(path, w, h))


def load_clips(folders: list[str], rng: np.random.Generator, opts: TrainOptions, log: Log,
               mmap: bool = False) -> list[ClipData]:
    """Every clip of every folder, with its codec-augmented sRGB; cached in OUT/cache as .npy files
    (plain arrays, loaded with allow_pickle=False), so a resumed run starts in seconds. ``mmap``:
    map the cached arrays instead of reading them (a process of several touches only its shard)."""
    import hashlib

    key = hashlib.sha256(json.dumps([sorted(str(Path(f).resolve()) for f in folders), opts.seed, opts.max_clips,
                                     opts.codec_prob > 0, list(opts.codec_crf)]).encode()).hexdigest()[:16]
    cache = Path(opts.out) / "cache" / key
    index = cache / "index.json"
    if index.is_file():
        names = json.loads(index.read_text())
        clips = []
        mode = "r" if mmap else None
        for i, name in enumerate(names):
            raw = np.load(cache / f"{i:05d}_raw.npy", allow_pickle=False, mmap_mode=mode)
            variants = sorted(cache.glob(f"{i:05d}_srgb*.npy"))
            clips.append(ClipData(name, raw, [np.load(v, allow_pickle=False, mmap_mode=mode) for v in variants]))
        log({"event": "cache", "clips": len(clips), "path": str(cache)})
        return clips
    clips = _load_clips(folders, rng, opts, log)
    cache.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(clips):
        np.save(cache / f"{i:05d}_raw.npy", c.raw)
        for j, v in enumerate(c.srgb):
            np.save(cache / f"{i:05d}_srgb{j}.npy", v)
    from .atomic import atomic_write

    with atomic_write(index) as f:  # the index last: a cache without it is rebuilt, never half-read
        f.write(json.dumps([c.name for c in clips]).encode())
    return clips


def _load_clips(folders: list[str], rng: np.random.Generator, opts: TrainOptions, log: Log) -> list[ClipData]:
    clips = []
    for folder in folders:
        layout = RVDLayout.open(folder)
        videos = layout.videos[: opts.max_clips] if opts.max_clips else layout.videos
        for k, v in enumerate(videos):
            info = layout.video_info(v)
            if info.width % 4 or info.height % 4:
                continue
            rgbs = [layout.read_srgb(v, f) for f in v.frames]
            raw = np.stack([raw_planes(layout.read_raw(v, f), info) for f in v.frames])
            variants = [np.stack([srgb_half(x) for x in rgbs])]
            if opts.codec_prob > 0:
                crf = int(rng.integers(opts.codec_crf[0], opts.codec_crf[1] + 1))
                variants.append(np.stack([srgb_half(x) for x in _codec_variant(rgbs, crf, info.fps)]))
            clips.append(ClipData(f"{Path(folder).name}/{v.name}", raw.astype(np.float32), variants))
            if (k + 1) % 20 == 0:
                log({"event": "loading", "clips": len(clips)})
    return clips


def split_val(clips: list[ClipData], fraction: float, seed: int) -> tuple[list[ClipData], list[ClipData]]:
    """Hold out whole scenes (clip names share the scene prefix before the last '_'). With a single
    scene (one camera, one still) there is none to hold out: the last clips of it validate instead
    (their camera paths, motion and noise differ; the scene does not, so the figure is optimistic)."""
    scenes = sorted({c.name.rsplit("_", 1)[0] for c in clips})
    if len(scenes) == 1 and fraction > 0 and len(clips) > 1:
        n = max(1, int(round(fraction * len(clips))))
        return clips[:-n], clips[-n:]
    rng = np.random.default_rng(seed + 1)
    n = max(1, int(round(fraction * len(scenes)))) if fraction > 0 and len(scenes) > 1 else 0
    val_scenes = set(rng.permutation(scenes)[:n].tolist())
    return ([c for c in clips if c.name.rsplit("_", 1)[0] not in val_scenes],
            [c for c in clips if c.name.rsplit("_", 1)[0] in val_scenes])


def _augment(a: np.ndarray, flip_h: bool, flip_v: bool, rot: int) -> np.ndarray:
    if flip_h:
        a = a[..., :, ::-1]
    if flip_v:
        a = a[..., ::-1, :]
    if rot:
        a = np.rot90(a, rot, axes=(-2, -1))
    return np.ascontiguousarray(a)


@dataclass
class Sample:
    raw: np.ndarray  # (unroll+1) x 4 x c x c
    srgb: np.ndarray  # (unroll+1) x 3 x c x c
    prior: np.ndarray | None  # (unroll+1) x 4 x c x c: the keyframe's global-fit map applied


def draw_sample(clip: ClipData, rng: np.random.Generator, opts: TrainOptions, prior: bool) -> Sample:
    t_len, _, h, w = clip.raw.shape
    n = min(opts.unroll + 1, t_len)
    s = int(rng.integers(0, t_len - n + 1))
    v = clip.srgb[1] if len(clip.srgb) > 1 and rng.random() < opts.codec_prob else clip.srgb[0]
    raw, srgb = clip.raw[s : s + n], v[s : s + n]
    pri = None
    if prior and rng.random() < opts.per_frame_prob:  # per-frame calibration: each frame's own map
        pri = np.stack([fit_global_map(x, r).apply(x) for x, r in zip(srgb, raw)])
    elif prior:  # fitted on the keyframe's whole frame, as decode does, then applied to every frame
        gmap = fit_global_map(srgb[0], raw[0])
        pri = np.stack([gmap.apply(x) for x in srgb])
    c = min(opts.crop, h, w)
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    fh, fv, rot = bool(rng.random() < 0.5), bool(rng.random() < 0.5), int(rng.integers(0, 4))
    crop = lambda a: _augment(a[..., y : y + c, x : x + c], fh, fv, rot)  # noqa: E731
    return Sample(crop(raw), crop(srgb), None if pri is None else crop(pri))


# --------------------------------------------------------------------------- loss
def ssim3(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM with 3x3 uniform windows (the paper's loss), data range 1."""
    c1, c2 = 0.01**2, 0.03**2
    mx, my = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
    sxx = F.avg_pool2d(x * x, 3, 1, 1, count_include_pad=False) - mx * mx
    syy = F.avg_pool2d(y * y, 3, 1, 1, count_include_pad=False) - my * my
    sxy = F.avg_pool2d(x * y, 3, 1, 1, count_include_pad=False) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


#: a half-resolution sRGB value (the mean of 2x2 pixels) at or above this counts as clipped
CLIPPED_SRGB = 250 / 255


def clipped_weights(srgb: torch.Tensor, weight: float) -> torch.Tensor | None:
    """Per-pixel loss weights (N x 1 x H x W): 1, and 1 + ``weight`` where any sRGB channel is clipped."""
    if not weight:
        return None
    return 1.0 + weight * (srgb.amax(1, keepdim=True) >= CLIPPED_SRGB).to(srgb.dtype)


def image_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE (weighted per pixel when ``weights`` are given, normalised by their mean) + SSIM term."""
    if weights is None:
        loss = F.mse_loss(pred, target)
    else:
        loss = ((pred - target) ** 2 * weights).mean() / weights.mean()
    if ssim_weight:
        loss = loss + ssim_weight * (1.0 - ssim3(pred, target))
    return loss


def step_loss(out: dict, target: torch.Tensor, opts: TrainOptions, srgb: torch.Tensor | None = None) -> torch.Tensor:
    """The step's loss: the prediction's, plus the coarse side outputs' (``srgb``: the frame's, for
    the clipped-region weights)."""
    w = clipped_weights(srgb, opts.clipped_weight) if srgb is not None else None
    loss = image_loss(out["pred"], target, opts.ssim_weight, w)
    coarse = out["sides"][:-1]
    if coarse and opts.aux_weight:
        aux = [image_loss(side, F.adaptive_avg_pool2d(target, side.shape[-2:]), opts.ssim_weight,
                          None if w is None else F.adaptive_avg_pool2d(w, side.shape[-2:])) for side in coarse]
        loss = loss + opts.aux_weight * torch.stack(aux).mean()
    return loss


# --------------------------------------------------------------------------- chained forward
def _flows(srgb: np.ndarray, to_keyframe: bool = False) -> list[torch.Tensor]:
    """Backward flow from each frame to the previous one (as decode computes it), or straight to the
    keyframe (frame 0) for the non-accumulating reference."""
    return [flow_to_tensor(dis_flow(srgb[t].transpose(1, 2, 0), srgb[0 if to_keyframe else t - 1].transpose(1, 2, 0)))
            for t in range(1, srgb.shape[0])]


def unrolled_loss(model: FAGDN, batch: list[Sample], opts: TrainOptions, device: str,
                  forward: Callable | None = None) -> tuple[torch.Tensor, list[float]]:
    """Chain each sample from its keyframe on the network's own outputs; mean loss over steps.
    ``forward``: what runs the model (its DistributedDataParallel wrapper when there is one)."""
    forward = forward or model
    raw = torch.from_numpy(np.stack([s.raw for s in batch])).to(device)  # B x T x 4 x c x c
    srgb = torch.from_numpy(np.stack([s.srgb for s in batch])).to(device)
    prior = torch.from_numpy(np.stack([s.prior for s in batch])).to(device) if batch[0].prior is not None else None
    flows = [torch.cat(f, 0).to(device) for f in zip(*[_flows(s.srgb) for s in batch])]
    key = model.config.key_reference
    if key:
        key_flows = [torch.cat(f, 0).to(device) for f in zip(*[_flows(s.srgb, to_keyframe=True) for s in batch])]
        key_res = raw[:, 0] - prior[:, 0]
    prev = raw[:, 0]
    losses, mses = [], []
    for t in range(1, raw.shape[1]):
        pri = {"prior_cur": prior[:, t], "prior_prev": prior[:, t - 1]} if prior is not None else {}
        if key:
            pri.update(key_srgb=srgb[:, 0], key_residual=key_res, key_flow=key_flows[t - 1], key_prior=prior[:, 0])
        inputs = step_inputs(model.config, srgb[:, t], srgb[:, t - 1], prev, flows[t - 1], **pri)
        out = forward(*inputs)
        losses.append(step_loss(out, raw[:, t], opts, srgb[:, t]))
        mses.append(float(F.mse_loss(out["pred"].detach(), raw[:, t])))
        prev = out["pred"]
        if t % opts.tbptt == 0:
            prev = prev.detach()
    return torch.stack(losses).mean(), mses


# --------------------------------------------------------------------------- validation
def chain_psnr(method: Method, raw: np.ndarray, srgb: np.ndarray, levels: int = 16383) -> list[float]:
    """Decode's chain over one clip in memory: keyframe 0, then every frame from the previous output
    (quantised to ``levels`` as a written DNG would be). Black-subtracted PSNR per predicted frame."""
    method.keyframe(raw[0], srgb[0])
    prev, scores = raw[0], []
    for t in range(1, raw.shape[0]):
        pred = np.round(np.clip(method.predict(prev, srgb[t - 1], srgb[t]), 0.0, 1.0) * levels) / levels
        scores.append(10 * math.log10(1 / max(1e-12, float(((pred - raw[t]) ** 2).mean()))))
        prev = pred.astype(np.float32)
    return scores


def validate(model: FAGDN, clips: list[ClipData], frames: int, device: str,
             fit_cache: dict | None = None) -> dict:
    """Chained PSNR (black-subtracted) over whole clips from frame 0, against keyframe global-fit,
    through the very methods decode uses (:class:`rawvid.network.Network` and ``GlobalFit``).

    Global-fit's scores do not depend on the model: pass the same ``fit_cache`` dict to every
    validation of a run and they are computed once."""
    model.eval()
    net_scores, fit_scores, gains = [], [], []
    fit_cache = {} if fit_cache is None else fit_cache
    for k, clip in enumerate(clips):
        srgb = clip.srgb[-1][:frames]  # the codec-augmented variant: what a default .rvd holds
        raw = clip.raw[:frames]
        net = chain_psnr(Network(model, device=device), raw, srgb)
        if (k, frames) not in fit_cache:
            fit_cache[(k, frames)] = chain_psnr(GlobalFit(), raw, srgb)
        fit = fit_cache[(k, frames)]
        net_scores += net
        fit_scores += fit
        gains.append(float(np.mean(net) - np.mean(fit)))
    model.train()
    net, fit = float(np.mean(net_scores)), float(np.mean(fit_scores))
    return {"val_psnr": net, "val_psnr_global_fit": fit, "val_gain_db": net - fit,
            "val_min_clip_gain_db": min(gains), "val_clips_ahead": sum(g > 0 for g in gains)}


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model: FAGDN, opt: torch.optim.Optimizer, sched, step: int, extra: dict) -> None:
    """Model and Adam state as safetensors (never pickles); scalars in the metadata."""
    from safetensors.torch import save_file

    from .atomic import atomic_path

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    tensors[f"opt.{names[id(p)]}.{key}"] = st[key].detach().cpu().contiguous()
            if "step" in st:
                tensors[f"opt.{names[id(p)]}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    meta = {"step": str(step), "config": json.dumps(model.config.to_dict()), "lr": str(opt.param_groups[0]["lr"]),
            "sched": json.dumps(sched.state_dict()), "extra": json.dumps(extra)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(path: Path, model: FAGDN, opt: torch.optim.Optimizer, sched) -> tuple[int, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(model.named_parameters())
    for name, p in params.items():
        st = {}
        for key in ("exp_avg", "exp_avg_sq"):
            if f"opt.{name}.{key}" in tensors:
                st[key] = tensors[f"opt.{name}.{key}"].to(p.device)
        if f"opt.{name}.step" in tensors:
            st["step"] = tensors[f"opt.{name}.step"].reshape(()).to(torch.float32)
        if st:
            opt.state[p] = st
    for g in opt.param_groups:
        g["lr"] = float(meta["lr"])
    sched.load_state_dict(json.loads(meta["sched"]))
    return int(meta["step"]), json.loads(meta.get("extra", "{}"))


def warm_start(model: FAGDN, weights: str) -> tuple[int, int]:
    """Initialise from other weights: tensors of the same shape are copied; a conv whose input
    channels grew keeps the old channels and starts the new ones at zero; new modules stay fresh."""
    from .model import load_model

    src = load_model(weights).state_dict()
    state = model.state_dict()
    copied = 0
    for k, v in state.items():
        w = src.get(k)
        if w is None:
            continue
        if w.shape == v.shape:
            state[k] = w.clone()
            copied += 1
        elif w.dim() == 4 and w.shape[0] == v.shape[0] and w.shape[2:] == v.shape[2:] and w.shape[1] < v.shape[1]:
            grown = torch.zeros_like(v)
            grown[:, : w.shape[1]] = w
            state[k] = grown
            copied += 1
    model.load_state_dict(state)
    return copied, len(state)


# --------------------------------------------------------------------------- main loop
@dataclass
class TrainResult:
    weights: Path
    card: Path
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def train(opts: TrainOptions, log: Log | None = None, command: str = "") -> TrainResult:
    """Train, checkpointing every ``save_every`` steps; resumes from ``out/checkpoint.safetensors``.

    Under ``torchrun`` every process trains a DistributedDataParallel replica on its shard of the
    training clips with its share of the batch; rank 0 alone validates and writes (see
    :mod:`rawvid.distributed`)."""
    from . import distributed

    world = distributed.world_from_env()
    log = log or (lambda d: print(json.dumps(d), flush=True))
    if not world.main:
        log = lambda d: None  # noqa: E731 - one log, rank 0's
    if opts.batch % world.size:
        raise ValueError(f"--batch {opts.batch} must be a multiple of the {world.size} training processes")
    device = distributed.start(world, opts.device)
    try:
        return _train(opts, log, command, world, device)
    finally:
        distributed.stop(world)


def _train(opts: TrainOptions, log: Log, command: str, world, device: str) -> TrainResult:
    from . import distributed

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    if not device.startswith("cuda"):
        torch.set_num_threads(distributed.threads_per_process(world))
    cfg = TRAIN_CONFIGS[opts.arch] if opts.arch in TRAIN_CONFIGS else FAGDNConfig.from_dict(json.loads(opts.arch))
    if opts.crop % cfg.multiple:
        raise ValueError(f"--crop {opts.crop} must be a multiple of {cfg.multiple} for this architecture")
    t_load = time.perf_counter()
    # rank 0 builds the clip cache, the others read it after (mapped: each touches its own shard)
    if not world.main:
        distributed.barrier(world)
    clips = load_clips(opts.data, rng, opts, log, mmap=world.distributed)
    val_extra = load_clips(opts.val_data, np.random.default_rng(opts.seed + 1), opts, log, mmap=world.distributed) \
        if opts.val_data and world.main else []  # its own generator: adding --val leaves the samples unchanged
    if world.main:
        distributed.barrier(world)
    if not clips:
        raise ValueError("no training clips found")
    if opts.val_data:
        train_clips, val_clips = clips, val_extra
    else:
        train_clips, val_clips = split_val(clips, opts.val_fraction, opts.seed)
    if world.distributed:
        if len(train_clips) < world.size:
            raise ValueError(f"{len(train_clips)} training clips for {world.size} processes: each needs one")
        train_clips = train_clips[world.rank :: world.size]
        val_clips = val_clips if world.main else []
        rng = np.random.default_rng([opts.seed, world.rank])  # each process its own samples
    fit_cache: dict = {}  # global-fit's validation scores, computed at the first validation
    log({"event": "data", "train_clips": len(train_clips) * world.size, "val_clips": len(val_clips),
         "processes": world.size, "seconds": round(time.perf_counter() - t_load, 1)})
    model = FAGDN(cfg).to(device)
    if opts.init:
        copied, total = warm_start(model, opts.init)
        log({"event": "init", "weights": opts.init, "tensors_copied": copied, "tensors": total})
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=opts.lr_step, gamma=opts.lr_gamma)
    ckpt = out / "checkpoint.safetensors"
    step, state = 0, {"history": [], "seconds": 0.0, "best_gain": -1e9}
    if opts.resume and ckpt.is_file():  # every process reads rank 0's checkpoint
        step, state = load_checkpoint(ckpt, model, opt, sched)
        log({"event": "resumed", "step": step})
    forward = model
    if world.distributed:  # wraps after loading: DDP starts every replica from rank 0's weights
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[world.local_rank] if device.startswith("cuda") else None)
    history: list[dict] = state["history"]
    seconds = float(state["seconds"])
    log({"event": "start", "config": cfg.to_dict(), "parameters": count_parameters(model), "options": asdict(opts),
         "processes": world.size})
    model.train()
    per_process = opts.batch // world.size
    t0 = time.perf_counter()
    while step < opts.steps:
        batch = [draw_sample(train_clips[int(rng.integers(len(train_clips)))], rng, opts, cfg.prior)
                 for _ in range(per_process)]
        loss, mses = unrolled_loss(model, batch, opts, device, forward)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradients arrive averaged over the processes
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % 10 == 0:
            mean_loss, mse_first, mse_last = distributed.mean(world, [float(loss.detach()), mses[0], mses[-1]])
            log({"event": "step", "step": step, "loss": round(mean_loss, 6), "lr": opt.param_groups[0]["lr"],
                 "psnr_first": round(-10 * math.log10(max(mse_first, 1e-12)), 2),
                 "psnr_last": round(-10 * math.log10(max(mse_last, 1e-12)), 2),
                 "sec_per_step": round((time.perf_counter() - t0) / 10, 2)})
            seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
        if val_clips and (step % opts.val_every == 0 or step == opts.steps):
            v = validate(model, val_clips, opts.val_frames, device, fit_cache)
            v["step"] = step
            history.append(v)
            log({"event": "val", **v})
            if v["val_gain_db"] > state["best_gain"]:
                state["best_gain"] = v["val_gain_db"]
                save_model(model, out / "best.safetensors", {"step": step, **v})
        if world.main and (step % opts.save_every == 0 or step == opts.steps):
            seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save_checkpoint(ckpt, model, opt, sched, step, {**state, "history": history, "seconds": seconds})
    weights = out / "final.safetensors"
    card = out / "MODEL_CARD.md"
    if world.main:
        save_model(model, weights, {"steps": step, "history": history[-1:] if history else []})
        if not (out / "best.safetensors").is_file():  # no validation ran: the weights to use are the last ones
            save_model(model, out / "best.safetensors", {"step": step, "validated": False})
        card = write_card(card, cfg, opts, step, seconds, history, command, count_parameters(model), world.size)
    distributed.barrier(world)  # the others return once the files exist
    return TrainResult(weights, card, step, seconds, history)


def write_card(path: Path, cfg: FAGDNConfig, opts: TrainOptions, steps: int, seconds: float, history: list[dict],
               command: str, params: int, processes: int = 1) -> Path:
    last = history[-1] if history else {}
    best = max(history, key=lambda h: h["val_gain_db"]) if history else {}
    if history:
        validation = (f"validation ({', '.join(opts.val_data) if opts.val_data else 'held-out scenes'}, chained from "
                      f"frame 0 over\n  {opts.val_frames} frames, H.265-augmented sRGB, black-subtracted PSNR): last "
                      f"{last['val_psnr']:.2f} dB\n  vs global-fit {last['val_psnr_global_fit']:.2f} dB (gain "
                      f"{last['val_gain_db']:+.2f} dB,\n  worst clip {last['val_min_clip_gain_db']:+.2f} dB); best gain "
                      f"{best['val_gain_db']:+.2f} dB\n  at step {best['step']} (best.safetensors)")
    else:
        validation = ("validation: none ran (no validation clips; give --val-data, or more than one clip): "
                      "best.safetensors holds the last weights, unvalidated")
    text = f"""# FAGDN weights trained by rawvid

Method: FAGDN (Zhang et al., "Leveraging Frame Affinity for sRGB-to-RAW Video De-rendering", CVPR 2024),
as implemented in rawvid/model.py{", with rawvid's global-fit prior (residual over the keyframe's global map)" if cfg.prior else ""}.

- architecture: `{json.dumps(cfg.to_dict())}` ({params:,} parameters)
- data: {", ".join(opts.data)}{f" (initialised from {opts.init})" if opts.init else ""}
- priors: keyframe global-fit map, or each frame's own map (per-frame calibration) for {opts.per_frame_prob:.0%} of samples
- command: `{command}`
- steps: {steps}, batch {opts.batch}, crop {opts.crop}, unrolled {opts.unroll} frames (truncated every {opts.tbptt}),
  loss L2 + {opts.ssim_weight} x SSIM(3x3) + {opts.aux_weight} x side outputs, Adam lr {opts.lr} x {opts.lr_gamma} every {opts.lr_step}
- training time: {seconds / 60:.1f} minutes on {opts.device} ({os.cpu_count()} cores){
    f", {processes} processes (torchrun, DistributedDataParallel, batch {opts.batch // processes} each)"
    if processes > 1 else ""}
- {validation}

Measured quality on the test split comes from `rawvid bench` (see the README).
"""
    path.write_text(text)
    return path
