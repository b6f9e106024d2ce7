"""Markdown tables from ``rawvid bench --rd`` JSON files: every point, BD-rates, and target savings.

    python benchmarks/rd_table.py benchmarks/results/rd_examples.json [more.json ...]

The README's RD tables are this script's output, pasted; the numbers live in the JSON.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def points_table(res: dict) -> str:
    rows = ["| clip | codec | setting | bpp file | bpp RAW part | PSNR black | PSNR paper | worst frame | predictor |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in res["points"]:
        lossless = p.get("lossless")
        ps = "lossless" if lossless else fmt(p["psnr_black"])
        pp = "lossless" if lossless else fmt(p["psnr_paper"])
        worst = "lossless" if lossless else fmt(p["min_frame_psnr_black"])
        pred = p.get("extra", {}).get("predictor") or ""
        if pred and p.get("extra", {}).get("refine") == "blocks":
            pred += "+blocks"
        rows.append(f"| {p['clip']} | {p['codec']} | {p['setting']} | {p['bpp']:.4f} | {p['bpp_raw']:.4f} | {ps} | "
                    f"{pp} | {worst} | {pred} |")
    return "\n".join(rows)


def summary_table(results: list[dict]) -> str:
    """Mean over clips: per codec and setting rank (the ladder position), rates and PSNR."""
    acc = defaultdict(list)
    for res in results:
        for p in res["points"]:
            key = p["setting"].split(" dB (")[-1] if p["codec"].startswith("rawvid-target") else p["setting"]
            acc[(p["codec"], key)].append(p)
    rows = ["| codec | setting | clips | bpp file | bpp RAW part | PSNR black (pooled) | worst frame |",
            "|---|---|---|---|---|---|---|"]
    for (codec, key), pts in acc.items():
        fin = [p["psnr_black"] for p in pts if p["psnr_black"] is not None]
        ps = "lossless" if not fin else fmt(float(np.mean(fin)))
        worst = [p["min_frame_psnr_black"] for p in pts if p["min_frame_psnr_black"] is not None]
        rows.append(f"| {codec} | {key.rstrip(')')} | {len(pts)} | {np.mean([p['bpp'] for p in pts]):.4f} | "
                    f"{np.mean([p['bpp_raw'] for p in pts]):.4f} | {ps} | {fmt(min(worst)) if worst else 'lossless'} |")
    return "\n".join(rows)


def savings_table(results: list[dict]) -> str:
    rows = [("| clip | curve | target - floor | floor | PSNR black | worst frame | bpp RAW part "
             "| x265-bayer (CRF) at same PSNR | x265-bayer (QP) | saving vs the stronger | saving at the same worst frame |"),
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["target_savings"]:
            rows.append(f"| {r['clip']} | {r['codec']} | {r['target_minus_floor']:+.0f} | {fmt(r['floor'])} | "
                        f"{fmt(r['psnr_black'])} | {fmt(r['min_frame'])} | {r['bpp_raw']:.4f} | "
                        f"{fmt(r['x265_bayer_bpp_same_psnr'], 4)} | {fmt(r.get('x265_bayer_qp_bpp_same_psnr'), 4)} | "
                        f"{fmt(r['saving_percent'], 0)}% | {fmt(r.get('saving_same_worst_frame_percent'), 0)}% |")
    return "\n".join(rows)


def bd_table(results: list[dict], ref: str = "x265_bayer") -> str:
    name = ref.replace("_", "-")
    rows = [f"| curve | BD-rate RAW part vs {name} | BD-rate whole file | clips |", "|---|---|---|---|"]
    per = defaultdict(lambda: {"raw": [], "file": []})
    for res in results:
        for codec, row in res["summary"].get(f"bd_rate_vs_{ref}_percent", {}).items():
            per[codec]["raw"] += [v for v in row["raw"].values() if v is not None]
            per[codec]["file"] += [v for v in row["file"].values() if v is not None]
    for codec, d in per.items():
        if not d["raw"]:
            continue
        rows.append(f"| {codec} | {np.mean(d['raw']):+.1f}% (median {np.median(d['raw']):+.1f}%) | "
                    f"{np.mean(d['file']):+.1f}% | {len(d['raw'])} |")
    return "\n".join(rows)


def main() -> None:
    results = [json.loads(open(p).read()) for p in sys.argv[1:]]
    print(bd_table(results), "\n")
    print(bd_table(results, "x265_bayer_qp"), "\n")
    print(savings_table(results), "\n")
    print(summary_table(results), "\n")
    for res in results:
        print(points_table(res), "\n")


if __name__ == "__main__":
    main()
