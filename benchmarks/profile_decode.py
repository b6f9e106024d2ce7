"""Where a 1600x900 decode spends its time: stages, Python functions, and the network's operators.

Builds the 1600x900 14-bit pan of encode_speed.py, encodes it with the default settings
(block refinement), then decodes it with the shipped model three ways:

1. plain, for the decoder's own stage timings (video, flow, network, DNG) and frames/s;
2. under cProfile, for the functions inside "network" (global-map priors, warps, the
   forward pass, the refinement blend, conversions), by own and cumulative time;
3. one network forward on a real frame's inputs under torch.profiler, grouped by operator
   (convolutions, attention matmuls and softmax, norms, copies), and timed per top-level
   module with forward hooks (encoder levels, attention, decoder).

    python benchmarks/profile_decode.py [--frames 6] [--json results/profile_decode.json]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import openmp_passive  # noqa: F401  (first: before PyTorch loads OpenMP)
import torch

from encode_speed import make_clip
from rawvid.codec import DecodeOptions, decode, encode

#: functions whose cumulative time the report lists (module:function as cProfile names them)
WATCH = {
    "GlobalMap.apply": ("methods.py", "apply"),
    "GlobalMap.linearise": ("methods.py", "linearise"),
    "step_inputs (warps)": ("model.py", "step_inputs"),
    "backward_warp": ("flow.py", "backward_warp"),
    "run_network (forward, pad, crop)": ("model.py", "run_network"),
    "FAGDN.forward": ("model.py", "forward"),
    "dis_flow": ("flow.py", "dis_flow"),
    "predict_frame": ("chain.py", "predict_frame"),
    "refine (blend)": ("refine.py", "blend"),
    "refine (choose weights)": ("refine.py", "choose_weights"),
    "Network.predict": ("methods.py", "predict"),
    "Network._forward (tensors, warps, forward)": ("network.py", "_forward"),
    "unclip_mean (shadows)": ("noise.py", "unclip_mean"),
    "write_dng": ("dng.py", "write_dng"),
    "encode_dng": ("dng.py", "encode_dng"),
    "video read": ("video.py", "__next__"),
}


def function_table(stats: pstats.Stats, frames: int) -> tuple[dict, list]:
    watched, top = {}, []
    for (file, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for label, (f, fn) in WATCH.items():
            if file.endswith(f) and func == fn:
                watched[label] = round(watched.get(label, 0.0) + ct / frames, 4)
        top.append((tt / frames, ct / frames, f"{Path(file).name}:{func}"))
    top.sort(reverse=True)
    return watched, [{"function": n, "own_s_per_frame": round(t, 4), "cumulative_s_per_frame": round(c, 4)}
                     for t, c, n in top[:25]]


def capture_inputs(rvd: Path, td: Path) -> tuple:
    """(model, inputs, tile, layout) of the network's first call when the decoder's own path decodes ``rvd``."""
    import rawvid.model as model_mod

    captured: dict = {}
    real = model_mod.run_network

    def capture(model, inputs, tile=None, overlap=256, layout="contiguous"):
        captured.setdefault("args", (model, [x.clone() for x in inputs], tile, layout))
        return real(model, inputs, tile=tile, overlap=overlap, layout=layout)

    model_mod.run_network = capture
    import rawvid.network as network_mod

    network_mod.run_network = capture
    try:
        decode(rvd, td / "capture", DecodeOptions(device="cpu", start=0, stop=2))
    finally:
        model_mod.run_network = real
        network_mod.run_network = real
    return captured["args"]


def network_profile(rvd: Path, td: Path) -> dict:
    """Profile the forward pass on one real frame's inputs: per operator and per top-level module."""
    from rawvid.model import run_network as real

    model, inputs, tile, layout = capture_inputs(rvd, td)
    with torch.inference_mode():
        for _ in range(2):
            real(model, inputs, tile=tile, layout=layout)
        best = min(_timed(lambda: real(model, inputs, tile=tile, layout=layout)) for _ in range(3))
        times: dict[str, float] = {}

        def hook(name):
            def pre(_m, _i):
                times[name + "@start"] = time.perf_counter()

            def post(_m, _i, _o):
                times[name] = times.get(name, 0.0) + time.perf_counter() - times.pop(name + "@start")
            return pre, post

        handles = []
        for name, child in model.named_children():
            pre, post = hook(name)
            handles += [child.register_forward_pre_hook(pre), child.register_forward_hook(post)]
        real(model, inputs, tile=tile, layout=layout)
        for h in handles:
            h.remove()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            real(model, inputs, tile=tile, layout=layout)
    ops = sorted(((e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()),
                 key=lambda x: -x[1])
    total = sum(t for _, t, _ in ops)
    shape = list(inputs[0].shape)
    return {"input_shape": shape, "layout": layout, "forward_best_of_3_s": round(best, 4),
            "modules_s": {k: round(v, 4) for k, v in sorted(times.items(), key=lambda kv: -kv[1])},
            "operators_self_s": [{"op": k, "s": round(t, 4), "share": round(t / total, 3), "calls": n}
                                 for k, t, n in ops[:20]]}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "frames": args.frames}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        make_clip(td / "clip.MLV", args.frames)
        rvd = encode(td / "clip.MLV", td / "clip.rvd").output
        t0 = time.perf_counter()
        res = decode(rvd, td / "plain", DecodeOptions(device="cpu"))
        wall = time.perf_counter() - t0
        predicted = res.frames - 1
        out["plain"] = {"fps": round(res.frames / wall, 3), "seconds": round(wall, 2),
                        "stage_s_per_frame": {k: round(v / max(1, predicted if k in ("flow", "network") else res.frames), 4)
                                              for k, v in res.timings.items()}}
        print("plain decode", json.dumps(out["plain"]), flush=True)
        prof = cProfile.Profile()
        prof.enable()
        decode(rvd, td / "profiled", DecodeOptions(device="cpu"))
        prof.disable()
        watched, top = function_table(pstats.Stats(prof), max(1, predicted))
        out["functions_cumulative_s_per_predicted_frame"] = watched
        out["top_own_time"] = top
        print("functions", json.dumps(watched, indent=1), flush=True)
        for row in top[:12]:
            print(f"  {row['own_s_per_frame']:.4f} s own  {row['cumulative_s_per_frame']:.4f} s cum  {row['function']}")
        out["network"] = network_profile(rvd, td)
        print("network", json.dumps(out["network"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
