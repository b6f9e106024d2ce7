"""A denoised render for the preview? (issue 10 item 7: the sRGB track's cost)

With a RAW layer the sRGB track is both the preview and the predictor's input. Sensor noise is
what makes a preview expensive, and what nothing in the layer's prediction can use, so a preview
rendered from a denoised RAW might make the whole file smaller. This renders each clip's sRGB
again with LibRaw (the encoder's `stable` render) from its RAW denoised with the clip's own noise
model (measured on frame 0, as the encoder does):

* ``none``: the plain render (a control: reproduces the split's own sRGB, byte for byte);
* ``gauss:S``: variance-stabilised (``2/S sqrt(S x + O)``, unit noise) CFA planes, Gaussian blur
  of sigma S plane samples, back;
* ``bil:K:R``: the same with a bilateral filter (range K noise sigmas, space R samples): edges kept.

and runs `rawvid bench --rd`'s ``rawvid-target`` curve (`rawvid encode --target-psnr`, the encoder
choosing the preview's CRF) on each: every byte counted, the same RAW, the same targets. Reported
per (clip, target) against ``--reference`` (an earlier bench --rd JSON of the same clips and
frames): the whole file, the RAW part, the sRGB CRF the encoder chose and the PSNR.

(LibRaw's own wavelet denoise, rawpy's ``noise_thr``, aborts the process in this rawpy 0.28 build.)

    cd benchmarks && python preview_denoise.py ../data/synth/stable/test --frames 16 --targets=-6,-3,0 \\
        --methods gauss:1,bil:2:1.5 --reference results/rd_test_stable_session21.json \\
        --json results/preview_denoise_test.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from rawvid.bayer import denormalise, pack, unpack
from rawvid.bench import discover
from rawvid.dataset import RVDLayout, write_png
from rawvid.isp import render
from rawvid.noise import NoiseModel, measure_clip_noise
from rawvid.rd import RDOptions, run_rd, to_json


def denoise_mosaic(mosaic: np.ndarray, info, model: NoiseModel, method: str) -> np.ndarray:
    """The mosaic with its CFA planes denoised in the variance-stabilised domain (``method``: see above)."""
    kind, *arg = method.split(":")
    if kind == "none":
        return mosaic
    span = info.white - info.black
    x = (pack(mosaic, info.cfa).astype(np.float32) - info.black) / np.float32(span)  # unclipped at black
    s, o = max(model.scale, 1e-9), model.offset
    f = (2.0 / s) * np.sqrt(np.maximum(s * x + o, 0.0))
    if kind == "gauss":
        g = np.stack([cv2.GaussianBlur(p, (0, 0), float(arg[0])) for p in f])
    elif kind == "bil":
        g = np.stack([cv2.bilateralFilter(p, -1, float(arg[0]), float(arg[1])) for p in f])
    else:
        raise ValueError(f"unknown method {method!r}")
    back = ((s * g / 2.0) ** 2 - o) / s
    back = np.where(x >= 1.0, x, back)  # clipped highlights as they are
    return unpack(denormalise(back, info.black, info.white, info.bits), info.cfa)


def denoised_split(src: Path, dst: Path, method: str, frames: int) -> None:
    """``src`` (an RVD layout) again at ``dst``: the same RAW (linked), the sRGB rendered from denoised RAW."""
    dst.mkdir(parents=True)
    os.symlink((src / "RAW").resolve(), dst / "RAW")
    for name in ("meta.json", "tags.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    data = json.loads((src / "data.json").read_text())
    for v in data:
        v["frames"] = v["frames"][:frames]
    (dst / "data.json").write_text(json.dumps(data, indent=1))
    layout = RVDLayout.open(src)
    models = {v.name: measure_clip_noise(layout.read_raw(v, v.frames[0]), layout.video_info(v))[0]
              for v in layout.videos}

    def one(job):
        video, name = job
        info = layout.video_info(video)
        rgb = render(denoise_mosaic(layout.read_raw(video, name), info, models[video.name], method), info, "stable")
        out = dst / "sRGB" / video.name / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_png(out, rgb)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, [(v, n) for v in layout.videos for n in v.frames[:frames]]))


def _offset(p: dict) -> float:
    """A rawvid-target point's target relative to the clip's floor, from its setting (``... (floor -6) ...``)."""
    return float(re.search(r"\(floor ([+-]?[0-9.]+)\)", p["setting"]).group(1))


def _key(p: dict) -> tuple[str, float]:
    return p["clip"].split("/", 1)[-1], _offset(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--targets", default="-6,-3,0", help="dB relative to each clip's noise floor")
    ap.add_argument("--methods", default="gauss:1,bil:2:1.5")
    ap.add_argument("--reference", type=Path, required=True, help="bench --rd JSON of the same clips and frames")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    targets = tuple(float(t) for t in args.targets.split(","))
    ref = {_key(p): p for p in json.loads(args.reference.read_text())["points"] if p["codec"] == "rawvid-target"}
    out = {"split": str(args.split), "frames": args.frames, "targets": targets, "reference": str(args.reference),
           "methods": {}}
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory(prefix="rawvid-denoise-") as td:
            split = Path(td) / args.split.name
            denoised_split(args.split, split, method, args.frames)
            (Path(td) / "work").mkdir()
            res = run_rd(discover([split]), RDOptions(curves=("rawvid-target",), targets=targets,
                                                       max_frames=args.frames), Path(td) / "work")
        points = to_json(res["_points"])
        rows = []
        for p in points:
            r = ref.get(_key(p))
            if r is None:
                continue
            rows.append({"clip": _key(p)[0], "target_minus_floor": _offset(p), "target": p["extra"]["target"],
                         "file": p["bpp"], "ref_file": r["bpp"], "raw": p["bpp_raw"], "ref_raw": r["bpp_raw"],
                         "srgb_crf": p["extra"]["srgb_crf"], "ref_srgb_crf": r["extra"]["srgb_crf"],
                         "psnr_black": p["psnr_black"], "ref_psnr_black": r["psnr_black"]})
            print(f"{method:10s} {rows[-1]['clip'][:26]:26s} {p['setting'][:28]:28s} file {r['bpp']:.4f} -> "
                  f"{p['bpp']:.4f} ({100 * (p['bpp'] / r['bpp'] - 1):+.1f}%), RAW part {r['bpp_raw']:.4f} -> "
                  f"{p['bpp_raw']:.4f}, sRGB CRF {r['extra']['srgb_crf']} -> {p['extra']['srgb_crf']}, "
                  f"{p['psnr_black'] - r['psnr_black']:+.2f} dB", flush=True)
        summary = []
        for t in targets:
            sel = [r for r in rows if r["target_minus_floor"] == t]
            if not sel:
                continue
            geo = lambda a, b: math.exp(np.mean([math.log(r[a] / r[b]) for r in sel]))  # noqa: E731
            summary.append({"target_minus_floor": t, "clips": len(sel), "file_ratio_geomean": geo("file", "ref_file"),
                            "raw_ratio_geomean": geo("raw", "ref_raw"),
                            "files_larger": sum(r["file"] > r["ref_file"] for r in sel),
                            "psnr_delta_mean": float(np.mean([r["psnr_black"] - r["ref_psnr_black"] for r in sel]))})
            print(method, summary[-1], flush=True)
        out["methods"][method] = {"rows": rows, "summary": summary, "points": points}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
