"""Decode speed at 1600x900, split into video decode, flow, network and DNG write.

Encodes a 1600x900 14-bit clip built from the real Canon 550D still (see
encode_speed.py), then decodes it with global-fit and with the network in each
configuration (random weights: speed does not depend on the weights' values).
``shipped`` decodes with models/fagdn-default itself, the model the encode's block
refinement is made for, so that row includes applying the refinement (the default path).

    python benchmarks/decode_speed.py [--frames 6] [--configs shipped,paper,small,fast,tiny,fast-prior] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from encode_speed import make_clip
from rawvid.codec import DecodeOptions, decode, encode
from rawvid.model import DEFAULT_MODEL, FAGDN, count_parameters, load_model, resolve_model, save_model
from rawvid.train import TRAIN_CONFIGS as CONFIGS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--configs", default="shipped,paper,small,fast,tiny,fast-prior")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "runs": {}}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        make_clip(td / "clip.MLV", args.frames)
        t0 = time.perf_counter()
        rvd = encode(td / "clip.MLV", td / "clip.rvd").output  # default settings: block refinement included
        results["encode_fps_default"] = round(args.frames / (time.perf_counter() - t0), 3)
        print("encode (default settings)", results["encode_fps_default"], "fps", flush=True)
        runs = [("global-fit", None)] + [("network", c) for c in args.configs.split(",") if c]
        for method, cfg in runs:
            model = None
            if cfg == "shipped":
                model = str(resolve_model(DEFAULT_MODEL))
                net = load_model(model)
            elif cfg:
                torch.manual_seed(0)
                net = FAGDN(CONFIGS[cfg])
                model = str(td / f"{cfg}.safetensors")
                save_model(net, model)
            t0 = time.perf_counter()
            res = decode(rvd, td / f"out-{method}-{cfg}", DecodeOptions(method=method, model=model, device="cpu"))
            wall = time.perf_counter() - t0
            assert not res.notes or cfg != "shipped", res.notes  # the refinement applies to the shipped model
            # frame 0 is the stored keyframe: per-frame network/flow costs are over the predicted frames
            predicted = res.frames - 1
            row = {"frames": res.frames, "seconds": round(wall, 2), "fps": round(res.frames / wall, 3),
                   "per_frame_s": {k: round(v / max(1, predicted if k in ("flow", "network") else res.frames), 4)
                                   for k, v in res.timings.items()}}
            if cfg:
                row["parameters"] = count_parameters(net)
                row["predicted_fps"] = round(predicted / sum(res.timings.values()), 3)
            name = method if not cfg else f"network-{cfg}"
            results["runs"][name] = row
            print(name, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
