"""Close calls between the layer's predictors coded again on more frames (rawvid.layer_pilot.PILOT_EXTEND_RATIO).

Takes the points of ``predictor_choice.py``'s JSON (both predictors forced, each whole file and RAW
part known) and encodes each with ``--raw-predictor auto`` (the encoder's own sRGB CRF choice, as
`rawvid encode --target-psnr` runs) once per setting of the extension band (0: the 4-frame pilot
alone), reporting the whole file against the cheaper forced predictor. With ``--fixed-crf N`` (the
preview a given, `--crf N`) it forces both predictors itself at every target of ``--targets``
(relative to each clip's noise floor) and every clip, and runs auto beside them at that CRF.

    cd benchmarks && python pilot_extend.py ../data/scenarios/stable/test --choices results/predictor_choice_scenarios.json
        [--ratios 0,1.25] [--frames 12] [--json out.json]
    cd benchmarks && python pilot_extend.py ../data/scenarios/stable/test --fixed-crf 24 [--targets=-6,-3,0,2,4] ...
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import rawvid.layer_pilot as lp
from rawvid.bench import discover
from rawvid.rd import load_clip, rawvid_point, target_options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--choices", type=Path, help="predictor_choice.py's JSON of the same clips")
    ap.add_argument("--fixed-crf", type=int, help="the sRGB CRF, fixed: both predictors forced here")
    ap.add_argument("--targets", default="-6,-3,0,2,4", help="with --fixed-crf: dB relative to each clip's floor")
    ap.add_argument("--ratios", default="0,1.25")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    if (args.choices is None) == (args.fixed_crf is None):
        ap.error("give exactly one of --choices and --fixed-crf")

    def options(target: float, predictor: str = "auto"):
        return target_options(target, args.fixed_crf or 0, predictor)

    todo: dict[str, list[dict]] = {}
    if args.choices is not None:
        for r in json.loads(args.choices.read_text())["rows"]:
            todo.setdefault(r["clip"], []).append(r)
    rows = []
    for c in discover([args.split]):
        if args.choices is not None and c.name not in todo:
            continue
        with c.open() as src:
            data = load_clip(c.name, src, args.frames)
        if args.fixed_crf is not None:
            todo[c.name] = []
            for d in (float(v) for v in args.targets.split(",")):
                t = round(data.noise_floor + d, 2)
                r = {"target": t, "target_minus_floor": d}
                for pred in ("chain", "direct"):
                    with tempfile.TemporaryDirectory(prefix="rawvid-extend-") as td:
                        q = rawvid_point(data, c.open, f"rawvid-target-{pred}", f"target {t:g}", options(t, pred),
                                         Path(td))
                    r[pred] = {"bpp": q.bpp, "bpp_raw": q.bpp_raw}
                todo[c.name].append(r)
        for r in todo[c.name]:
            best = min(r["chain"]["bpp"], r["direct"]["bpp"])
            row = {"clip": c.name, "target": r["target"], "target_minus_floor": r["target_minus_floor"],
                   "forced": {k: {"bpp": r[k]["bpp"], "bpp_raw": r[k]["bpp_raw"]} for k in ("chain", "direct")},
                   "runs": {}}
            for ratio in ratios:
                lp.PILOT_EXTEND_RATIO = ratio
                with tempfile.TemporaryDirectory(prefix="rawvid-extend-") as td:
                    q = rawvid_point(data, c.open, "rawvid-target", f"target {r['target']:g}", options(r["target"]),
                                     Path(td))
                pilot = q.extra.get("pilot", {})
                row["runs"][f"{ratio:g}"] = {"bpp": q.bpp, "bpp_raw": q.bpp_raw, "psnr_black": q.psnr_black,
                                            "min_frame_psnr_black": q.min_frame_psnr_black,
                                            "predictor": q.extra.get("predictor"), "srgb_crf": q.extra.get("srgb_crf"),
                                            "extended": "extended" in pilot, "over_best_percent":
                                            round((q.bpp / best - 1) * 100, 2), "encode_s": q.encode_s}
                print(f"{c.name:40s} floor {r['target_minus_floor']:+5.1f} ratio {ratio:g}: file {q.bpp:.4f} "
                      f"({(q.bpp / best - 1) * 100:+.1f}% over the cheaper forced) {q.extra.get('predictor')} "
                      f"extended {'extended' in pilot} enc {q.encode_s:.1f} s", flush=True)
            rows.append(row)
    lp.PILOT_EXTEND_RATIO = ratios[-1]
    summary = {}
    for ratio in ratios:
        k = f"{ratio:g}"
        over = [r["runs"][k]["over_best_percent"] for r in rows]
        summary[k] = {"points": len(rows), "geomean_over_best_percent":
                      round((math.exp(sum(math.log1p(v / 100) for v in over) / len(over)) - 1) * 100, 2),
                      "worst_over_best_percent": max(over), "within_1_percent": sum(v <= 1 for v in over),
                      "extended": sum(r["runs"][k]["extended"] for r in rows),
                      "encode_s_total": round(sum(r["runs"][k]["encode_s"] for r in rows), 1)}
        print(k, summary[k])
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "choices": str(args.choices),
                                         "fixed_crf": args.fixed_crf, "frames": args.frames, "ratios": ratios, "summary": summary, "rows": rows},
                                        indent=1))


if __name__ == "__main__":
    main()
