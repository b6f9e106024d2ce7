"""x265 on the Bayer planes as they are against on the Hadamard transform of each 2x2 quad.

The measurement behind the RAW layer's transform (format 6, rawvid.rawlayer.analyse): the same
x265 settings and CRF ladder on both pictures of every clip (rawvid.rd.x265_bayer, ``transform``),
the BD-rate of the transformed against the planes per clip, and each picture's ceiling at QP 0
(x265's finest step; the transformed picture spans twice the range, so its scale is twice as
coarse: rawvid.rawlayer.DIRECT_FLOOR_K).

    cd benchmarks && python hadamard.py ../data/synth/stable/test --frames 8 --json results/hadamard_test.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from rawvid import rawlayer as rl
from rawvid.bench import discover
from rawvid.rd import bd_rate, load_clip, x265_bayer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--crfs", default="28,22,16,10,4")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    crfs = [float(c) for c in args.crfs.split(",")]
    out: dict = {"split": str(args.split), "frames": args.frames, "crfs": crfs, "clips": {}}
    for c in discover([args.split]):
        with c.open() as src:
            data = load_clip(c.name, src, args.frames)
        row: dict = {"floor": data.noise_floor, "bits": data.info.bits}
        for t in ("none", "hadamard"):
            pts = [x265_bayer(data, q, transform=t) for q in crfs]
            row[t] = [(p.bpp, p.psnr_black) for p in pts]
            top = x265_bayer(data, qp=0, transform=t)
            scale = rl.full_range_scale(data.info.bits) * rl.transform_gain(t)
            row[f"{t}_qp0"] = {"bpp": top.bpp, "psnr_black": top.psnr_black,
                               "k": (data.info.white - data.info.black) / (scale * 10 ** (top.psnr_black / 20))}
        row["bd_rate_percent"] = bd_rate(row["none"], row["hadamard"])
        out["clips"][c.name] = row
        print(f"{c.name:32s} floor {row['floor']:.2f}: BD-rate {row['bd_rate_percent']:+.1f}%; QP 0 "
              f"{row['none_qp0']['psnr_black']:.2f} dB as they are, {row['hadamard_qp0']['psnr_black']:.2f} "
              f"transformed (K {row['hadamard_qp0']['k']:.2f})", flush=True)
    bds = [r["bd_rate_percent"] for r in out["clips"].values() if r["bd_rate_percent"] is not None]
    out["bd_rate_mean_percent"] = float(np.mean(bds)) if bds else math.nan
    print(f"mean BD-rate {out['bd_rate_mean_percent']:+.1f}% over {len(bds)} clips")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
