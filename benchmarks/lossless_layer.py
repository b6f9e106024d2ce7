"""`--lossless-raw` against lossless-JPEG DNGs and FFV1 on the Bayer planes, clip by clip.

What `rawvid bench --rd` measures for its lossless points, alone (no lossy ladders): the whole
.rvd (preview included) and its RAW part, bit-exactness checked on every decoded frame.

    cd benchmarks && python lossless_layer.py ../data/synth/stable/test --frames 16 \\
        --json results/lossless_layer_test.json
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from rawvid.bench import discover
from rawvid.codec import EncodeOptions
import rawvid.rawlayer as rl
from rawvid.rd import ffv1_bayer, lj92_dng, load_clip, rawvid_point
from rawvid.srgb_pilot import LAYERED_SRGB_CRF
from rawvid.video import VideoSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    rows = []
    for c in discover(args.paths):
        with c.open() as src:
            data = load_clip(c.name, src, args.frames)
        lj, ff = lj92_dng(data), ffv1_bayer(data)
        opts = EncodeOptions(video=VideoSettings.make(crf=LAYERED_SRGB_CRF), raw_layer=rl.LayerSettings(codec="ffv1"))
        with tempfile.TemporaryDirectory(prefix="rawvid-lossless-") as td:
            p = rawvid_point(data, c.open, "rawvid-lossless", "lossless", opts, Path(td))
        if not math.isinf(p.psnr_black):
            raise SystemExit(f"{c.name}: the lossless layer did not decode bit-exactly")
        rows.append({"clip": c.name, "bits": data.info.bits, "size": f"{data.info.width}x{data.info.height}",
                     "frames": len(data.mosaics), "lj92_dng_bpp": lj.bpp, "ffv1_bayer_bpp": ff.bpp,
                     "rvd_bpp": p.bpp, "raw_part_bpp": p.bpp_raw})
        r = rows[-1]
        print(f"{c.name:36s} {r['bits']}-bit: .rvd {r['rvd_bpp']:.3f} (RAW part {r['raw_part_bpp']:.3f}) bits per "
              f"sample, FFV1 on the planes {r['ffv1_bayer_bpp']:.3f}, lossless-JPEG DNGs {r['lj92_dng_bpp']:.3f}",
              flush=True)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("lj92_dng_bpp", "ffv1_bayer_bpp", "rvd_bpp", "raw_part_bpp")}
    args.json.write_text(json.dumps({"command": "python lossless_layer.py " + " ".join(map(str, args.paths))
                                     + f" --frames {args.frames}", "ffv1_gop": rl.FFV1_GOP, "mean": mean,
                                     "smaller_than_dngs": sum(r["rvd_bpp"] < r["lj92_dng_bpp"] for r in rows),
                                     "clips": len(rows), "rows": rows}, indent=1))
    print(json.dumps(mean))


if __name__ == "__main__":
    main()
