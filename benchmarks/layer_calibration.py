"""The RAW layer with keyframe or adaptive calibration: which costs fewer bytes at the same target?

Each clip is encoded with ``--target-psnr`` at the given offsets from its measured noise floor
(read from a ``rawvid bench --rd`` JSON), the sRGB CRF chosen by the encoder as the CLI does,
once per calibration. Reported: the whole file's bytes, the sRGB track's, the maps stored, and
the layer's worst and pooled black-subtracted PSNR (what the encoder measured on its closed loop).

    python benchmarks/layer_calibration.py data/scenarios/stable/test \
        --floors benchmarks/results/rd_scenarios_session15.json --match exposure-step,field002 \
        --offsets=-3,-6 --frames 12 --json benchmarks/results/layer_calibration_session16.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from rawvid.bench import discover
from rawvid.codec import EncodeOptions, encode
from rawvid.container import RvdFile
from rawvid.rawlayer import LayerSettings
from rawvid.srgb_pilot import CANDIDATE_CRFS


def pooled(psnrs: list[float]) -> float:
    """PSNR of the pooled MSE over frames."""
    return float(10 * np.log10(1 / np.mean(10 ** (-np.asarray(psnrs) / 10))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", type=Path)
    ap.add_argument("--floors", type=Path, required=True, help="a rawvid bench --rd JSON (its clips' noise floors)")
    ap.add_argument("--match", default="", help="comma-separated: only clips whose name contains one")
    ap.add_argument("--offsets", default="-3,-6", help="targets relative to each clip's floor (dB)")
    ap.add_argument("--calibrations", default="keyframe,adaptive")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    floors = json.loads(args.floors.read_text())["floors"]
    matches = [m for m in args.match.split(",") if m]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rawvid-laycal-") as td:
        for clip in discover([args.split]):
            if clip.name not in floors or (matches and not any(m in clip.name for m in matches)):
                continue
            for off in (float(x) for x in args.offsets.split(",")):
                target = floors[clip.name] + off
                for cal in args.calibrations.split(","):
                    opts = EncodeOptions(raw_layer=LayerSettings(target_psnr=target), calibration=cal,
                                         stop=args.frames, srgb_crfs=CANDIDATE_CRFS)
                    with clip.open() as src:
                        res = encode(src, Path(td) / f"{len(rows)}.rvd", opts)
                    rvd = RvdFile(res.output)
                    sizes, m = rvd.sizes(), rvd.manifest
                    ps = res.layer["psnr_black"]
                    row = {"clip": clip.name, "offset_db": off, "target_db": target, "calibration": cal,
                           "file_bytes": sizes["file_bytes"], "srgb_bytes": sizes["video_bytes"],
                           "maps": len(m["calibration"].get("changes") or []), "worst_db": float(min(ps)),
                           "pooled_db": pooled(ps), "predictor": res.layer["predictor"]}
                    rows.append(row)
                    print(f"{clip.name:40s} {off:+.0f} dB  {cal:9s} {row['file_bytes']:7d} bytes (sRGB "
                          f"{row['srgb_bytes']}), {row['maps']} maps, worst {row['worst_db']:.2f}, pooled "
                          f"{row['pooled_db']:.2f} dB", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"split": str(args.split), "frames": args.frames, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
