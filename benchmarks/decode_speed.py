"""Decode speed at 1600x900, split into video decode, flow, network and DNG write.

Encodes a 1600x900 14-bit clip built from the real Canon 550D still (see
encode_speed.py), then decodes it with global-fit and with the network in each
configuration (random weights: speed does not depend on the weights' values).
``shipped`` decodes with models/fagdn-default itself, the model the encode's block
refinement is made for, so that row includes applying the refinement (the default path).
With ``--runtimes torch,onnxruntime`` the shipped model's encode and decode run in each
runtime (each decodes the file it encoded); the other configurations run in PyTorch.

``--fp32`` adds the shipped model decoding the clip coded with the network in float32 (where the
default codes it in bfloat16: decode follows the file). With ``--repeat N`` every decode runs N times, in rounds over all configurations (so a slow
spell of the machine hits them alike), and each row keeps its fastest run.

    python benchmarks/decode_speed.py [--frames 6] [--configs shipped,paper,small,fast,tiny,fast-prior]
                                      [--runtimes torch,onnxruntime] [--fp32] [--repeat 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import openmp_passive  # noqa: F401  (first: before PyTorch loads OpenMP)
import torch

from encode_speed import make_clip
from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode
from rawvid.model import DEFAULT_MODEL, FAGDN, count_parameters, load_model, resolve_model, save_model
from rawvid.train import TRAIN_CONFIGS as CONFIGS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--configs", default="shipped,paper,small,fast,tiny,fast-prior")
    ap.add_argument("--runtimes", default="torch")
    ap.add_argument("--fp32", action="store_true", help="also the shipped model on a file coded in float32")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from rawvid.chain import network_layout

    results = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "network_layout": network_layout(),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "model": DEFAULT_MODEL, "runs": {}}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        make_clip(td / "clip.MLV", args.frames)
        rvds, runtimes = {}, args.runtimes.split(",")
        for rt in runtimes:
            suffix = "" if rt == "torch" else f"_{rt}"
            t0 = time.perf_counter()  # default settings: block refinement included
            rvds[rt] = encode(td / "clip.MLV", td / f"clip-{rt}.rvd", EncodeOptions(runtime=rt)).output
            results[f"encode_fps_default{suffix}"] = round(args.frames / (time.perf_counter() - t0), 3)
            print(f"encode (default settings, {rt})", results[f"encode_fps_default{suffix}"], "fps", flush=True)
        if args.fp32:  # the same clip coded with the network in float32: its decode follows
            rvds["fp32"] = encode(td / "clip.MLV", td / "clip-fp32.rvd", EncodeOptions(layout="channels_last")).output
        runs = [("global-fit", None, runtimes[0])] + [("network", c, "torch") for c in args.configs.split(",")
                                                       if c and c != "shipped"]
        if "shipped" in args.configs.split(","):
            runs[1:1] = [("network", "shipped", rt) for rt in runtimes] + ([("network", "shipped", "fp32")]
                                                                           if args.fp32 else [])
        nets = {}
        for method, cfg, rt in runs:
            model = None
            if cfg == "shipped":
                model = str(resolve_model(DEFAULT_MODEL))
                net = load_model(model)
            elif cfg:
                torch.manual_seed(0)
                net = FAGDN(CONFIGS[cfg])
                model = str(td / f"{cfg}.safetensors")
                save_model(net, model)
            nets[(method, cfg, rt)] = (model, net if cfg else None)
        for rep in range(args.repeat):
            for method, cfg, rt in runs:
                rvd = rvds[rt] if rt in rvds else rvds[runtimes[0]]
                model, net = nets[(method, cfg, rt)]
                out = td / f"out-{method}-{cfg}-{rt}-{rep}"
                t0 = time.perf_counter()
                res = decode(rvd, out, DecodeOptions(method=method, model=model, device="cpu",
                                                     runtime="torch" if rt == "fp32" else rt))
                wall = time.perf_counter() - t0
                shutil.rmtree(out)
                assert not res.notes or cfg != "shipped", res.notes  # the refinement applies to the shipped model
                # frame 0 is the stored keyframe: per-frame network/flow costs are over the predicted frames
                predicted = res.frames - 1
                row = {"frames": res.frames, "seconds": round(wall, 2), "fps": round(res.frames / wall, 3),
                       "per_frame_s": {k: round(v / max(1, predicted if k in ("flow", "network") else res.frames), 4)
                                       for k, v in res.timings.items()}}
                if cfg:
                    row["parameters"] = count_parameters(net)
                    row["predicted_fps"] = round(predicted / sum(res.timings.values()), 3)
                name = method if not cfg else f"network-{cfg}" + ("" if rt == "torch" else f"-{rt}")
                best = results["runs"].get(name)
                row["runs_fps"] = (best["runs_fps"] if best else []) + [row["fps"]]
                if best is None or row["fps"] > best["fps"]:
                    results["runs"][name] = row
                else:
                    best["runs_fps"] = row["runs_fps"]
                print(rep, name, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
