"""``rawvid bench``: quality, rate and speed of every method, side by side, from one command.

Every measurement is the real path a user runs: each clip is encoded to an .rvd with
the setting under test, decoded to DNG files with each method, and every decoded frame
is compared with the true RAW. For RVD-layout folders the given lossless sRGB PNGs are
stored losslessly (FFV1 is bit-exact), which is the paper's protocol; ``reencode``
passes them through the lossy settings instead.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .codec import DecodeOptions, EncodeOptions, decode, encode, frame_name
from .container import RvdFile
from .dataset import RVDLayout
from .dng import encode_dng, read_dng
from .errors import RawvidError
from .metrics import frame_scores
from .source import Source, open_source, rvd_video_source
from .video import VideoSettings

BenchProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: how the clip is encoded."""

    video: VideoSettings
    keyframe_interval: int = 0
    render: str = "stable"
    calibration: str = "auto"
    refine: str = "auto"

    @property
    def label(self) -> str:
        v = "lossless" if self.video.lossless else f"{self.video.codec}-crf{self.video.crf}"
        kf = f"kf{self.keyframe_interval}" if self.keyframe_interval else "kf-first"
        cal = "" if self.calibration == "auto" else f" cal-{self.calibration}"
        ref = "" if self.refine == "auto" else f" refine-{self.refine}"
        return f"{v} {kf} {self.render}{cal}{ref}"

    def to_dict(self) -> dict:
        return {"label": self.label, "video": self.video.to_dict(), "keyframe_interval": self.keyframe_interval,
                "render": self.render, "calibration": self.calibration, "refine": self.refine}


@dataclass(frozen=True)
class MethodSpec:
    method: str  # network | global-fit | warp
    model: str | None = None

    @property
    def label(self) -> str:
        return f"network:{Path(self.model).stem}" if self.method == "network" and self.model else self.method


@dataclass
class Clip:
    name: str
    kind: str
    open: Callable[[], Source]
    tags: list[str] = field(default_factory=list)


def sweep(crfs: list[int] | None, lossless: bool, keyframe_intervals: list[int], renders: list[str],
          codec: str = "h265", calibrations: list[str] | None = None, refines: list[str] | None = None) -> list[Setting]:
    """Every combination of the swept options (``--lossless`` adds a lossless point)."""
    videos = [VideoSettings.make(codec, c) for c in (crfs or ([] if lossless else [16]))]
    if lossless:
        videos.append(VideoSettings.make(lossless=True))
    return [Setting(v, k, r, c, f) for v, k, r, c, f in
            itertools.product(videos, keyframe_intervals, renders, calibrations or ["auto"], refines or ["auto"])]


def discover(paths: list[Path]) -> list[Clip]:
    """Clips to bench: RVD-layout splits, MLV files, DNG-sequence folders, and folders of those."""
    clips: list[Clip] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise RawvidError(p, "no such file or folder")
        if RVDLayout.is_layout(p):
            layout = RVDLayout.open(p)
            for v in layout.videos:
                clips.append(Clip(f"{p.name}/{v.name}", "rvd-layout",
                                  (lambda lay=layout, vid=v: rvd_video_source(lay, vid)), v.tags))
        elif p.is_file() and p.suffix.lower() == ".mlv":
            clips.append(Clip(p.stem, "mlv", (lambda q=p: open_source(q))))
        elif p.is_dir() and any(q.suffix.lower() == ".dng" for q in p.iterdir()):
            clips.append(Clip(p.name, "dng-sequence", (lambda q=p: open_source(q))))
        elif p.is_dir():
            inner = sorted(q for q in p.iterdir() if q.suffix.lower() == ".mlv" or q.is_dir())
            found = discover(inner) if inner else []
            if not found:
                raise RawvidError(p, "no clips here (MLV files, DNG folders or RVD-layout folders)")
            clips.extend(found)
        else:
            raise RawvidError(p, "not a clip (expected an MLV file, a DNG folder or an RVD-layout folder)")
    return clips


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def lj92_dng_bytes(src: Source, stop: int) -> int:
    """Bytes of the same frames stored as lossless-JPEG DNGs (the lossless reference)."""
    return sum(len(encode_dng(fr.mosaic, src.info, compress=True)) for fr in src.frames(0, stop) if fr.mosaic is not None)


def bench_clip(clip: Clip, setting: Setting, methods: list[MethodSpec], work: Path, *, max_frames: int | None,
               device: str, lj92_cache: dict, progress: BenchProgress | None = None) -> list[dict]:
    """Encode one clip with one setting, decode it with every method, score every frame."""
    src = clip.open()
    with src:
        stop = src.frame_count if max_frames is None else min(max_frames, src.frame_count)
        rvd_path = work / "clip.rvd"
        t0 = time.perf_counter()
        # block refinement is made for one model: the first network under test (decode skips it for others)
        model = next((m.model for m in methods if m.method == "network" and m.model), None)
        refine = setting.refine if model or setting.refine != "auto" else "off"
        enc = encode(src, rvd_path, EncodeOptions(keyframe_interval=setting.keyframe_interval, render=setting.render,
                                                  video=setting.video, stop=stop, calibration=setting.calibration,
                                                  refine=refine, model=model, device=device),
                     force=True,
                     progress=(lambda d, n, stage="encode": progress(f"{clip.name}: {stage}", d, n))
                     if progress else None)
        encode_s = time.perf_counter() - t0
        info = src.info
        if clip.name not in lj92_cache:
            lj92_cache[clip.name] = lj92_dng_bytes(src, stop)
        rvd = RvdFile(rvd_path)
        sizes, manifest = rvd.sizes(), rvd.manifest
        refine_mode = (manifest.get("refine") or {}).get("mode", "off")
        keyframes = {k["index"] for k in manifest["keyframes"]}
        samples = stop * info.width * info.height
        rate = {
            "bits_per_pixel": sizes["bits_per_pixel"],
            "video_bits_per_pixel": sizes["video_bits_per_pixel"],
            "keyframe_bits_per_pixel": sizes["keyframe_bits_per_pixel"],
            "video_share": sizes["video_bytes"] / sizes["file_bytes"],
            "keyframe_share": sizes["keyframe_bytes"] / sizes["file_bytes"],
            "side_info_share": sizes["side_info_bytes"] / sizes["file_bytes"],
            "rvd_bytes": sizes["file_bytes"],
            "source_bytes": src.size_bytes if stop == src.frame_count else int(src.size_bytes * stop / src.frame_count),
            "lj92_dng_bytes": lj92_cache[clip.name],
            "lj92_dng_bits_per_pixel": 8 * lj92_cache[clip.name] / samples,
        }
        rate["ratio_vs_source"] = rate["source_bytes"] / sizes["file_bytes"]
        rate["ratio_vs_lj92_dng"] = rate["lj92_dng_bytes"] / sizes["file_bytes"]
        runs = []
        for spec in methods:
            out = work / f"frames-{spec.method}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            dec = decode(rvd_path, out, DecodeOptions(method=spec.method, model=spec.model, device=device),
                         progress=(lambda d, n: progress(f"{clip.name}: {spec.label}", d, n)) if progress else None)
            decode_s = time.perf_counter() - t0
            per_frame = []
            for fr in src.frames(0, stop):
                got, _ = read_dng(out / frame_name(dec.clip, fr.index))
                scores = frame_scores(got, fr.mosaic, info.cfa, info.bits, info.black, info.white)
                key = fr.index in keyframes
                per_frame.append({"index": fr.index, "keyframe": key,
                                  **{k: (None if key else v) for k, v in scores.items()}})
            shutil.rmtree(out, ignore_errors=True)
            scored = [f for f in per_frame if not f["keyframe"]]
            last = per_frame[-1]
            runs.append({
                "clip": clip.name, "kind": clip.kind, "tags": clip.tags, "setting": setting.label,
                "calibration": (manifest.get("calibration") or {}).get("mode", "keyframe"), "refine": refine_mode,
                "method": spec.label, "model": spec.model, "frames": stop, "scored_frames": len(scored),
                "psnr_paper": _mean([f["psnr_paper"] for f in scored]),
                "psnr_black": _mean([f["psnr_black"] for f in scored]),
                "ssim": _mean([f["ssim"] for f in scored]),
                "last_frame": {"index": last["index"], "psnr_paper": last["psnr_paper"], "psnr_black": last["psnr_black"]},
                "per_frame": per_frame,
                "rate": rate,
                "speed": {"encode_fps": enc.frames / encode_s, "decode_fps": dec.frames / decode_s,
                          "decode_seconds_per_frame": {k: v / max(1, dec.frames) for k, v in dec.timings.items()},
                          "device": dec.device, "decode_method": dec.method},
            })
        rvd_path.unlink(missing_ok=True)
    return runs


def summarise(runs: list[dict]) -> dict:
    """Means over clips per (setting, method), per-frame-index curves, and per-tag groups."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["setting"], r["method"]), []).append(r)
    summary = []
    for (setting, method), rs in groups.items():
        n = max(r["frames"] for r in rs)

        def by_frame(key: str) -> list[float | None]:
            return [_mean([r["per_frame"][i][key] for r in rs if i < len(r["per_frame"])]) for i in range(n)]

        curve, curve_paper = by_frame("psnr_black"), by_frame("psnr_paper")
        summary.append({
            "setting": setting, "method": method, "clips": len(rs),
            "psnr_paper": _mean([r["psnr_paper"] for r in rs]), "psnr_black": _mean([r["psnr_black"] for r in rs]),
            "ssim": _mean([r["ssim"] for r in rs]),
            "last_frame_psnr_black": _mean([r["last_frame"]["psnr_black"] for r in rs]),
            "bits_per_pixel": _mean([r["rate"]["bits_per_pixel"] for r in rs]),
            "ratio_vs_source": _mean([r["rate"]["ratio_vs_source"] for r in rs]),
            "ratio_vs_lj92_dng": _mean([r["rate"]["ratio_vs_lj92_dng"] for r in rs]),
            "encode_fps": _mean([r["speed"]["encode_fps"] for r in rs]),
            "decode_fps": _mean([r["speed"]["decode_fps"] for r in rs]),
            "decode_seconds_per_frame": {k: _mean([r["speed"]["decode_seconds_per_frame"][k] for r in rs])
                                         for k in rs[0]["speed"]["decode_seconds_per_frame"]},
            "psnr_black_by_frame": curve,
            "psnr_paper_by_frame": curve_paper,
            "at_frames": {str(i): {"psnr_black": curve[i], "psnr_paper": curve_paper[i]}
                          for i in (1, 10, 30) if i < n},
        })
    tags: dict[str, list[dict]] = {}
    for tag in sorted({t for r in runs for t in r["tags"]}):
        rows = []
        for (setting, method), rs in groups.items():
            sel = [r for r in rs if tag in r["tags"]]
            if sel:
                rows.append({"setting": setting, "method": method, "clips": len(sel),
                             "psnr_paper": _mean([r["psnr_paper"] for r in sel]),
                             "psnr_black": _mean([r["psnr_black"] for r in sel])})
        tags[tag] = rows
    return {"summary": summary, "tags": tags}


def versions() -> dict:
    import importlib.metadata

    import cv2
    import rawpy

    from .video import ffmpeg_version

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"rawvid": __version__, "python": platform.python_version(), "torch": version("torch"),
            "onnxruntime": version("onnxruntime"),
            "numpy": np.__version__, "opencv": cv2.__version__, "libraw": ".".join(map(str, rawpy.libraw_version)),
            "ffmpeg": ffmpeg_version()}


def run_bench(paths: list[Path], methods: list[MethodSpec], settings: list[Setting], *, reencode: bool = False,
              max_frames: int | None = None, device: str = "auto", progress: BenchProgress | None = None,
              clip_done: Callable[[int, int], None] | None = None, only: set[str] | None = None) -> dict:
    """Bench every clip under every setting with every method; returns the full results.
    ``only``: bench just the clips of these names (``rawvid batch``'s one clip of an RVD-layout folder)."""
    clips = [c for c in discover(paths) if only is None or c.name in only]
    if only is not None and not clips:
        raise RawvidError(paths[0] if paths else None, f"no clip named {', '.join(sorted(only))}")
    jobs: list[tuple[Clip, Setting]] = []
    for clip in clips:
        seen = set()
        for s in settings:
            if clip.kind == "rvd-layout":
                # the sRGB is given: render does not apply; the paper's protocol keeps it lossless
                s = Setting(s.video if reencode else VideoSettings.make(lossless=True), s.keyframe_interval, "given",
                            s.calibration, s.refine)
            if s.label not in seen:
                seen.add(s.label)
                jobs.append((clip, s))
    runs: list[dict] = []
    lj92_cache: dict = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rawvid-bench-") as td:
        for n, (clip, setting) in enumerate(jobs):
            runs.extend(bench_clip(clip, setting, methods, Path(td), max_frames=max_frames, device=device,
                                   lj92_cache=lj92_cache, progress=progress))
            if clip_done:
                clip_done(n + 1, len(jobs))
    return {
        "rawvid_bench": 1,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": sys.argv,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count()},
        "versions": versions(),
        "inputs": [str(p) for p in paths],
        "settings": [s.to_dict() for s in settings],
        "methods": [m.label for m in methods],
        "metrics": {"psnr_paper": "packed RAW / (2^bits - 1), no black subtraction (the RVD protocol)",
                    "psnr_black": "packed RAW (v - black) / (white - black)",
                    "ssim": "Gaussian 11x11 sigma 1.5, K1 0.01, K2 0.03, per packed channel on / (2^bits - 1), mean",
                    "averaging": "mean over the non-keyframe frames of a clip, then over clips; keyframes are "
                                 "exact (infinite PSNR) and excluded, as the paper excludes the given first frame",
                    "bits_per_pixel": "8 x .rvd bytes (video + keyframes + manifest + container) / (frames x W x H)"},
        "seconds": time.perf_counter() - t0,
        "runs": runs,
        **summarise(runs),
    }


def write_plots(results: dict, folder: Path) -> list[Path]:
    """PSNR over frame index per method (per setting), and rate-distortion when the sweep gives several points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    summary = results["summary"]
    for setting in sorted({s["setting"] for s in summary}):
        fig, ax = plt.subplots(figsize=(7, 4))
        for s in summary:
            if s["setting"] == setting:
                y = [np.nan if v is None else v for v in s["psnr_black_by_frame"]]
                ax.plot(range(len(y)), y, marker=".", label=s["method"])
        ax.set_xlabel("frame index")
        ax.set_ylabel("PSNR, black-subtracted (dB)")
        ax.set_title(f"Drift along the chain: {setting}")
        ax.grid(alpha=0.3)
        ax.legend()
        path = folder / f"psnr_by_frame_{setting.replace(' ', '_')}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    if len({s["setting"] for s in summary}) > 1:
        fig, ax = plt.subplots(figsize=(7, 4))
        for method in sorted({s["method"] for s in summary}):
            pts = sorted((s["bits_per_pixel"], s["psnr_black"]) for s in summary
                         if s["method"] == method and s["psnr_black"] is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("bits per Bayer sample (whole .rvd)")
        ax.set_ylabel("PSNR, black-subtracted (dB)")
        ax.set_title("Rate-distortion")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        path = folder / "rate_distortion.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
