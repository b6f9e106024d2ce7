"""`--lossless-raw` against lossless-JPEG DNGs and FFV1 on the Bayer planes, clip by clip.

`rawvid bench --rd --curves rawvid-lossless,ffv1-bayer,lj92-dng` (rawvid.rd.run_rd, the same jobs),
tabulated per clip: the whole .rvd (preview included) and its RAW part, bit-exactness checked on
every decoded frame (a lossless point's PSNR is infinite only if every frame is).

    cd benchmarks && python lossless_layer.py ../data/synth/stable/test --frames 16 \\
        --json results/lossless_layer_test.json
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import rawvid.rawlayer as rl
from rawvid.bench import discover
from rawvid.rd import RDOptions, run_rd

CURVES = ("lj92-dng", "ffv1-bayer", "rawvid-lossless")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    clips = discover(args.paths)
    with tempfile.TemporaryDirectory(prefix="rawvid-lossless-") as td:
        res = run_rd(clips, RDOptions(curves=CURVES, max_frames=args.frames, targets=(), keyframe_targets=()), Path(td))
    rows = []
    for c in clips:
        pts = {p.codec: p for p in res["_points"] if p.clip == c.name}
        p = pts["rawvid-lossless"]
        if not math.isinf(p.psnr_black):
            raise SystemExit(f"{c.name}: the lossless layer did not decode bit-exactly")
        with c.open() as src:
            info = src.info
        rows.append({"clip": c.name, "bits": info.bits, "size": f"{info.width}x{info.height}", "frames": p.frames,
                     "lj92_dng_bpp": pts["lj92-dng"].bpp, "ffv1_bayer_bpp": pts["ffv1-bayer"].bpp,
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
