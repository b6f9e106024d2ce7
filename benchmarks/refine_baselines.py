"""Is it the network? Block refinement with the same bytes, with and without the network.

For each clip of an RVD-layout split the given sRGB goes through the default H.265 round
trip (CRF 16), each frame gets its per-frame global map (float16, as the encoder stores
it), and the encoder's block refinement (`rawvid.refine`: one of 9 weights per 32x32
block, chosen against the true RAW) blends global-fit towards a second prediction:

- ``gain``: global-fit x 1.1 (a per-block brightness correction; no network, no motion);
- ``warp``: the previous refined frame warped along DIS flow (no network);
- ``network``: the shipped model, chained (what ``rawvid encode`` does by default).

Every variant runs the decoder's own per-frame step (`rawvid.codec.predict_frame`) and
reports black-subtracted PSNR (mean over predicted frames, then clips) and its gain over
global-fit, so the refinement's bytes are the same in every row.

    python benchmarks/refine_baselines.py data/synth/stable/test [--variants gain,warp,network] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from rawvid.bayer import raw_planes, srgb_half
from rawvid.codec import network_method, predict_frame
from rawvid.dataset import RVDLayout
from rawvid.methods import CURVE_KNOTS, GlobalFit, GlobalMap, Warp, fit_global_map
from rawvid.model import DEFAULT_MODEL
from rawvid.train import _codec_variant


class Gain(GlobalFit):
    """Global-fit brightened by 10%: blended per block, a network-free local gain correction."""

    name = "gain"

    def predict(self, prev_raw, prev_srgb, srgb):
        return np.clip(self.base(srgb) * 1.1, 0.0, 1.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / max(1e-12, float(np.mean((a.astype(np.float64) - b) ** 2))))


def chain(method, raws, srgbs, maps, info, refine: bool) -> list[float]:
    """PSNR of every predicted frame, chained from frame 0 as decode runs."""
    method.keyframe(raws[0], srgbs[0])
    prev_raw, prev_srgb, scores = raws[0], srgbs[0], []
    for t in range(1, len(raws)):
        _, out, _ = predict_frame(method, prev_raw, prev_srgb, srgbs[t], info, maps[t],
                                  target=raws[t] if refine else None)
        scores.append(psnr(out, raws[t]))
        prev_raw, prev_srgb = out, srgbs[t]
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--variants", default="gain,warp,network")
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    layout = RVDLayout.open(args.split)
    variants = args.variants.split(",")
    rows = []
    for video in layout.videos:
        info = layout.video_info(video)
        rgbs = _codec_variant([layout.read_srgb(video, f) for f in video.frames], args.crf, info.fps)
        srgbs = [srgb_half(x) for x in rgbs]
        raws = [raw_planes(layout.read_raw(video, f), info) for f in video.frames]
        maps = [GlobalMap.from_list(np.asarray(fit_global_map(s, r).to_list(), dtype="<f2").astype(np.float64),
                                    CURVE_KNOTS) for s, r in zip(srgbs, raws)]
        row = {"clip": video.name, "global-fit": float(np.mean(chain(GlobalFit(), raws, srgbs, maps, info, False)))}
        for v in variants:
            method = {"gain": Gain, "warp": Warp}.get(v)
            method = method() if method else network_method(DEFAULT_MODEL, info.width, info.height)
            row[v] = float(np.mean(chain(method, raws, srgbs, maps, info, True)))
        rows.append(row)
        print(video.name, " ".join(f"{k} {row[k]:.2f}" for k in ["global-fit", *variants]), flush=True)
    report(rows, variants, args.json, {"split": str(args.split), "crf": args.crf})


def report(rows: list[dict], variants: list[str], json_path: Path | None, header: dict) -> None:
    """Means over clips of each variant and of global-fit (gain, clips ahead); print, and write JSON."""
    summary = {v: {"psnr_black": float(np.mean([r[v] for r in rows])),
                   "gain_db": float(np.mean([r[v] - r["global-fit"] for r in rows])),
                   "clips_ahead": sum(r[v] > r["global-fit"] for r in rows)} for v in variants}
    summary["global-fit"] = {"psnr_black": float(np.mean([r["global-fit"] for r in rows]))}
    for k, s in summary.items():
        print(k, json.dumps(s))
    if json_path:
        json_path.write_text(json.dumps({**header, "clips": rows, "summary": summary}, indent=1))

if __name__ == "__main__":
    main()
