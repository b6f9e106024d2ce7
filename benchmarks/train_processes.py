"""Training speed and loss on 1 and 2 processes (torchrun, DistributedDataParallel, gloo), in one run.

Trains the shipped architecture from scratch for the same steps and global batch on one
process and under ``torchrun --nproc_per_node 2``, and reads seconds per step and the
loss curve from each run's log.

    python benchmarks/train_processes.py data/synth/stable/train [--steps 40] [--batch 4] [--crop 64]
                                         [--json benchmarks/results/train_processes.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(data: str, out: Path, procs: int, args) -> dict:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
        if procs > 1 else [sys.executable]
    cmd = [*launcher, "-m", "rawvid", "train", data, "-o", str(out), "--steps", str(args.steps), "--batch",
           str(args.batch), "--crop", str(args.crop), "--val-every", str(args.steps * 10), "--save-every",
           str(args.steps), "--device", "cpu", "--fresh"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = [json.loads(x) for x in (out / "train.log.jsonl").read_text().splitlines()]
    steps = [d for d in log if d["event"] == "step"]
    later = [d["sec_per_step"] for d in steps[1:]] or [d["sec_per_step"] for d in steps]  # after warm-up
    return {"processes": procs, "wall_seconds": wall, "sec_per_step": sum(later) / len(later),
            "loss": {d["step"]: d["loss"] for d in steps}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rawvid-ddp-") as td:
        # the clip cache is built once, outside the timing (both runs share the data folder's clips)
        for procs in (1, 2):
            row = run(args.data, Path(td) / f"p{procs}", procs, args)
            rows.append(row)
            print(f"{procs} process(es): {row['sec_per_step']:.2f} s/step, loss {row['loss']}", flush=True)
    res = {"benchmark": "train_processes", "data": args.data, "steps": args.steps, "batch": args.batch,
           "crop": args.crop, "arch": "fast-key", "cpu_count": os.cpu_count(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
