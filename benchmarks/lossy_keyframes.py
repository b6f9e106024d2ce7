"""The paper's mode with lossy keyframes (`rawvid encode --keyframe-psnr`) against its lossless DNG keyframes.

`rawvid bench --rd --curves rawvid-paper,rawvid-paper-lossykey` (rawvid.rd.run_rd, the same jobs), set
side by side per clip: the paper's mode (sRGB CRF 16, no refinement, keyframe calibration) with its lossless-JPEG
keyframe, and the same with the keyframes coded by x265 at a ladder of PSNRs relative to the clip's
noise floor; every byte counted as `rawvid bench --rd` counts it. With ``--reference`` (an earlier
bench --rd JSON of the same clips and frames) each point's RAW part is also set against x265 on the
Bayer planes at the same pooled PSNR.

    cd benchmarks && python lossy_keyframes.py ../data/synth/stable/test --frames 16 \\
        --reference results/rd_test_stable_session21.json --json results/lossy_keyframes_test.json
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from rawvid.bench import discover
from rawvid.rd import DEFAULT_KEYFRAME_TARGETS, LOSSY_KEY_CURVE, RDOptions, RDPoint, run_rd, savings_at_targets, to_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--targets", default=",".join(f"{t:g}" for t in DEFAULT_KEYFRAME_TARGETS),
                    help="keyframe PSNRs, dB relative to each clip's noise floor")
    ap.add_argument("--crf", type=int, default=16, help="the sRGB track's CRF (the paper's mode: 16)")
    ap.add_argument("--match", default="", help="only clips whose name contains this")
    ap.add_argument("--reference", type=Path, help="an earlier rawvid bench --rd JSON of the same clips and frames")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    targets = [float(t) for t in args.targets.split(",")]
    ref = json.loads(args.reference.read_text()) if args.reference else None
    ref_points = [RDPoint(**{k: v for k, v in p.items() if k != "lossless"}, lossless=p.get("lossless", False))
                  for p in ref["points"] if p["codec"].startswith("x265-bayer")] if ref else []
    rows, points = [], []
    with tempfile.TemporaryDirectory(prefix="rawvid-lossykey-") as td:
        # bench --rd's own jobs (rawvid.rd.run_rd), clip by clip: the paper's mode and its lossy-keyframe curve
        opts = RDOptions(curves=("rawvid-paper", LOSSY_KEY_CURVE), paper_crfs=(args.crf,), keyframe_targets=tuple(targets),
                         max_frames=args.frames)
        for c in discover([args.split]):
            if args.match not in c.name:
                continue
            res = run_rd([c], opts, Path(td))
            floor = res["floors"][c.name]
            paper = next(p for p in res["_points"] if p.codec == "rawvid-paper")
            lossy = [p for p in res["_points"] if p.codec == LOSSY_KEY_CURVE]  # in the order of ``targets``
            points.append(paper)
            print(f"{c.name:32s} lossless keyframe: RAW part {paper.bpp_raw:.4f}, file {paper.bpp:.4f}, "
                  f"{paper.psnr_black:.2f} dB (worst {paper.min_frame_psnr_black:.2f}), floor {floor:.2f}",
                  flush=True)
            for d, p in zip(targets, lossy):
                points.append(p)
                key = p.extra["frame_psnr_black"][0]
                rows.append({"clip": c.name, "floor": floor, "keyframe_minus_floor": d, "keyframe_psnr": key,
                             "bpp_raw": p.bpp_raw, "bpp_file": p.bpp, "psnr_black": p.psnr_black,
                             "min_frame": p.min_frame_psnr_black, "paper_bpp_raw": paper.bpp_raw,
                             "paper_bpp_file": paper.bpp, "paper_psnr_black": paper.psnr_black,
                             "raw_part_vs_lossless_key_percent": 100 * (p.bpp_raw / paper.bpp_raw - 1),
                             "file_vs_lossless_key_percent": 100 * (p.bpp / paper.bpp - 1),
                             "psnr_vs_lossless_key_db": p.psnr_black - paper.psnr_black,
                             "frame_psnr_vs_lossless_key_db": [a - b for a, b in zip(  # the keyframe: lossless
                                 p.extra["frame_psnr_black"][1:], paper.extra["frame_psnr_black"][1:])]})
                print(f"{'':32s} keyframe {d:+g} dB ({key:.2f}): RAW part {p.bpp_raw:.4f} "
                      f"({rows[-1]['raw_part_vs_lossless_key_percent']:+.1f}%), file {p.bpp:.4f} "
                      f"({rows[-1]['file_vs_lossless_key_percent']:+.1f}%), {p.psnr_black:.2f} dB "
                      f"({rows[-1]['psnr_vs_lossless_key_db']:+.2f})", flush=True)
    summary = []
    for d in targets:
        sel = [r for r in rows if r["keyframe_minus_floor"] == d]
        summary.append({"keyframe_minus_floor": d, "clips": len(sel),
                        "raw_part_vs_lossless_key_percent_mean": float(np.mean([r["raw_part_vs_lossless_key_percent"]
                                                                               for r in sel])),
                        "file_vs_lossless_key_percent_mean": float(np.mean([r["file_vs_lossless_key_percent"]
                                                                           for r in sel])),
                        "psnr_vs_lossless_key_db_mean": float(np.mean([r["psnr_vs_lossless_key_db"] for r in sel])),
                        "psnr_vs_lossless_key_db_min": float(min(r["psnr_vs_lossless_key_db"] for r in sel)),
                        "raw_bpp_geomean": float(math.exp(np.mean([math.log(r["bpp_raw"]) for r in sel])))})
        print(summary[-1])
    out = {"split": str(args.split), "frames": args.frames, "crf": args.crf, "targets": targets, "rows": rows,
           "summary": summary, "points": to_json(points)}
    if ref_points:  # the RAW part against x265 on the Bayer planes at the same pooled PSNR
        floors = ref["floors"]
        as_target = [RDPoint(**{**vars(p), "codec": "rawvid-target-lossykey"}) for p in points
                     if p.codec == LOSSY_KEY_CURVE]
        out["x265_savings"] = savings_at_targets(ref_points + as_target, floors)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
