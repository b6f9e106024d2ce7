"""Re-run the direct coder's ladders of an earlier ``rawvid bench --rd`` JSON with the current (dense) ones.

rawvid's own points are kept as they were measured; the x265-bayer CRF and constant-QP ladders
are coded again on the same clips and frames with ``rawvid.rd.DEFAULT_X265_CRFS`` /
``DEFAULT_X265_QPS``, and the BD-rates and the savings at every ``--target-psnr`` point are
recomputed against them. Use it to see what the ladders' spacing did to a table (a chord
between sparse points under-states the direct coder's rate where its curve bends).

    python benchmarks/rd_reladder.py benchmarks/results/rd_test_stable.json data/synth/stable/test \\
        --frames 16 --json benchmarks/results/rd_test_stable_dense.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rawvid import rd
from rawvid.bench import discover


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="an earlier rawvid bench --rd JSON")
    ap.add_argument("paths", nargs="+", type=Path, help="the clips it measured")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    old = json.loads(args.source.read_text())
    kept = [rd.RDPoint(**{k: v for k, v in p.items() if k in rd.RDPoint.__dataclass_fields__})
            for p in old["points"] if p["codec"] not in rd.REFERENCES]
    for p in kept:  # JSON wrote infinite PSNR (lossless) as null
        for k in ("psnr_black", "psnr_paper", "min_frame_psnr_black"):
            if getattr(p, k) is None:
                setattr(p, k, float("inf"))
    clips = {c.name: c for c in discover(args.paths)}
    floors = old["floors"]
    points = list(kept)
    for name in sorted({p.clip for p in kept}):
        with clips[name].open() as src:
            data = rd.load_clip(name, src, args.frames)
        points += rd.x265_ladders(data)
        print(name, flush=True)
    savings = rd.savings_at_targets(points, floors)
    res = {"points": rd.to_json(points), "summary": rd.summarise(points, floors), "target_savings": savings,
           "floors": floors, "rawvid_points_from": str(args.source), "source_command": old.get("command"),
           "command": f"python benchmarks/rd_reladder.py {args.source} {' '.join(map(str, args.paths))}"
                      f"{'' if args.frames is None else f' --frames {args.frames}'} --json {args.json}"}
    args.json.write_text(json.dumps(res, indent=1))
    old_by = {(r["clip"], r["codec"], r["target"]): r["saving_percent"] for r in old.get("target_savings", [])}
    print(f"{'clip':32s} {'target-floor':>12s} {'saving before':>14s} {'saving now':>11s}")
    for r in savings:
        before = old_by.get((r["clip"], r["codec"], r["target"]))
        fmt = lambda v: "-" if v is None else f"{v:+.1f}%"  # noqa: E731
        print(f"{r['clip'][:32]:32s} {r['target_minus_floor']:>+12.1f} {fmt(before):>14s} {fmt(r['saving_percent']):>11s}")
    for rel in sorted({r["target_minus_floor"] for r in savings}):
        vals = [r["saving_percent"] for r in savings if r["target_minus_floor"] == rel and r["saving_percent"] is not None]
        print(f"target {rel:+g} dB: median saving {np.median(vals):+.1f}% over {len(vals)} points")


if __name__ == "__main__":
    main()
