"""How closely ``--target-psnr`` lands each frame on its target, and what the RAW layer costs.

For every clip and every target of the ladder (relative to the clip's measured noise floor),
encodes with a fixed sRGB CRF (no sRGB pilot: this measures the layer's rate control) and
records, per frame, the reconstruction's black-subtracted PSNR against the target (the
encoder's reconstruction is the decoder's, bit for bit: the closed loop), the prediction's own
PSNR and the passes. The summary counts the frames within the promise (target - 0.3 ..
target + 0.3 dB, never under target - 0.5) among the frames that spend bits (a frame whose
prediction alone lands above target + 0.3 cannot be brought down to it without adding error),
and the layer's bits per Bayer sample.

    python benchmarks/landing.py data/synth/stable/test --frames 16 --targets=-6,-3,0,2,4 \\
        --json benchmarks/results/landing.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from rawvid import rd
from rawvid.bench import discover
from rawvid.codec import EncodeOptions, encode
from rawvid.container import RvdFile
from rawvid.pipeline import passive_openmp
from rawvid.rawlayer import LayerSettings
from rawvid.video import VideoSettings

BAND, FLOOR = 0.3, 0.5


def summarise(rows: list[dict]) -> dict:
    """Per target (relative to the floor) and overall: frames in the band, under the floor, and rates."""
    def stats(rs: list[dict]) -> dict:
        d = np.concatenate([np.asarray(r["psnr"]) - r["target"] for r in rs])
        free = np.concatenate([np.asarray(r["prediction_psnr"]) - r["target"] > BAND for r in rs])
        spent = d[~free]
        return {"frames": int(d.size), "frames_spending": int(spent.size),
                "within_band": int(np.sum(np.abs(spent) <= BAND)),
                "above_band": int(np.sum(spent > BAND)), "under_band": int(np.sum(spent < -BAND)),
                "under_floor": int(np.sum(d < -FLOOR)), "worst_db": round(float(d.min()), 3),
                "median_db": round(float(np.median(spent)), 3) if spent.size else None,
                "layer_bpp_mean": round(float(np.mean([r["layer_bpp"] for r in rs])), 5),
                "raw_part_bpp_mean": round(float(np.mean([r["raw_part_bpp"] for r in rs])), 5)}
    by = {}
    for r in rows:
        by.setdefault(f"{r['target_minus_floor']:+g}", []).append(r)
    return {"all": stats(rows), **{k: stats(v) for k, v in sorted(by.items(), key=lambda kv: float(kv[0]))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--targets", default="-6,-3,0,2,4", help="relative to each clip's noise floor, dB")
    ap.add_argument("--srgb-crf", type=int, default=32)
    ap.add_argument("--match", default=None, help="only clips whose name contains one of these (comma-separated)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    passive_openmp()
    targets = [float(t) for t in args.targets.split(",")]
    clips = [c for c in discover(args.paths) if args.match is None or any(m in c.name for m in args.match.split(","))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rawvid-landing-") as td:
        out = Path(td) / "x.rvd"
        for c in clips:
            with c.open() as src:
                data = rd.load_clip(c.name, src, args.frames)
            for d in targets:
                t = round(data.noise_floor + d, 2)
                opts = EncodeOptions(video=VideoSettings.make(crf=args.srgb_crf), raw_layer=LayerSettings(target_psnr=t),
                                     stop=len(data.mosaics))
                with c.open() as src:
                    res = encode(src, out, opts, force=True)
                sizes = RvdFile(out).sizes()
                lay = res.layer
                rows.append({"clip": c.name, "target": t, "floor": data.noise_floor, "target_minus_floor": d,
                             "predictor": lay["predictor"], "passes": lay["passes"], "psnr": lay["psnr_black"],
                             "prediction_psnr": lay["prediction_psnr_black"],
                             "layer_bpp": sizes["raw_layer_bits_per_pixel"], "raw_part_bpp": sizes["raw_part_bits_per_pixel"],
                             "file_bpp": sizes["bits_per_pixel"]})
                dev = np.asarray(lay["psnr_black"]) - t
                print(f"{c.name} {d:+g}: {lay['predictor']} layer {rows[-1]['layer_bpp']:.4f} bpp, "
                      f"frames {' '.join(f'{x:+.2f}' for x in dev)}", flush=True)
            args.json.write_text(json.dumps({"command": "python benchmarks/landing.py " + " ".join(
                [str(p) for p in args.paths] + ["--frames", str(args.frames), f"--targets={args.targets}",
                                                "--srgb-crf", str(args.srgb_crf)]
                + (["--match", args.match] if args.match else [])),
                "summary": summarise(rows), "rows": rows}, indent=1))
    print(json.dumps(summarise(rows), indent=1))


if __name__ == "__main__":
    main()
