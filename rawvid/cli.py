"""The ``rawvid`` command: a thin layer over the Python API (parse options, show progress, report)."""
from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import RawvidError, RawvidWarning
from .meta import CALIBRATIONS, REFINEMENTS
from .weights import DEFAULT_MODEL

console = Console(stderr=True)
out = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]rawvid: error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C, so temp files are removed
    raise KeyboardInterrupt


def handle_errors(fn):
    """Turn rawvid errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import signal

        signal.signal(signal.SIGTERM, _terminate)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RawvidWarning)
                result = fn(*args, **kwargs)
            for w in caught:
                if not issubclass(w.category, RawvidWarning):
                    continue
                console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)
            return result
        except RawvidError as exc:
            _fail(str(exc))
        except (ValueError, OSError) as exc:  # option values and file-system problems
            _fail(str(exc))
        except KeyboardInterrupt:  # (decode says itself what it kept)
            console.print("[red]interrupted[/]: no output was left behind")
            sys.exit(130)

    return wrapper


class FpsColumn(TextColumn):
    """Frames per second of a rich progress task."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        return f"{speed:5.1f} fps" if speed else "  ... fps"


class FrameProgress:
    """A rich progress bar over frames, shown from the first frame on (so early errors print alone)."""

    def __init__(self, description: str):
        self.description = description
        self.bar: Progress | None = None
        self.task = None

    def __call__(self, done: int, total: int, stage: str | None = None) -> None:
        if stage and self.bar is not None and stage != self.description:  # a second pass: a fresh bar line
            self.description = stage
            self.task = self.bar.add_task(stage, total=total)
        if self.bar is None:
            self.description = stage or self.description
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                FpsColumn(), TimeRemainingColumn(), console=console)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def __enter__(self) -> "FrameProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


#: commands whose network runs beside rawvid's own threads: OpenMP's workers sleep instead of spinning
PASSIVE_OPENMP = ("encode", "decode", "batch", "bench")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rawvid")
@click.pass_context
def main(ctx: click.Context) -> None:
    """rawvid: RAW video as an sRGB video plus RAW keyframes, de-rendered back to RAW."""
    if ctx.invoked_subcommand in PASSIVE_OPENMP:
        from .pipeline import keep_freed_memory, passive_openmp

        passive_openmp()  # before anything imports PyTorch
        keep_freed_memory()


def _options(options: list):
    """Apply a list of click options (shared by a command and ``batch``)."""
    def deco(fn):
        for o in reversed(options):
            fn = o(fn)
        return fn
    return deco


#: encode's options, also ``batch``'s (which adds decode's)
ENCODE_OPTIONS = [
    click.option("--keyframe-interval", default=0, show_default=True, type=click.IntRange(min=0),
                 help="Store a RAW keyframe every N frames; 0 stores the first frame only."),
    click.option("--render", "render_mode", default="stable", show_default=True, type=click.Choice(["stable", "rvd"]),
                 help="sRGB rendering: stable (no flicker) or rvd (LibRaw defaults, as the RVD benchmark)."),
    click.option("--codec", default="h265", show_default=True, type=click.Choice(["h265", "h264"]),
                 help="Lossy video codec for the sRGB stream."),
    click.option("--crf", default=None, type=click.IntRange(0, 51),
                 help="sRGB video quality (lower is better); default 16; with --target-psnr the encoder tries "
                      "24, 28, 32 and 36 on the first frames and keeps the smallest whole file; 32 with the other "
                      "RAW layers (the layer carries the fidelity, the sRGB is the preview and the predictor's "
                      "input)."),
    click.option("--preset", default="medium", show_default=True, help="x265/x264 speed preset."),
    click.option("--lossless", is_flag=True, help="Store the sRGB stream losslessly (FFV1), as the paper did."),
    click.option("--frames", "frame_range", default=None, metavar="START:END",
                 help="Only these frames (END exclusive)."),
    click.option("--fps", type=click.FloatRange(0.001, 1000.0), default=None,
                 help="Override the frame rate (DNG folders default to 25)."),
    click.option("--calibration", default="auto", show_default=True, type=click.Choice(CALIBRATIONS),
                 help="per-frame: store every frame's global sRGB-to-RAW map (230 bytes a frame); adaptive: "
                      "store a frame's map only where it beats the map in force by 0.1 dB (exposure steps, zooms, "
                      "a rendering that drifts); auto: adaptive when every frame's RAW is known and there is no "
                      "RAW layer, else keyframe."),
    click.option("--refine", default="auto", show_default=True, type=click.Choice(REFINEMENTS),
                 help="blocks: run the decoder here and store, per 32x32 block, how far to trust the network over "
                      "global-fit and a gain for each Bayer channel (about 1-2% of the file; encoding runs as fast "
                      "as decoding); weights: the trust alone; auto: blocks when every frame's RAW is known; off: "
                      "none (with --calibration keyframe: the paper's mode, nothing per frame)."),
    click.option("--model", default=None, help="Weights (name in models/ or a .safetensors path; default "
                                                "fagdn-v2; decode: the manifest's)."),
    click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                 help="Where the network runs: auto is CUDA when a GPU is available, else the CPU."),
    click.option("--runtime", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnxruntime"]),
                 help="What runs the network: PyTorch or ONNX Runtime (the same predictions to float rounding); "
                      "auto: PyTorch when installed, else ONNX Runtime (decode: the runtime the file was coded with)."),
    click.option("--target-psnr", default=None, metavar="DB|floor[+-N]",
                 help="RAW layer: code the residual so that every frame lands within 0.3 dB of this "
                      "black-subtracted PSNR (aiming 0.1 dB above it; never 0.5 dB under); floor-3: 3 dB under "
                      "the clip's noise floor, measured on the first frame."),
    click.option("--raw-crf", type=click.FloatRange(0, 51), default=None, help="RAW layer at a fixed x265 CRF."),
    click.option("--lossless-raw", is_flag=True, help="RAW layer, lossless (FFV1): every decoded DNG is bit-exact."),
    click.option("--keyframe-psnr", default=None, metavar="DB|auto",
                 help="The paper's mode with lossy keyframes: the RAW keyframes coded with x265 (predicted from "
                      "their own sRGB) at this black-subtracted PSNR instead of lossless DNGs, nothing else coded; "
                      "auto: 8 dB over the clip's measured noise floor."),
    click.option("--raw-preset", default="fast", show_default=True, help="x265 preset of the RAW layer."),
    click.option("--raw-predictor", default="auto", show_default=True,
                 type=click.Choice(["auto", "chain", "direct"]),
                 help="RAW layer: code the residual to the de-rendering (chain), the RAW itself (direct), or let the "
                      "encoder code the first frames both ways and keep the cheaper (auto)."),
]


def encode_options(keyframe_interval, render_mode, codec, crf, preset, lossless, frame_range, fps, calibration,
                   refine, model, device, runtime, target_psnr, raw_crf, lossless_raw, raw_preset, raw_predictor,
                   keyframe_psnr=None):
    """EncodeOptions from the command line's values."""
    from .codec import EncodeOptions, parse_range
    from .video import VideoSettings

    start, stop = parse_range(frame_range)
    layer = layer_settings(target_psnr, raw_crf, lossless_raw, raw_preset, raw_predictor, keyframe_psnr)
    # no --crf: the encode's mode chooses (rawvid.encoder.resolve_video), as it does for the Python API
    return EncodeOptions(keyframe_interval=keyframe_interval, render=render_mode,
                         video=VideoSettings.make(codec, crf, lossless, preset), start=start, stop=stop, fps=fps,
                         calibration=calibration, refine=refine, model=model, device=device, raw_layer=layer,
                         runtime=runtime)


@main.command()
@click.argument("input", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The .rvd file to write.")
@click.option("--video", type=click.Path(path_type=Path), help="A camera's own sRGB video (with --raw).")
@click.option("--raw", type=click.Path(path_type=Path), help="The DNG of the video's first frame (with --video).")
@_options(ENCODE_OPTIONS)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
@handle_errors
def encode(input, output, video, raw, force, **options):
    """Encode an MLV clip, a folder of DNG frames, or --video + --raw into one .rvd file."""
    from .codec import encode as run_encode

    opts = encode_options(**options)
    with FrameProgress("encoding") as progress:
        result = run_encode(input, output, opts, video=video, raw=raw, force=force, progress=progress)
    _print_notes(result.notes)
    s = result.sizes
    ratio = f", {s['ratio_vs_source']:.1f}x smaller than the source" if "ratio_vs_source" in s else ""
    console.print(f"wrote [bold]{result.output}[/]: {result.frames} frames in {result.seconds:.1f} s "
                  f"({result.fps:.1f} fps), {s['file_bytes'] / 1e6:.2f} MB, {s['bits_per_pixel']:.3f} bits/pixel{ratio}",
                  highlight=False)


def _print_notes(notes: list[str]) -> None:
    """Notes in yellow, those that start with "warning:" in bold red (both on standard error)."""
    for note in notes:
        if note.startswith("warning: "):
            console.print(f"[bold red]warning:[/] {note[9:]}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


#: decode's own options, also ``batch``'s (the rest it shares with encode)
DECODE_OPTIONS = [
    click.option("--method", default="auto", show_default=True,
                 type=click.Choice(["auto", "network", "global-fit", "warp"]),
                 help="auto: the network when its weights are installed, else global-fit; warp: flow-warp baseline."),
    click.option("--compress", is_flag=True, help="Write lossless-JPEG DNGs (smaller, slower)."),
    click.option("--tile", type=int, default=None,
                 help="Network tile size in half-resolution pixels (default: automatic)."),
]


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder for the DNG frames.")
@_options(DECODE_OPTIONS)
@click.option("--model", default=None, help="Weights name in models/ or a .safetensors path (default: the manifest's).")
@click.option("--frames", "frame_range", default=None, metavar="START:END",
              help="Decode only these frames (decoding starts at the keyframe before START).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the network runs: auto is CUDA when a GPU is available, else the CPU.")
@click.option("--runtime", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnxruntime"]),
              help="What runs the network: PyTorch or ONNX Runtime (the same predictions to float rounding); "
                   "auto: the runtime the file was coded with when installed, else PyTorch when installed, else ONNX Runtime.")
@click.option("--resume", is_flag=True, help="Continue after the last complete frame in the output folder.")
@click.option("-f", "--force", is_flag=True, help="Write into a folder that holds other frames.")
@click.option("--salvage", is_flag=True, help="A damaged track (CRC-32 mismatch): write the frames decoded before "
                                              "the damage instead of refusing the file.")
@handle_errors
def decode(input, output, method, model, frame_range, compress, device, runtime, tile, resume, force, salvage):
    """Rebuild the RAW video of an .rvd as a DNG sequence (one file per frame)."""
    from .codec import DecodeOptions, decode as run_decode, parse_range

    start, stop = parse_range(frame_range)
    opts = DecodeOptions(method=method, model=model, start=start, stop=stop, compress=compress, device=device,
                         tile=tile, resume=resume, force=force, salvage=salvage, runtime=runtime)
    try:
        with FrameProgress("decoding") as progress:
            result = run_decode(input, output, opts, progress=progress)
    except KeyboardInterrupt:
        kept = len([p for p in Path(output).glob("*.dng")]) if Path(output).is_dir() else 0
        console.print(f"[red]interrupted[/]: {kept} complete DNG frame(s) kept in {output}; "
                      "run the same command with --resume to continue", highlight=False)
        sys.exit(130)
    _print_notes(result.notes)
    t = result.timings
    console.print(f"wrote {result.frames} DNG frames to [bold]{result.output}[/] in {result.seconds:.1f} s "
                  f"({result.fps:.2f} fps, {result.method} on {result.device}; video {t['video']:.1f} s, "
                  f"flow {t['flow']:.1f} s, network {t['network']:.1f} s, DNG {t['dng']:.1f} s)", highlight=False)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output folder; it mirrors the input tree (one input) or holds one folder per input.")
@click.option("--mode", default="encode", show_default=True, type=click.Choice(["encode", "decode", "bench"]),
              help="encode MLV files, DNG folders and RVD-layout videos to .rvd; decode .rvd files to DNG "
                   "folders; bench each clip (encode, decode, score) to CLIP.bench.json.")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=None,
              help="Clips at once on this machine (a local pool or a local Ray instance); default: one per "
                   "core, at most one per 2 GiB of memory (measured, see README).")
@click.option("--ray", "use_ray", is_flag=True, help="Run the clips as Ray tasks (pip install 'rawvid[cluster]').")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="Join this Ray cluster (default: RAY_ADDRESS, else a local Ray instance on this machine).")
@click.option("--cpus-per-clip", type=click.FloatRange(min=0.5), default=None,
              help="CPUs each clip's task declares and its threads (default: cores / workers; 2 on a cluster).")
@click.option("--gpus-per-clip", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs each Ray task declares (decode and the encoder's network pass then run on CUDA).")
@click.option("--memory-per-clip", type=click.FloatRange(min=0.1), default=None, metavar="GIB",
              help="Memory each Ray task declares to the scheduler.")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="The JSON report (default: OUTPUT/rawvid-batch.json).")
@click.option("--redo", is_flag=True, help="Process every clip again, even those whose output is complete.")
@click.option("--bench-frames", type=click.IntRange(min=2), default=None,
              help="--mode bench: score at most this many frames per clip.")
@_options(ENCODE_OPTIONS)
@_options(DECODE_OPTIONS)
@handle_errors
def batch(paths, output, mode, workers, use_ray, ray_address, cpus_per_clip, gpus_per_clip, memory_per_clip, report,
          redo, bench_frames, method, compress, tile, **options):
    """Encode (or decode, or bench) every clip under PATHS into OUTPUT, one clip per task.

    Clips: MLV files (with their split chunks .M00, .M01, ...), folders of DNG frames and the
    videos of RVD-layout folders; with --mode decode, .rvd files. A failing clip is reported and
    the rest go on; rerunning skips clips whose output is complete, so an interrupted batch
    resumes. Exit code 1 when a clip failed. With --ray, the inputs and OUTPUT must be on a file
    system every Ray node shares.
    """
    import os
    import time

    from .batch import BatchSettings, Executor, run_batch
    from .codec import DecodeOptions

    enc = encode_options(**options)
    if options["frame_range"] and mode != "encode":
        raise ValueError("--frames applies to --mode encode (decode and bench process whole clips)")
    dec = DecodeOptions(method=method, model=options["model"], compress=compress, device=options["device"], tile=tile,
                        runtime=options["runtime"])
    cores = os.cpu_count() or 1
    clustered = bool(ray_address or (use_ray and os.environ.get("RAY_ADDRESS")))
    workers = workers or default_workers()
    cpus = cpus_per_clip or (2.0 if clustered else max(1.0, float(cores // workers)))
    ex = Executor("ray" if use_ray or ray_address else "processes", workers, ray_address, cpus, gpus_per_clip,
                  int(memory_per_clip * 2**30) if memory_per_clip else None)
    settings = BatchSettings(mode, enc, dec, bench_frames, threads=max(1, int(cpus)))
    start = time.perf_counter()
    frames = 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(f"{mode} clips", total=None, rate="")

        def on_result(r: dict, done: int, total: int) -> None:
            nonlocal frames
            if r["status"] == "done":
                frames += r["frames"]
            if r["status"] == "failed":
                console.print(f"[red]failed[/] {r['clip']}: {r['error']}", highlight=False, soft_wrap=True)
            rate = f"{frames / (time.perf_counter() - start):5.2f} fps" if frames else ""
            bar.update(task, completed=done, total=total, rate=rate)

        result = run_batch(paths, output, settings, ex, report=report, redo=redo, on_result=on_result)
    _print_batch(result.report)
    console.print(f"report: [bold]{result.path}[/]", highlight=False)
    if result.report["totals"]["failed"]:
        sys.exit(1)


def default_workers() -> int:
    """One clip per core (measured faster than fewer clips with more threads each, see README), at
    most one per 2 GiB of memory."""
    import os

    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        return cores
    return max(1, min(cores, int(mem_gib // 2)))


def _print_batch(rep: dict) -> None:
    """The per-clip table and the totals line."""
    table = Table(box=None, pad_edge=False)
    for col in ("clip", "status", "frames", "in", "out", "bpp", "PSNR", "s", "worker / error"):
        table.add_column(col, justify="left" if col in ("clip", "status", "worker / error") else "right",
                         overflow="fold")
    for c in rep["clips"]:
        colour = {"done": "green", "skipped": "dim", "failed": "red"}[c["status"]]
        table.add_row(c["clip"], f"[{colour}]{c['status']}[/]", str(c["frames"] or ""),
                      _human(c["bytes_in"]) if c["bytes_in"] else "", _human(c["bytes_out"]) if c["bytes_out"] else "",
                      _fmt(c["bits_per_pixel"], 3), _fmt(c["psnr_black"]),
                      f"{c['seconds']:.1f}" if c["seconds"] else "",
                      c["error"].replace(f"{c['input']}: ", "") if c["error"] else c["worker"])
    out.print(table)
    t = rep["totals"]
    rate = f"{t['clips_per_minute']:.2f} clips/min, {t['frames_per_second']:.2f} fps" if t["done"] else "nothing to do"
    ex = rep["executor"]
    where = f"Ray (start-up {t['startup_seconds']:.1f} s)" if ex["kind"] == "ray" else f"{ex['workers']} local worker(s)"
    out.print(f"{t['done']} done, {t['skipped']} skipped, {t['failed']} failed in {t['wall_seconds']:.1f} s on "
              f"{where}: {rate}", highlight=False)


def layer_settings(target_psnr: float | str | None, raw_crf: float | None, lossless_raw: bool, preset: str = "fast",
                   predictor: str = "auto", keyframe_psnr: float | str | None = None):
    """The RAW layer an encode asks for (None: none, the paper's design)."""
    from .rawlayer import LayerSettings

    chosen = [n for n, v in (("--target-psnr", target_psnr), ("--raw-crf", raw_crf), ("--lossless-raw", lossless_raw),
                             ("--keyframe-psnr", keyframe_psnr)) if v not in (None, False)]
    if len(chosen) > 1:
        raise ValueError(f"choose one of {' and '.join(chosen)}")
    if not chosen:
        return None
    if lossless_raw:
        return LayerSettings(codec="ffv1", predictor=predictor)
    if keyframe_psnr is not None:  # (LayerSettings refuses --raw-predictor direct for it)
        db, offset = (None, None) if str(keyframe_psnr).strip().lower() == "auto" else \
            _psnr_spec(keyframe_psnr, "--keyframe-psnr")
        return LayerSettings(target_psnr=db, floor_offset=offset, preset=preset, predictor=predictor,
                             keyframes_only=True)
    db, offset = _psnr_spec(target_psnr, "--target-psnr") if target_psnr is not None else (None, None)
    return LayerSettings(target_psnr=db, floor_offset=offset, crf=raw_crf, preset=preset, predictor=predictor)


def _psnr_spec(text, option: str) -> tuple[float | None, float | None]:
    """A PSNR option's value: (dB, None) for a number, (None, offset) for ``floor``, ``floor-3``, ``floor+2``
    (relative to the clip's noise floor, which the encoder measures on the first frame)."""
    t = str(text).strip().lower().replace(" ", "")
    try:
        if t.startswith("floor"):
            return None, float(t[5:] or 0)
        return float(t), None
    except ValueError:
        raise ValueError(f"{option} takes a PSNR in dB or floor[+-N] (dB from the clip's noise floor)"
                         f"{' or auto' if option == '--keyframe-psnr' else ''}, not {str(text)[:40]!r}") from None


def _int_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of integers, got {text!r}") from None


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--model", "models", multiple=True, help="Bench the network with these weights (repeatable).")
@click.option("--methods", default=None,
              help="Comma-separated: network, global-fit, warp (default: all; network when weights exist).")
@click.option("--crf", default=None, help="Comma-separated CRF values to sweep (default 16).")
@click.option("--lossless", is_flag=True, help="Add a lossless (FFV1) sRGB point to the sweep.")
@click.option("--codec", default="h265", show_default=True, type=click.Choice(["h265", "h264"]))
@click.option("--keyframe-interval", "kfi", default="0", show_default=True,
              help="Comma-separated intervals (0 = first frame only); --rd: the paper's mode's curves at each.")
@click.option("--render", "renders", default="stable", show_default=True, help="Comma-separated: stable, rvd.")
@click.option("--calibration", "calibrations", default="auto", show_default=True,
              help="Comma-separated: auto, keyframe (the paper's mode), per-frame, adaptive.")
@click.option("--refine", "refines", default="auto", show_default=True,
              help="Comma-separated: auto, off (the paper's mode), blocks, weights (blocks without gains).")
@click.option("--reencode", is_flag=True, help="RVD layout: pass the given sRGB through the lossy settings.")
@click.option("--frames", "frame_range", default=None, metavar="START:END",
              help="Bench only these frames of each clip, as encode and decode take them (START must be 0: "
                   "a bench chains from the first frame).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the network runs: auto is CUDA when a GPU is available, else the CPU.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write every figure to this JSON file.")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), help="Write PSNR-over-frames and rate-distortion PNGs here.")
@click.option("--wide", is_flag=True, help="Every figure in one wide table (the default fits 80 columns).")
@click.option("--rd", is_flag=True, help="Rate-distortion: rawvid's modes (paper mode, default, --target-psnr ladder, "
                                         "lossless RAW) against x265, JPEG XL, FFV1 and lossless-JPEG DNG on the Bayer planes.")
@click.option("--targets", default="-6,-3,0,2,4", show_default=True,
              help="--rd: the --target-psnr ladder, in dB relative to each clip's measured noise floor.")
@click.option("--curves", default=None, metavar="NAMES",
              help="--rd: only these curves, comma-separated (e.g. rawvid-lossless,ffv1-bayer,lj92-dng; "
                   "rawvid.rd.CURVES lists them; default: every one).")
@click.option("--keyframe-targets", default="4,8,12", show_default=True,
              help="--rd: the paper's mode with lossy keyframes (encode --keyframe-psnr), the keyframes' PSNR in dB "
                   "relative to each clip's noise floor ('' for none).")
@click.option("--x265-crf", "x265_crfs", default=None,
              help="--rd: the CRF ladder of x265 on the Bayer planes (default: rawvid.rd.DEFAULT_X265_CRFS, "
                   "30 ... 2 in 12 steps, dense near the noise floor).")
@click.option("--layer-crf", "layer_crfs", default="auto", show_default=True,
              help="--rd: sRGB CRFs of the layered modes (each a --target-psnr curve; auto: the encoder's own "
                   "choice, as rawvid encode --target-psnr; the first number also for lossless, else 32).")
@handle_errors
def bench(paths, models, methods, crf, lossless, codec, kfi, renders, calibrations, refines, reencode, frame_range,
          device, json_path, plots_dir, wide, rd, targets, curves, keyframe_targets, x265_crfs, layer_crfs):
    """Quality (PSNR, SSIM), rate (bits per pixel) and speed of every method, side by side.

    PATHS: RVD-layout folders (data.json, RAW/, sRGB/), MLV files, DNG folders, or folders of those
    (default: the shipped examples).
    """
    from .atomic import atomic_write
    from .bench import MethodSpec, run_bench, sweep, write_plots
    from .weights import DEFAULT_MODEL, MODELS_DIR, resolve_model

    from .codec import parse_range

    start, max_frames = parse_range(frame_range)
    if start:
        raise ValueError(f"--frames {frame_range}: a bench starts at frame 0 (give :END)")
    _check_outputs(json_path, plots_dir)  # before a long run, not after
    if not paths:
        paths = (MODELS_DIR.parent / "examples",)
    if rd:
        return _bench_rd(list(paths), targets, x265_crfs, crf, max_frames, device, json_path, plots_dir, layer_crfs,
                         keyframe_targets, curves, kfi)
    names = [m.strip() for m in methods.split(",")] if methods else None
    for n in names or []:
        if n not in ("network", "global-fit", "warp"):
            raise ValueError(f"unknown method {n!r} (network, global-fit, warp)")
    specs = [MethodSpec("network", m) for m in models]
    if not specs and (names is None or "network" in names):
        try:
            resolve_model(DEFAULT_MODEL)
            specs.append(MethodSpec("network", DEFAULT_MODEL))
        except RawvidError:
            if names and "network" in names:
                raise
            console.print(f"[yellow]note:[/] no weights for {DEFAULT_MODEL!r}: benching global-fit and warp only")
    specs += [MethodSpec(m) for m in ("global-fit", "warp") if names is None or m in names]
    for r in renders.split(","):
        if r not in ("stable", "rvd"):
            raise ValueError(f"unknown render mode {r!r} (stable, rvd)")
    cals = [c.strip() for c in calibrations.split(",")]
    for c in cals:
        if c not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {c!r} (auto, keyframe, per-frame, adaptive)")
    refs = [r.strip() for r in refines.split(",")]
    for r in refs:
        if r not in REFINEMENTS:
            raise ValueError(f"unknown refinement {r!r} (auto, off, blocks, weights)")
    settings = sweep(_int_list(crf), lossless, _int_list(kfi) or [0], renders.split(","), codec, cals, refs)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), FpsColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        jobs = bar.add_task("clips x settings", total=None)
        frames = bar.add_task("frames", total=None)

        def on_frames(desc: str, done: int, total: int) -> None:
            if done == 1:
                bar.reset(frames, total=total, description=desc)
            bar.update(frames, completed=done, total=total)

        results = run_bench(list(paths), specs, settings, reencode=reencode, max_frames=max_frames, device=device,
                            progress=on_frames, clip_done=lambda d, n: bar.update(jobs, completed=d, total=n))
    _print_bench(results, wide)
    if json_path:
        with atomic_write(json_path) as f:
            f.write(json.dumps(results, indent=1, allow_nan=False, default=str).encode())
        console.print(f"wrote {json_path}")
    if plots_dir:
        for p in write_plots(results, plots_dir):
            console.print(f"wrote {p}")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"expected a comma-separated list of numbers, got {text!r}") from None


def _print_bench(results: dict, wide: bool) -> None:
    """The bench's figures on the terminal: by default one compact table per setting that fits 80
    columns (every figure is in --json); ``--wide``: everything in one table."""
    from rich import box

    n = len({r["clip"] for r in results["runs"]})
    if wide:
        t = Table(title=f"rawvid bench: {n} clip(s)", title_justify="left")
        for col in ("setting", "method", "clips", "PSNR paper", "PSNR black", "SSIM", "PSNR black @1/10/30",
                    "last-frame PSNR black", "bits/px", "x vs LJ92 DNG", "enc fps", "dec fps"):
            t.add_column(col, justify="left" if col in ("setting", "method") else "right")
        for s in results["summary"]:
            at = " / ".join(_fmt(v["psnr_black"], 1) for v in s["at_frames"].values())
            t.add_row(s["setting"], s["method"], str(s["clips"]), _fmt(s["psnr_paper"]), _fmt(s["psnr_black"]),
                      _fmt(s["ssim"], 4), at or "-", _fmt(s["last_frame_psnr_black"]), _fmt(s["bits_per_pixel"], 3),
                      _fmt(s["ratio_vs_lj92_dng"], 1), _fmt(s["encode_fps"]), _fmt(s["decode_fps"]))
        (out if out.is_terminal else Console(width=220)).print(t)
    else:
        out.print(f"rawvid bench: {n} clip(s); PSNR in dB (black-subtracted, paper protocol), bits per pixel "
                  "of the whole file, decode frames/s", highlight=False)
        for setting in dict.fromkeys(s["setting"] for s in results["summary"]):
            t = Table(title=setting, title_justify="left", box=box.SIMPLE, padding=(0, 1))
            for col in ("method", "PSNR black", "PSNR paper", "SSIM", "bits/px", "dec fps"):
                t.add_column(col, justify="left" if col == "method" else "right")
            for s in results["summary"]:
                if s["setting"] == setting:
                    t.add_row(s["method"], _fmt(s["psnr_black"]), _fmt(s["psnr_paper"]), _fmt(s["ssim"], 4),
                              _fmt(s["bits_per_pixel"], 3), _fmt(s["decode_fps"]))
            out.print(t)
    for tag, rows in results["tags"].items():
        out.print(f"[bold]{tag}[/]: " + "; ".join(f"{r['method']} ({r['setting']}) {_fmt(r['psnr_black'])} dB "
                                                  f"black over {r['clips']} clip(s)" for r in rows), highlight=False)


def _check_outputs(json_path: Path | None, plots_dir: Path | None) -> None:
    """Refuse --json/--plots paths that could not be written, before any work."""
    import os

    if json_path is not None:
        parent = json_path.parent if str(json_path.parent) else Path(".")
        if json_path.is_dir():
            raise RawvidError(json_path, "--json names a folder, not a file")
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise RawvidError(json_path, "--json: its folder does not exist or is not writable")
    if plots_dir is not None:
        if plots_dir.exists() and not plots_dir.is_dir():
            raise RawvidError(plots_dir, "--plots names a file, not a folder")
        base = plots_dir if plots_dir.exists() else next((p for p in plots_dir.parents if p.exists()), Path("."))
        if not os.access(base, os.W_OK):
            raise RawvidError(plots_dir, "--plots: the folder cannot be created or written")


def _bench_rd(paths, targets, x265_crfs, crf, max_frames, device, json_path, plots_dir, layer_crfs,
              keyframe_targets: str = "4,8,12", curves: str | None = None, kfi: str = "0") -> None:
    """``rawvid bench --rd``: the rate-distortion table, BD-rates, JSON and plots."""
    import tempfile

    from .atomic import atomic_write
    from .bench import discover, versions
    from .rd import CURVES, DEFAULT_X265_CRFS, RDOptions, plot, plot_savings, run_rd

    chosen = None
    if curves is not None:
        chosen = tuple(c.strip() for c in curves.split(",") if c.strip())
        unknown = [c for c in chosen if c not in CURVES]
        if unknown or not chosen:
            raise ValueError(f"--curves: unknown curve {', '.join(unknown) or repr(curves)} (one of {', '.join(CURVES)})")
    clips = discover(paths)
    opts = RDOptions(targets=_floats(targets), x265_crfs=_floats(x265_crfs) if x265_crfs else DEFAULT_X265_CRFS,
                     keyframe_targets=_floats(keyframe_targets), curves=chosen,
                     keyframe_intervals=tuple(_int_list(kfi) or (0,)),
                     max_frames=max_frames, device=device,
                     paper_crfs=tuple(_int_list(crf) or (16, 24, 32)),
                     layer_srgb_crfs=tuple(_int_list(layer_crfs.replace("auto", "0")) or (0,)))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("rd", total=None)

        def on(desc, k, n, c, nc):
            bar.update(task, description=f"clip {c + 1}/{nc} {desc}", completed=k, total=n)

        with tempfile.TemporaryDirectory(prefix="rawvid-rd-") as td:
            res = run_rd(clips, opts, Path(td), progress=on)
    points = res.pop("_points")
    t = Table(title="rawvid bench --rd", title_justify="left")
    for col in ("clip", "codec", "setting", "bpp file", "bpp RAW part", "PSNR black", "PSNR paper", "worst frame",
                "floor"):
        t.add_column(col, justify="left" if col in ("clip", "codec", "setting") else "right")
    for p in points:
        t.add_row(p.clip, p.codec, p.setting, f"{p.bpp:.4f}", f"{p.bpp_raw:.4f}",
                  "lossless" if p.lossless else f"{p.psnr_black:.2f}",
                  "lossless" if p.lossless else f"{p.psnr_paper:.2f}",
                  "lossless" if p.lossless else f"{p.min_frame_psnr_black:.2f}", f"{res['floors'][p.clip]:.2f}")
    wide = out if out.is_terminal else Console(width=220)
    wide.print(t)
    for ref in ("x265_bayer", "x265_bayer_qp", "x265_hadamard"):
        for codec, row in res["summary"][f"bd_rate_vs_{ref}_percent"].items():
            if row["mean_raw"] is None and row["mean_file"] is None:  # no such reference among --curves
                continue
            wide.print(f"BD-rate vs {ref.replace('_', '-')}, {codec}: RAW part {_fmt(row['mean_raw'], 1)}%, whole file "
                       f"{_fmt(row['mean_file'], 1)}%", highlight=False)
    for r in res["target_savings"]:
        wide.print(f"{r['clip']} {r['codec']}: target floor{r['target_minus_floor']:+.1f} dB -> {r['psnr_black']:.2f} dB "
                   f"(worst frame {r['min_frame']:.2f}), RAW part {r['bpp_raw']:.4f} bpp vs x265-bayer "
                   f"{_fmt(r['x265_bayer_bpp_same_psnr'], 4)} (CRF) / {_fmt(r['x265_bayer_qp_bpp_same_psnr'], 4)} (QP): "
                   f"saving {_fmt(r['saving_percent'], 1)}% against the stronger; at the same worst frame "
                   f"{_fmt(r.get('saving_same_worst_frame_percent'), 1)}%", highlight=False)
    res.update(command="rawvid " + " ".join(sys.argv[1:]), versions=versions())
    if json_path:
        with atomic_write(json_path) as f:
            f.write(json.dumps(res, indent=1, default=str).encode())
        console.print(f"wrote {json_path}")
    if plots_dir:
        for rate in ("bpp_raw", "bpp"):
            p = plot(points, res["floors"], Path(plots_dir) / f"rd_{'raw_part' if rate == 'bpp_raw' else 'file'}.png",
                     rate)
            console.print(f"wrote {p}")
        if res.get("target_savings"):
            console.print(f"wrote {plot_savings(res['target_savings'], Path(plots_dir) / 'savings.png')}")


@main.group()
def dataset() -> None:
    """Build training and test data in the RVD layout."""


def _scene_sources(fn):
    """The options that name the RAW stills a dataset is built from (``_load_scenes`` reads them)."""
    fn = click.option("--raw", "raws", multiple=True, type=click.Path(path_type=Path),
                      help="Extra RAW stills (DNG), repeatable.")(fn)
    return click.option("--shared", "shared_root", type=click.Path(path_type=Path), default=None,
                        help="The real camera data folder (default: ../shared/data beside the repository).")(fn)


@dataset.command("build")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Folder to write: OUTPUT/<render>/{train,test}/ in the RVD layout.")
@_scene_sources
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--size", default="512x320", show_default=True, help="Clip size WxH in Bayer pixels.")
@click.option("--frames", default=24, show_default=True, type=click.IntRange(2), help="Frames per training clip.")
@click.option("--test-frames", default=32, show_default=True, type=click.IntRange(2), help="Frames per test clip.")
@click.option("--clips-per-scene", default=3, show_default=True, type=click.IntRange(1))
@click.option("--test-fraction", default=0.25, show_default=True, type=click.FloatRange(0, 0.9))
@click.option("--render", "renders", default="stable,rvd", show_default=True, help="Comma-separated render modes.")
@click.option("--hold-out-camera", "hold_out", multiple=True,
              help="Leave-one-camera-out: every scene of a camera whose name contains this goes to test (repeatable).")
@handle_errors
def dataset_build(output, shared_root, raws, seed, size, frames, test_frames, clips_per_scene, test_fraction, renders,
                  hold_out):
    """Synthetic RAW video clips over real sensor stills, split by source scene."""
    from .dataset import build_dataset

    scenes = _load_scenes(shared_root, raws)
    if len({s.source_group for s in scenes}) < 2:
        raise RawvidError(None, "one RAW still makes no test split (its clips would all be training clips): give "
                          "at least two stills of the camera, e.g. --raw a.dng --raw b.dng")
    w, h = _size(size)
    modes = _renders(renders)
    with FrameProgress("clips") as progress:
        rep = build_dataset(output, scenes, seed=seed, frames=frames, test_frames=test_frames, size=(w, h),
                            clips_per_scene=clips_per_scene, test_fraction=test_fraction, renders=modes,
                            progress=progress, hold_out_cameras=tuple(hold_out))
    for r, splits in rep.splits.items():
        for sp, c in splits.items():
            console.print(f"{output}/{r}/{sp}: {c['clips']} clips, {c['frames']} frames")


def _load_scenes(shared_root: Path | None, raws) -> list:
    from .weights import MODELS_DIR
    from .scenes import load_shared_scenes, scene_from_dng

    root = shared_root or MODELS_DIR.parent.parent / "shared" / "data"
    shared = load_shared_scenes(root) if root.is_dir() else []
    scenes = shared + [scene_from_dng(p) for p in raws]
    if not scenes:
        raise RawvidError(root, "no RAW stills found (give --shared or --raw)")
    parts = ([f"{len(shared)} from {root}"] if shared else []) + ([f"{len(raws)} from --raw"] if raws else [])
    console.print(f"{len(scenes)} scene(s): {' and '.join(parts)}")
    return scenes


def _size(size: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {size!r} is not WxH") from None
    return w, h


def _renders(renders: str) -> tuple[str, ...]:
    modes = tuple(r.strip() for r in renders.split(","))
    for r in modes:
        if r not in ("stable", "rvd"):
            raise ValueError(f"unknown render mode {r!r} (stable, rvd)")
    return modes


@dataset.command("scenarios")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Folder to write: OUTPUT/<render>/test/ in the RVD layout.")
@_scene_sources
@click.option("--seed", default=0, show_default=True, type=int, help="The seed of the dataset whose test scenes to use.")
@click.option("--test-fraction", default=0.25, show_default=True, type=click.FloatRange(0, 0.9))
@click.option("--size", default="512x320", show_default=True, help="Clip size WxH in Bayer pixels.")
@click.option("--frames", default=32, show_default=True, type=click.IntRange(2), help="Frames per clip.")
@click.option("--long-frames", default=120, show_default=True, type=click.IntRange(2),
              help="Frames of the 'long' scenario (the RVD benchmark's length).")
@click.option("--per-scenario", default=2, show_default=True, type=click.IntRange(1), help="Clips per scenario.")
@click.option("--scenario", "scenarios", default=None,
              help="Comma-separated subset of: orbit, rotate-zoom, exposure-step, clipped, dark-noisy, long.")
@click.option("--render", "renders", default="stable", show_default=True, help="Comma-separated render modes.")
@click.option("--from-split", "from_split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Over the held-out scenes (test clips) or the training scenes (training data, OUTPUT/<render>/train).")
@handle_errors
def dataset_scenarios(output, shared_root, raws, seed, test_fraction, size, frames, long_frames, per_scenario,
                      scenarios, renders, from_split):
    """Test clips of named hard scenarios over the held-out scenes (large motion, clipping, noise, long)."""
    from .dataset import build_scenarios

    scenes = _load_scenes(shared_root, raws)
    kinds = tuple(k.strip() for k in scenarios.split(",")) if scenarios else None
    with FrameProgress("clips") as progress:
        rep = build_scenarios(output, scenes, seed=seed, frames=frames, long_frames=long_frames, size=_size(size),
                              per_scenario=per_scenario, test_fraction=test_fraction, scenarios=kinds,
                              renders=_renders(renders), progress=progress, from_split=from_split)
    for r, splits in rep.splits.items():
        for sp, c in splits.items():
            console.print(f"{output}/{r}/{sp}: {c['clips']} clips, {c['frames']} frames")
    console.print(f"test scenes: {', '.join(rep.test_scenes)}", highlight=False, soft_wrap=True)


@main.command("export-onnx")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Where to write the graph (default: beside the weights, NAME.onnx, where decode looks).")
@handle_errors
def export_onnx_cmd(model, output):
    """Export weights (a name in models/ or a .safetensors path) to ONNX, for encode and decode
    without PyTorch (--runtime onnxruntime). Needs PyTorch, onnx and onnxscript, once."""
    from .runtime import export_onnx

    with console.status(f"exporting {model} to ONNX"):
        path = export_onnx(model, output)
    console.print(f"wrote {path} (checked against PyTorch)", highlight=False)


@main.command("train")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", default="runs/train", show_default=True, type=click.Path(path_type=Path),
              help="Folder for checkpoints, logs, weights and the model card.")
@click.option("--arch", default="fast-key-g2", show_default=True,
              help="paper, small, fast, tiny, fast-prior, small-prior, paper-prior, fast-key, fast-key-g2 "
                   "(the shipped fagdn-v2), fast-adaptive (or a JSON configuration).")
@click.option("--steps", default=2000, show_default=True, type=click.IntRange(1))
@click.option("--batch", default=4, show_default=True, type=click.IntRange(1))
@click.option("--crop", default=128, show_default=True, type=click.IntRange(32), help="Crop side, half-resolution pixels.")
@click.option("--unroll", default=6, show_default=True, type=click.IntRange(1), help="Frames chained per sample.")
@click.option("--tbptt", default=2, show_default=True, type=click.IntRange(1), help="Backpropagate through this many steps.")
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--lr-step", default=800, show_default=True, type=click.IntRange(1))
@click.option("--lr-gamma", default=0.3, show_default=True, type=float)
@click.option("--ssim-weight", default=1.0, show_default=True, type=float, help="Weight of the SSIM(3x3) loss (paper: 1).")
@click.option("--aux-weight", default=0.5, show_default=True, type=float, help="Weight of the side-output losses (paper: 0.5).")
@click.option("--codec-prob", default=0.7, show_default=True, type=float, help="Share of samples with H.265-degraded sRGB.")
@click.option("--val-every", default=250, show_default=True, type=click.IntRange(1))
@click.option("--val", "val_data", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Validate on these RVD-layout folders instead of scenes held out of DATA (repeatable).")
@click.option("--val-frames", default=24, show_default=True, type=click.IntRange(2),
              help="Frames chained per validation clip (use the test clips' length to see drift).")
@click.option("--save-every", default=50, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the network runs: auto is CUDA when a GPU is available, else the CPU.")
@click.option("--max-clips", type=int, default=None, help="Use only the first N clips of each folder.")
@click.option("--per-frame-prob", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of samples whose global-fit prior is each frame's own map (per-frame calibration).")
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Start from these weights (fine-tuning).")
@click.option("--clipped-weight", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Extra loss weight where the sRGB is clipped (any channel at 250 or more): there the RAW "
                   "must come from the references.")
@click.option("--fresh", is_flag=True, help="Ignore an existing checkpoint instead of resuming from it.")
@handle_errors
def train_cmd(data, output, arch, steps, batch, crop, unroll, tbptt, lr, lr_step, lr_gamma, ssim_weight, aux_weight,
              codec_prob, val_every, val_data, val_frames, save_every, seed, device, max_clips, per_frame_prob, init,
              clipped_weight, fresh):
    """Train FAGDN on RVD-layout folders (resumes from OUTPUT/checkpoint.safetensors)."""
    import os
    import shlex
    import sys as _sys

    from .codec import _select_device
    from .train import TrainOptions, train

    opts = TrainOptions(data=[str(d) for d in data], out=str(output), arch=arch, steps=steps, batch=batch, crop=crop,
                        unroll=unroll, tbptt=tbptt, lr=lr, lr_step=lr_step, lr_gamma=lr_gamma, ssim_weight=ssim_weight,
                        aux_weight=aux_weight, codec_prob=codec_prob, val_every=val_every, save_every=save_every,
                        seed=seed, device=_select_device(device), max_clips=max_clips, resume=not fresh,
                        per_frame_prob=per_frame_prob, init=str(init) if init else None,
                        val_data=[str(v) for v in val_data], val_frames=val_frames, clipped_weight=clipped_weight)
    log_path = Path(output) / "train.log.jsonl"
    Path(output).mkdir(parents=True, exist_ok=True)

    def log(d: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(d) + "\n")
        if d.get("event") == "step":
            console.print(f"step {d['step']}: loss {d['loss']:.3g}, chain PSNR {d['psnr_first']:.2f} -> "
                          f"{d['psnr_last']:.2f} dB, {d['sec_per_step']:.2f} s/step", highlight=False)
        elif d.get("event") == "val":
            console.print(f"[bold]validation[/] step {d['step']}: {d['val_psnr']:.2f} dB vs global-fit "
                          f"{d['val_psnr_global_fit']:.2f} dB ({d['val_gain_db']:+.2f} dB; worst clip "
                          f"{d['val_min_clip_gain_db']:+.2f} dB)", highlight=False)
        else:
            console.print(json.dumps({k: v for k, v in d.items() if k != "options"}), highlight=False)

    cmd = "rawvid train " + " ".join(shlex.quote(a) for a in _sys.argv[2:])
    res = train(opts, log=log, command=cmd)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 wrote the files
        console.print(f"wrote {res.weights} and {res.card} after {res.steps} steps ({res.seconds / 60:.1f} min); "
                      f"for machines without PyTorch: rawvid export-onnx {res.weights}", highlight=False)


def _pilot_line(pilot) -> str | None:
    """What the layer's pilot chose and what it foretold each predictor would cost (None: no pilot,
    or a record that is not one: the manifest is read, not trusted)."""
    if not isinstance(pilot, dict) or not isinstance(pilot.get("chosen"), str):
        return None
    costs = {k: v["bytes"] for k, v in pilot.items()
             if isinstance(v, dict) and isinstance(v.get("bytes"), (int, float)) and not isinstance(v["bytes"], bool)}
    frames = pilot.get("frames")
    line = f"chose {pilot['chosen']} on the first {frames if isinstance(frames, int) else '?'} frames"
    if costs:
        line += " (the layer foretold for the clip: " + ", ".join(f"{k} {_human(int(v))}" for k, v in sorted(costs.items())) + ")"
    ext = pilot.get("extended")
    if isinstance(ext, dict) and isinstance(ext.get("frames"), int):
        line += f"; a close call, coded again on {ext['frames']} frames"
    return line


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest plus sizes as JSON.")
@click.option("--verify", is_flag=True, help="Also check the CRC-32 of every packet of every track "
                                             "(exit 2 naming the damaged frames).")
@handle_errors
def info(path, as_json, verify):
    """Show what an .rvd file holds (checks its version, the manifest's seal and every attachment's SHA-256)."""
    from .checksums import check_tracks
    from .container import RvdFile
    from .manifest import is_number
    from .rawlayer import parse_layer

    rvd = RvdFile(path)
    m, sizes = rvd.manifest, rvd.sizes()
    layer = parse_layer(m, int(m["frame_count"]), path)  # the RAW layer's fields, checked as decode checks them
    check = check_tracks(rvd, layer) if verify else None
    if as_json:
        extra = {"verify": {"tracks_checked": check.checked, "damaged_packets": check.damaged,
                            "damaged_frames": check.frames, "present": check.present}} if check else {}
        out.print_json(json.dumps({**m, "sizes": sizes, **extra}))
        if check and not check.ok:
            _fail(f"{path}: {check.describe()} (CRC-32 mismatch)")
        return
    cam = m.get("camera") or {}
    vid = m.get("video") or {}
    n, fps = m["frame_count"], m.get("fps") or 0
    keys = [k["index"] for k in m.get("keyframes", [])]
    t = Table(title=f"{path.name}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("format", f"rawvid .rvd v{m['format_version']} (written by rawvid {m.get('rawvid_version')})")
    src = m.get("source") or {}
    t.add_row("source", f"{src.get('name', 'unknown')} ({src.get('kind', '?')}, {_human(src.get('bytes') or 0)})")
    t.add_row("camera", " ".join(x for x in (cam.get("model"), cam.get("lens")) if x) or "unknown")
    t.add_row("frames", f"{n} at {fps:.3f} fps ({n / fps if fps else 0:.2f} s)")
    t.add_row("geometry", f"{m['width']}x{m['height']} {m['cfa']} {m['bits']}-bit, black {m['black']}, white {m['white']}")
    lay = m.get("raw_layer")
    if lay:
        keyframes_only = lay.get("keyframes_only") is True
        off = lay.get("target_floor_offset")
        off = f"the noise floor {off:+g} dB, " if is_number(off) else ""
        what = ("FFV1 lossless" if lay.get("lossless") else
                f"lossy keyframes (the paper's mode), x265 at {lay.get('target_psnr')} dB ({off}QP {lay.get('qp')})"
                if keyframes_only else
                f"x265 target {lay.get('target_psnr')} dB ({off}QP {lay.get('qp')}"
                f"{', moved per frame' if lay.get('qp_steered') is True else ''})" if lay.get("target_psnr") else
                f"x265 crf {lay.get('crf')}")
        pred = lay.get("predictor") or {}
        quads = "Hadamard of 2x2 quads" if layer.transform == "hadamard" else "planes as they are"
        t.add_row("RAW layer", f"{what} on the {quads}, predictor {pred.get('mode')} {pred.get('method') or ''}"
                  f"{' ' + pred['model'] if pred.get('model') else ''}; "
                  f"{len(lay.get('intra', []))} intra frame(s), IDR at {', '.join(map(str, lay.get('idr', [])[:10]))}; "
                  f"{sum(1 for sc in lay.get('scales', []) if not sc)} frame(s) "
                  f"{'de-rendered alone' if keyframes_only else 'the prediction alone reaches'} (no picture); "
                  f"{_human(sizes['raw_layer_bytes'])}, {sizes['raw_layer_bits_per_pixel']:.4f} bits/sample "
                  f"(RAW part of the file {sizes['raw_part_bits_per_pixel']:.4f})")
        line = _pilot_line(lay.get("pilot"))
        if line:
            t.add_row("pilot", line)
    noise = m.get("noise_profile")
    if noise:
        fl = m.get("noise_floor_db")
        fl = f"; noise floor {fl:.2f} dB black-subtracted (--target-psnr floor-N)" if is_number(fl) else ""
        t.add_row("noise", f"variance {noise[0]:.3g} x + {noise[1]:.3g} (DNG NoiseProfile, measured on frame 0){fl}"
                  + ("; shadows unclipped at black" if m.get("shadows") == "unclipped" else ""))
    t.add_row("keyframes", f"{len(keys)} RAW ({'first frame only' if not m.get('keyframe_interval') else 'every ' + str(m['keyframe_interval'])}): "
              f"{', '.join(map(str, keys[:10]))}{' ...' if len(keys) > 10 else ''}")
    t.add_row("render", _shown((m.get("render") or {}).get("mode")))
    pilot = vid.get("crf_pilot")
    tried = pilot.get("foretold_bytes") if isinstance(pilot, dict) else None
    tried = sorted(int(k) for k in tried if k.isdigit()) if isinstance(tried, dict) else []
    t.add_row("video", "FFV1 lossless" if vid.get("lossless") else f"{vid.get('codec')} crf {vid.get('crf')} "
              f"{vid.get('preset')} {vid.get('pix_fmt')}" +
              (f" (CRF chosen by the encoder among {', '.join(map(str, tried))})" if tried else ""))
    t.add_row("audio", _shown((m.get("audio") or {}).get("codec")) if m.get("audio") else "none")
    ref = m.get("refine") or {"mode": "off"}
    mode = _shown(ref.get("mode"))
    cal = m.get("calibration") or {}
    cal_mode = _shown(cal.get("mode", "keyframe"))
    if cal_mode == "adaptive" and isinstance(cal.get("changes"), list):
        cal_mode += f" ({len(cal['changes'])} map{'s' if len(cal['changes']) != 1 else ''})"
    t.add_row("side info", f"calibration {cal_mode}, refinement "
              + (f"{mode} ({_shown(ref.get('block'))} px{', with gains' if ref.get('gains') else ''}, for model "
                 f"{_shown(ref.get('model'))})" if mode == "blocks"
                 else mode)
              + (f"; network run in {_shown(m['network_runtime'])}" if m.get("network_runtime") else "")
              + ("; highlights fused from the keyframe" if m.get("highlights") else ""))
    t.add_row("size", f"{_human(sizes['file_bytes'])}: video {_human(sizes['video_bytes'])}, keyframes "
              f"{_human(sizes['keyframe_bytes'])}, audio {_human(sizes['audio_bytes'])}, manifest "
              f"{_human(sizes['manifest_bytes'])}, side info {_human(sizes['side_info_bytes'])}")
    t.add_row("rate", f"{sizes['bits_per_pixel']:.3f} bits/pixel (video {sizes['video_bits_per_pixel']:.3f}, "
              f"keyframes {sizes['keyframe_bits_per_pixel']:.3f})")
    if "ratio_vs_source" in sizes:
        t.add_row("vs source", f"{sizes['ratio_vs_source']:.1f}x smaller")
    if check is not None:
        names = {"video": "sRGB video", "layer": "RAW layer", "audio": "audio"}
        t.add_row("verified", "no track checksums (a format 1 file)" if not check.present else
                  "; ".join(f"{names[k]} {n} packets {'OK' if not check.damaged.get(k) else 'DAMAGED'}"
                            for k, n in check.checked.items()) + "; manifest and attachments OK")
    out.print(t)
    if check is not None and not check.ok:
        _fail(f"{path}: {check.describe()} (CRC-32 mismatch)")


def _shown(v) -> str:
    """A manifest value as table text (whatever its type: the file is not trusted)."""
    return "?" if v is None else str(v)[:80]




if __name__ == "__main__":  # pragma: no cover
    main()
