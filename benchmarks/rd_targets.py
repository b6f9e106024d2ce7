"""`rawvid bench --rd`'s --target-psnr points again, with encoder settings varied, against an earlier sweep's ladders.

Each curve runs the --target-psnr ladder (every byte of the file counted, as the bench counts it)
and reports each point's RAW part and whole file against the x265-on-Bayer ladders of an earlier
`rawvid bench --rd` JSON of the same clips and frames. The curves:

* ``--srgb-crfs``: the sRGB track's CRF, ``auto`` (the encoder's own choice, what `rawvid encode
  --target-psnr` does: the smallest whole file) or a number (the preview a user keeps anyway:
  the layer then spends what the RAW needs beyond it);
* ``--boosts``: the directly coded layer's IDR aimed that many dB above the target
  (rawvid.ratecontrol.INTRA_BOOST_DB). Under a target every frame is held at it, the IDR
  included; x265's own CRF codes its IDR 1-7 dB over its P-frames, and at the same pooled PSNR
  that can cost fewer bytes on short clips (the P-frames predict from a finer picture).

* ``--transforms``: the layer's transform of each 2x2 quad (rawvid.rawlayer.TRANSFORMS; ``none``, as
  before format 6).

Deterministic: a reference from before format 6 has its own --target-psnr points (``auto``, boost
0, transform ``none``) reproduced, so without that curve in the options they stand for it.

    cd benchmarks && python rd_targets.py ../data/scenarios/stable/test --reference results/rd_scenarios_session15.json
        [--boosts 0,1,2] [--srgb-crfs auto,24] [--targets -6,-3,0,2,4] [--frames 12] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

import rawvid.ratecontrol as rctl
from rawvid.bench import discover
from rawvid.rd import RDPoint, load_clip, rawvid_point, savings_at_targets, target_options, to_json


def label(boost: float, crf: int, transform: str = "hadamard") -> str:
    """A curve's codec name: ``rawvid-target-boost{B}`` with the encoder's sRGB CRF, ``...-srgb{N}`` with a fixed one,
    ``...-none`` with the layer's planes untransformed (as before format 6)."""
    return f"rawvid-target-boost{boost:g}" + (f"-srgb{crf}" if crf else "") + ("" if transform == "hadamard" else
                                                                             f"-{transform}")


def summary(rows: list[dict], codec: str) -> list[dict]:
    """Per target offset: savings against the stronger x265 ladder, at the same pooled PSNR and worst frame."""
    out = []
    for d in sorted({r["target_minus_floor"] for r in rows if r["codec"] == codec}):
        sel = [r for r in rows if r["codec"] == codec and r["target_minus_floor"] == d]
        mean = [r["saving_percent"] for r in sel if r["saving_percent"] is not None]
        worst = [r["saving_same_worst_frame_percent"] for r in sel if r["saving_same_worst_frame_percent"] is not None]
        out.append({"target_minus_floor": d, "clips": len(sel),
                    "saving_mean": float(np.mean(mean)), "saving_min": float(min(mean)),
                    "at_least_30": sum(v >= 30 for v in mean), "not_larger": sum(v >= 0 for v in mean),
                    "worst_frame_saving_mean": float(np.mean(worst)), "worst_frame_saving_min": float(min(worst)),
                    "raw_bpp_geomean": float(math.exp(np.mean([math.log(r["bpp_raw"]) for r in sel]))),
                    "file_bpp_geomean": float(math.exp(np.mean([math.log(r["bpp_file"]) for r in sel])))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--reference", type=Path, required=True, help="a `rawvid bench --rd` JSON of the same clips")
    ap.add_argument("--boosts", default="0")
    ap.add_argument("--srgb-crfs", default="auto", help="auto (the encoder's choice) or CRFs, comma-separated")
    ap.add_argument("--targets", default="-6,-3,0,2,4", help="dB relative to each clip's noise floor")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--transforms", default="hadamard", help="the layer's transforms, comma-separated (none, hadamard)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ref = json.loads(args.reference.read_text())
    refs = [RDPoint(**p) for p in ref["points"] if p["codec"].startswith("x265-bayer")]
    boosts = [float(b) for b in args.boosts.split(",")]
    crfs = [0 if c == "auto" else int(c) for c in args.srgb_crfs.split(",")]
    transforms = args.transforms.split(",")
    curves = [(b, q, t) for t in transforms for q in crfs for b in boosts]
    if (0.0, 0, "none") not in curves:  # a reference before format 6: its own points stand for that encoder
        refs += [RDPoint(**dict(p, codec=label(0.0, 0, "none"))) for p in ref["points"] if p["codec"] == "rawvid-target"]
    offsets = [float(t) for t in args.targets.split(",")]
    points: list[RDPoint] = []
    floors: dict[str, float] = {}
    for c in discover([args.split]):
        with c.open() as src:
            data = load_clip(c.name, src, args.frames)
        floors[c.name] = data.noise_floor
        for b, q, tr in curves:
            rctl.INTRA_BOOST_DB = b
            for d in offsets:
                t = round(data.noise_floor + d, 2)
                opts = target_options(t, q, transform=tr)
                with tempfile.TemporaryDirectory(prefix="rawvid-targets-") as td:
                    p = rawvid_point(data, c.open, label(b, q, tr), f"target {t:g} dB (floor {d:+g})", opts, Path(td))
                points.append(p)
                print(f"{c.name:40s} {label(b, q, tr)} floor {d:+g}: {p.psnr_black:.2f} dB (worst "
                      f"{p.min_frame_psnr_black:.2f}), RAW part {p.bpp_raw:.4f}, file {p.bpp:.4f}, predictor "
                      f"{p.extra.get('predictor')}, sRGB CRF {p.extra.get('srgb_crf')}", flush=True)
    rctl.INTRA_BOOST_DB = 0.0
    rows = savings_at_targets(refs + points, floors)
    files = {(p.clip, p.codec, p.extra.get("target")): p.bpp for p in refs + points}
    for r in rows:
        r["bpp_file"] = files[(r["clip"], r["codec"], r["target"])]
    table = {name: summary(rows, name) for name in dict.fromkeys([label(0.0, 0, "none")] + [label(*c) for c in curves])}
    for name, lines in table.items():
        for s in lines:
            print(f"{name} floor {s['target_minus_floor']:+g}: saving {s['saving_mean']:.1f}% mean, {s['saving_min']:.1f}% "
                  f"worst clip, >=30% on {s['at_least_30']}/{s['clips']}, not larger on {s['not_larger']}; same worst "
                  f"frame {s['worst_frame_saving_mean']:.1f}% / {s['worst_frame_saving_min']:.1f}%; RAW part "
                  f"{s['raw_bpp_geomean']:.4f}, file {s['file_bpp_geomean']:.4f} (geometric means)")
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "reference": str(args.reference),
                                         "frames": args.frames, "boosts": boosts, "srgb_crfs": crfs,
                                         "transforms": transforms,
                                         "targets": offsets,
                                         "summary": table, "target_savings": rows, "points": to_json(points)},
                                        indent=1))


if __name__ == "__main__":
    main()
