"""Clips per minute of ``rawvid batch`` with 1 and 2 workers, in one run (same clips, same load).

Makes an archive of short 960x540 14-bit MLV clips, each a different window of frames of
the shipped example (genuine Canon 550D sensor data, LJ92 as MLV App stores it), then
encodes the whole archive once per executor and worker count with the default settings
(H.265 CRF 16, block refinement with the shipped network), every clip redone each time.
The cores are shared out: with W workers each clip gets cores / W threads.

    python benchmarks/batch_scaling.py [--clips 6] [--frames 8] [--workers 1,2] [--executors ray,processes]
                                      [--repeat 1] [--json benchmarks/results/batch_scaling.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from rawvid.batch import BatchSettings, Executor, run_batch
from rawvid.encoder import EncodeOptions
from rawvid.mlv import MLVReader, MLVWriter

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "colorchart_pan.MLV"


def make_archive(folder: Path, clips: int, frames: int) -> list[Path]:
    """``clips`` MLVs of ``frames`` frames each, cut from the example at staggered starts."""
    with MLVReader(EXAMPLE) as reader:
        info = reader.info
        mosaics = [reader.read(i) for i in range(len(reader))]
    n = len(mosaics)
    paths = []
    for k in range(clips):
        start = (k * 2) % max(1, n - frames + 1)
        path = folder / f"reel{k // 3 + 1}" / f"clip{k:02d}.MLV"
        path.parent.mkdir(parents=True, exist_ok=True)
        with MLVWriter(path, info, lj92=True) as w:
            for i in range(frames):
                w.write_frame(mosaics[(start + i) % n], number=i)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--executors", default="ray,processes")
    ap.add_argument("--repeat", type=int, default=1, help="runs per point; the best is kept")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="rawvid-batch-bench-") as td:
        root = Path(td) / "archive"
        make_archive(root, args.clips, args.frames)
        for kind in args.executors.split(","):
            for w in (int(x) for x in args.workers.split(",")):
                best = None
                for _ in range(args.repeat):
                    threads = max(1, cores // w)
                    ex = Executor(kind, w, None, float(threads))
                    res = run_batch([root], Path(td) / f"out-{kind}-{w}", BatchSettings("encode", EncodeOptions(),
                                    threads=threads), ex, redo=True)
                    t = res.report["totals"]
                    assert t["failed"] == 0, res.report["clips"]
                    if best is None or t["clips_per_minute"] > best["clips_per_minute"]:
                        best = t
                row = {"executor": kind, "workers": w, "threads_per_clip": max(1, cores // w), **best}
                rows.append(row)
                print(f"{kind:9s} {w} worker(s) x {row['threads_per_clip']} thread(s): "
                      f"{best['clips_per_minute']:.2f} clips/min, {best['frames_per_second']:.2f} fps "
                      f"({best['wall_seconds']:.1f} s, start-up {best['startup_seconds']:.1f} s)", flush=True)
    result = {"benchmark": "batch_scaling", "clips": args.clips, "frames_per_clip": args.frames,
              "size": "960x540 14-bit LJ92 MLV", "settings": "rawvid encode defaults (H.265 CRF 16, refine blocks)",
              "machine": {"platform": platform.platform(), "cpu_count": cores}, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
