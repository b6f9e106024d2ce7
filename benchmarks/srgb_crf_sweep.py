"""The sRGB track's quality with a RAW layer (issue 10, item 7): which CRF and chroma make the smallest file.

With a RAW layer the sRGB track is both the preview and the predictor's input: a better sRGB
costs more bits but leaves the layer less to code. For every clip, every ``--target-psnr``
of the ladder (relative to the clip's measured noise floor) and every sRGB setting
(CRF x chroma), this encodes with rawvid's defaults otherwise, decodes, and records the whole
file's and the RAW part's bits per Bayer sample and the PSNR reached; the x265-bayer
ladders are run on the same clip so that every point also has the direct coder's rate at
the same PSNR. The summary gives, per target, each setting's whole-file rate against the
baseline setting (the encoder's default), and the best setting per clip.

Resumable: clips already in the JSON are skipped (the file is rewritten after each clip).

    python benchmarks/srgb_crf_sweep.py data/synth/stable/test examples --frames 16 \\
        --settings 24:444,28:444,32:444,36:444,28:420,32:420 --json benchmarks/results/srgb_crf_sweep.json
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from rawvid import rd, srgb_pilot
from rawvid.bench import discover
from rawvid.pipeline import passive_openmp


def parse_settings(text: str) -> list[tuple[int, str]]:
    """``"28:444,32:420,auto"`` -> [(28, "444"), (32, "420"), (0, "444")]; CRF 0 stands for ``auto``."""
    out = []
    for item in text.split(","):
        crf, _, chroma = item.partition(":")
        out.append((0 if crf == "auto" else int(crf), chroma or "444"))
    return out


def label(crf: int, chroma: str) -> str:
    """``auto``: the encoder's joint choice among rawvid.srgb_pilot.CANDIDATE_CRFS (what rawvid encode does)."""
    return "auto" if crf == 0 else f"crf{crf}-{chroma}"


def summarise(rows: list[dict], baseline: str) -> dict:
    """Per setting: the mean over (clip, target) of log2(whole-file rate / the baseline's), as a percent;
    per (clip, target): the setting with the smallest whole file."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["clip"], r["target_minus_floor"]), {})[r["setting"]] = r
    ratios: dict[str, list[float]] = {}
    ratios_by_target: dict[str, dict[str, list[float]]] = {}
    best = []
    for (clip, rel), cells in sorted(by_key.items()):
        base = cells.get(baseline)
        win = min(cells.values(), key=lambda r: r["bpp"])
        best.append({"clip": clip, "target_minus_floor": rel, "best": win["setting"], "bpp": win["bpp"],
                     "baseline_bpp": base["bpp"] if base else None})
        if base is None:
            continue
        for name, r in cells.items():
            v = math.log2(r["bpp"] / base["bpp"])
            ratios.setdefault(name, []).append(v)
            ratios_by_target.setdefault(name, {}).setdefault(f"{rel + 0.0:+g}", []).append(v)
    pct = lambda v: round((2 ** float(np.mean(v)) - 1) * 100, 1)  # noqa: E731
    return {"baseline": baseline,
            "whole_file_vs_baseline_percent": {k: pct(v) for k, v in sorted(ratios.items())},
            "whole_file_vs_baseline_percent_by_target": {k: {t: pct(v) for t, v in d.items()}
                                                         for k, d in sorted(ratios_by_target.items())},
            "best_per_clip_and_target": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--targets", default="-6,-3,0,2,4", help="relative to each clip's noise floor, dB")
    ap.add_argument("--settings", default="24:444,28:444,32:444,36:444,28:420,32:420")
    ap.add_argument("--baseline", default="32:444", help="the setting the others are compared with")
    ap.add_argument("--match", default=None, help="only clips whose name contains one of these (comma-separated)")
    ap.add_argument("--srgb-pilot-frames", type=int, default=srgb_pilot.SRGB_PILOT_FRAMES,
                    help="the sRGB frames each candidate CRF codes to foretell the track (auto)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    srgb_pilot.SRGB_PILOT_FRAMES = args.srgb_pilot_frames
    passive_openmp()
    settings = parse_settings(args.settings)
    targets = [float(t) for t in args.targets.split(",")]
    done = json.loads(args.json.read_text()) if args.json.exists() else {"rows": [], "references": []}
    seen = {r["clip"] for r in done["rows"]}
    clips = [c for c in discover(args.paths) if args.match is None or any(m in c.name for m in args.match.split(","))]
    work = Path(tempfile.mkdtemp(prefix="rawvid-srgb-sweep-"))
    for c in clips:
        if c.name in seen:
            continue
        with c.open() as src:
            data = rd.load_clip(c.name, src, args.frames)
        points = rd.x265_ladders(data)
        for crf, chroma in settings:
            for d in targets:
                t = round(data.noise_floor + d, 2)
                opts = rd.target_options(t, crf, chroma=chroma)
                p = rd.rawvid_point(data, c.open, f"rawvid-target-{label(crf, chroma)}", f"target {t:g}", opts, work)
                p.extra["target"] = t
                points.append(p)
                print(f"{c.name} {label(crf, chroma)} {d:+g}: file {p.bpp:.4f} raw {p.bpp_raw:.4f} "
                      f"{p.psnr_black:.2f} dB (min {p.min_frame_psnr_black:.2f}) {p.extra.get('predictor')} "
                      f"srgb crf {p.extra['srgb_crf']}",
                      flush=True)
        savings = {(r["codec"], r["target"]): r for r in rd.savings_at_targets(points, {c.name: data.noise_floor})}
        for p in points:
            if not p.codec.startswith("rawvid-target"):
                done["references"].append({"clip": c.name, "codec": p.codec, "setting": p.setting,
                                           "bpp": p.bpp, "psnr_black": p.psnr_black})
                continue
            s = savings[(p.codec, p.extra["target"])]
            done["rows"].append({
                "clip": c.name, "setting": p.codec.removeprefix("rawvid-target-"), "target": p.extra["target"],
                "floor": data.noise_floor, "target_minus_floor": s["target_minus_floor"],
                "bpp": p.bpp, "bpp_raw": p.bpp_raw, "srgb_bpp": p.extra["srgb_bpp"], "srgb_crf": p.extra["srgb_crf"],
                "psnr_black": p.psnr_black,
                "min_frame": p.min_frame_psnr_black, "predictor": p.extra.get("predictor"),
                "x265_bayer_bpp_same_psnr": s["x265_bayer_bpp_same_psnr"],
                "x265_bayer_qp_bpp_same_psnr": s["x265_bayer_qp_bpp_same_psnr"]})
        done["summary"] = summarise(done["rows"], label(*parse_settings(args.baseline)[0]))
        done["command"] = "python benchmarks/srgb_crf_sweep.py " + " ".join(
            [str(p) for p in args.paths] + ["--frames", str(args.frames), f"--targets={args.targets}",
                                            "--settings", args.settings, "--baseline", args.baseline,
                                            "--srgb-pilot-frames", str(args.srgb_pilot_frames),
                                            "--json", str(args.json)]
            + (["--match", args.match] if args.match else []))
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(args.json)
    print(json.dumps(done.get("summary", {}).get("whole_file_vs_baseline_percent"), indent=1))


if __name__ == "__main__":
    main()
