"""The network's arithmetic on a split: bfloat16 (what new files use where the CPU has it) against float32.

Runs ``rawvid bench``'s default setting (the shipped model, block refinement, paper's mode) twice
over the same clips, once with the encoder's network (and so the decoder's, which follows the
file) in float32 channels-last and once in bfloat16, and reports per clip and on the mean the
black-subtracted and paper-protocol PSNR, SSIM, bits per pixel and encode / decode frames per
second of each, and the differences. Both runs in one process, one after the other.

    python benchmarks/precision.py data/synth/stable/test [--frames 16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import openmp_passive  # noqa: F401  (first: before PyTorch loads OpenMP)

import rawvid.encoder as encoder
from rawvid.bench import MethodSpec, run_bench, sweep
from rawvid.chain import BF16_LAYOUT, NETWORK_LAYOUT
from rawvid.weights import DEFAULT_MODEL

LAYOUTS = {"fp32": NETWORK_LAYOUT, "bf16": BF16_LAYOUT}
KEYS = ("psnr_black", "psnr_paper", "ssim", "bits_per_pixel", "encode_fps", "decode_fps")


def per_clip(results: dict) -> dict:
    """clip -> the network's row (the default setting) of one bench run."""
    flat = lambda r: {**r, **r.get("rate", {}), **r.get("speed", {})}  # noqa: E731
    return {r["clip"]: {k: flat(r).get(k) for k in KEYS} for r in results["runs"] if r["method"].startswith("network")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=None, help="the first N frames of each clip")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings = sweep([16], False, [0], ["stable"], "h265", ["auto"], ["auto"])
    out: dict = {"model": DEFAULT_MODEL, "frames": args.frames, "layouts": LAYOUTS, "clips": {}, "mean": {}}
    chosen = encoder.network_layout
    try:
        for name, layout in LAYOUTS.items():
            encoder.network_layout = lambda *a, layout=layout, **k: layout
            res = run_bench(args.paths, [MethodSpec("network", DEFAULT_MODEL)], settings, max_frames=args.frames,
                            device="cpu")
            for clip, row in per_clip(res).items():
                out["clips"].setdefault(clip, {})[name] = row
            rows = [s for s in res["summary"] if s["method"].startswith("network")]
            out["mean"][name] = {k: rows[0].get(k) if rows else None for k in KEYS}
            print(name, json.dumps(out["mean"][name]), flush=True)
    finally:
        encoder.network_layout = chosen
    for clip, rows in out["clips"].items():
        rows["bf16_minus_fp32"] = {k: None if rows["fp32"][k] is None or rows["bf16"][k] is None
                                   else round(rows["bf16"][k] - rows["fp32"][k], 4) for k in KEYS[:4]}
        print(clip, json.dumps(rows["bf16_minus_fp32"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
