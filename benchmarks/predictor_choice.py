"""Does the pilot pick the cheaper RAW-layer predictor? Both predictors forced, against the pilot's foretelling.

Under ``--target-psnr`` with ``--raw-predictor auto`` the pilot codes the clip's first 4 frames
with the chain's residual and with the RAW itself (direct) and keeps the one whose bytes,
extrapolated to the clip, are fewer (rawvid.layer_pilot.pilot). This takes the --target-psnr
points of a `rawvid bench --rd` JSON whose foretold direct / chain ratio lies in an ambiguous
band, encodes each with the predictor forced both ways (each with the encoder's own sRGB CRF
choice, every byte counted as the bench counts it) and reports which was cheaper over the clip.

    cd benchmarks && python predictor_choice.py ../data/scenarios/stable/test --reference results/rd_scenarios_session15.json
        [--band 0.6,1.6] [--frames 12] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rawvid.bench import discover
from rawvid.rd import load_clip, rawvid_point, target_options


def foretold_ratio(pilot: dict) -> float:
    """The pilot's foretold bytes of direct coding over the chain's (the cheaper of with and without weights)."""
    chain = min(pilot[k]["bytes"] for k in ("chain", "chain+blocks") if k in pilot)
    return pilot["direct"]["bytes"] / chain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--reference", type=Path, required=True, help="a `rawvid bench --rd` JSON of the same clips")
    ap.add_argument("--band", default="0.6,1.6", help="foretold direct/chain ratios to re-encode")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    lo, hi = (float(v) for v in args.band.split(","))
    ref = json.loads(args.reference.read_text())
    todo: dict[str, list[dict]] = {}
    for p in ref["points"]:
        if p["codec"] == "rawvid-target" and lo <= foretold_ratio(p["extra"]["pilot"]) <= hi:
            todo.setdefault(p["clip"], []).append(p)
    rows = []
    for c in discover([args.split]):
        if c.name not in todo:
            continue
        with c.open() as src:
            data = load_clip(c.name, src, args.frames)
        for p in todo[c.name]:
            t = p["extra"]["target"]
            row = {"clip": c.name, "target": t, "target_minus_floor": round(t - data.noise_floor, 2),
                   "pilot_choice": p["extra"]["pilot"]["chosen"], "foretold_ratio": foretold_ratio(p["extra"]["pilot"]),
                   "auto_bpp_raw": p["bpp_raw"], "auto_bpp": p["bpp"]}
            for pred in ("chain", "direct"):
                opts = target_options(t, predictor=pred)
                with tempfile.TemporaryDirectory(prefix="rawvid-pred-") as td:
                    q = rawvid_point(data, c.open, f"rawvid-target-{pred}", f"target {t:g}", opts, Path(td))
                row[pred] = {"bpp_raw": q.bpp_raw, "bpp": q.bpp, "psnr_black": q.psnr_black,
                             "min_frame_psnr_black": q.min_frame_psnr_black, "srgb_crf": q.extra.get("srgb_crf")}
            cheaper = min(("chain", "direct"), key=lambda k: row[k]["bpp_raw"])
            row["cheaper"] = cheaper
            rows.append(row)
            print(f"{c.name:40s} floor {row['target_minus_floor']:+5.1f}: pilot {row['pilot_choice']:12s} foretold "
                  f"direct/chain {row['foretold_ratio']:.2f}; RAW part chain {row['chain']['bpp_raw']:.4f} direct "
                  f"{row['direct']['bpp_raw']:.4f} (actual ratio {row['direct']['bpp_raw'] / row['chain']['bpp_raw']:.2f}); "
                  f"whole file chain {row['chain']['bpp']:.4f} direct {row['direct']['bpp']:.4f}", flush=True)
    wrong = [r for r in rows if r["pilot_choice"].split("+")[0] != r["cheaper"]]
    print(f"{len(wrong)} of {len(rows)} points: the pilot chose the dearer predictor")
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "reference": str(args.reference), "band": [lo, hi],
                                         "frames": args.frames, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
