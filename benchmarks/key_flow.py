"""The network's keyframe reference under large motion: direct DIS flow against a fail-safe flow.

The shipped model warps the keyframe's residual onto every frame by one DIS call straight
to the keyframe, which cannot follow a camera that has moved far from it. The ``safe``
variant (``rawvid.network.Network(key_flow="safe")``) takes, per pixel, the better (by the
keyframe sRGB's warp error) of that flow and the last frame's flow to the keyframe chained
through this frame's flow, and drops the keyframe residual where even the better one
misses by more than ``KEY_TRUST_ERR`` (0.04).

For each clip of an RVD-layout split (e.g. ``rawvid dataset scenarios``) the sRGB goes
through the default H.265 round trip (CRF 16); the network alone runs chained from frame 0
(the paper's mode, ``--refine off``, keyframe calibration) with each flow, beside keyframe
global-fit. Reported per clip: mean black-subtracted PSNR over the predicted frames and the
worst frame's gap to global-fit.

    python benchmarks/key_flow.py data/scenarios/stable/test [--variants direct,safe] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refine_baselines import report
from rawvid.bayer import raw_planes, srgb_half
from rawvid.dataset import RVDLayout
from rawvid.methods import GlobalFit
from rawvid.network import Network
from rawvid.model import DEFAULT_MODEL, load_model
from rawvid.train import _codec_variant, chain_psnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--variants", default="direct,safe")
    ap.add_argument("--crf", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    layout = RVDLayout.open(args.split)
    tags = json.loads((args.split / "tags.json").read_text()) if (args.split / "tags.json").is_file() else {}
    model = load_model(DEFAULT_MODEL, device="cpu")
    variants = args.variants.split(",")
    rows = []
    for video in layout.videos:
        info = layout.video_info(video)
        rgbs = _codec_variant([layout.read_srgb(video, f) for f in video.frames], args.crf, info.fps)
        srgb = np.stack([srgb_half(x) for x in rgbs])
        raw = np.stack([raw_planes(layout.read_raw(video, f), info) for f in video.frames]).astype(np.float32)
        fit = np.array(chain_psnr(GlobalFit(), raw, srgb))
        row = {"clip": video.name, "tags": tags.get(video.name, []), "frames": len(video.frames),
               "global-fit": float(fit.mean())}
        for v in variants:
            net = np.array(chain_psnr(Network(model, key_flow=v), raw, srgb))
            row[v] = float(net.mean())
            row[f"{v}_worst_gap"] = float((net - fit).min())
        rows.append(row)
        print(video.name, " ".join(f"{k} {row[k]:.2f}" for k in ["global-fit", *variants]),
              " ".join(f"{v} worst {row[v + '_worst_gap']:+.2f}" for v in variants), flush=True)
    report(rows, variants, args.json, {"split": str(args.split), "crf": args.crf})

if __name__ == "__main__":
    main()
