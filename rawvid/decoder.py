"""Decoding: .rvd -> a DNG sequence, streaming, resumable, byte-identical whether resumed or not."""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .highlights import MODE as HIGHLIGHTS
from .chain import layer_frame, network_method, predict_frame, select_runtime
from .chain import select_device as _select_device
from .container import RvdFile, sha256_file
from .dng import write_dng
from .errors import FormatError, RawvidError
from .weights import DEFAULT_MODEL
from .pipeline import ReadAhead, WriteBehind, cpu_threads
from .layer_coder import LAYER_MAPS_NAME
from .sideinfo import CALIBRATION_NAME, REFINE_NAME

#: ``progress(done, total)``
Progress = Callable[..., None]

DECODE_MARKER = ".rawvid-decode.json"


@dataclass
class DecodeOptions:
    """Decoder settings (the CLI's options)."""

    method: str = "auto"  # auto | network | global-fit
    model: str | None = None  # weights name or path; default: the one the manifest names
    start: int = 0
    stop: int | None = None
    compress: bool = False  # lossless-JPEG DNGs
    device: str = "auto"  # auto | cpu | cuda
    tile: int | None = None  # network tile size in half-resolution pixels (None: automatic)
    resume: bool = False
    force: bool = False
    salvage: bool = False  # a damaged track: write the frames decoded before the damage instead of refusing
    runtime: str = "auto"  # the network's runtime: auto (the file's, else what is installed) | torch | onnxruntime


@dataclass
class DecodeResult:
    output: Path
    frames: int  # frames written by this run
    seconds: float
    method: str
    device: str
    timings: dict
    notes: list[str] = field(default_factory=list)
    clip: str = "frame"  # the prefix of the frames' names: ``frame_name(result.clip, i)``

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def info_from_manifest(m: dict):
    """The RawInfo recorded in a manifest."""
    from .meta import RawInfo

    keys = ("width", "height", "bits", "black", "white", "cfa", "color_matrix", "calibration_illuminant",
            "as_shot_neutral", "fps", "camera", "noise_profile", "color_matrix2", "calibration_illuminant2")
    return RawInfo.from_dict({k: m[k] for k in keys if k in m})


def clip_name(manifest: dict) -> str:
    """The clip name that prefixes decoded frames: the source's name without its extension.

    Only letters, digits, ``-`` and ``_`` are kept (at most 64), so a hostile manifest cannot
    name a path; ``frame`` when nothing is left (CinemaDNG readers group ``NAME_NNNNNN.dng``).
    """
    src = manifest.get("source")
    name = src.get("name") if isinstance(src, dict) and isinstance(src.get("name"), str) else ""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem).strip("_")[:64]
    return safe or "frame"


def frame_name(clip: str, index: int) -> str:
    """Output DNG name of a frame: the clip name and the zero-padded index (``clip_000123.dng``)."""
    return f"{clip}_{index:06d}.dng"


def _make_method(opts: DecodeOptions, manifest: dict, device: str, notes: list[str], path=None,
                 runtime: str = "torch"):
    """Build the reconstruction method; ``auto`` is the network when its weights exist."""
    from .methods import GlobalFit, Warp
    from .weights import DEFAULT_MODEL, LAYOUTS, missing_weights_note, resolve_model

    method = opts.method
    name = opts.model or manifest.get("model") or DEFAULT_MODEL
    if method == "auto":
        try:
            resolve_model(name)
            method = "network"
        except RawvidError:
            method = "global-fit"
            notes.append(missing_weights_note(name, "decoding with global-fit"))
    if method == "global-fit":
        return GlobalFit()
    if method == "warp":
        return Warp()
    if method == "network":
        layout = manifest.get("network_layout", "contiguous")  # files from before it was recorded: contiguous
        if layout not in LAYOUTS:
            raise FormatError(path, f"unknown network_layout {layout!r} in the manifest")
        return network_method(name, manifest["width"], manifest["height"], device, opts.tile, layout, runtime)
    raise RawvidError(None, f"unknown method {method!r} (auto, network, global-fit or warp)")


#: names decode gives frames (any clip's, and the unprefixed ``000123.dng`` of earlier rawvid versions)
_FRAME_FILE = re.compile(r"(?:[A-Za-z0-9_-]+_)?\d{6,}\.dng")


def manifest_digest(m: dict) -> str:
    """SHA-256 of a manifest (keys sorted): what identifies a clip in a decode folder's marker."""
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()


def _prepare_output(out: Path, digest: str, opts: DecodeOptions, rvd_name: str, clip: str) -> int | None:
    """Check the output folder; returns the last complete frame index when resuming."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / DECODE_MARKER
    existing = sorted(p for p in out.iterdir() if p.suffix.lower() == ".dng")
    mine = None
    if marker.is_file():
        try:
            mine = json.loads(marker.read_text()).get("manifest_sha256") == digest
        except (json.JSONDecodeError, OSError):
            mine = False
    if existing and not opts.force:
        if not mine:
            raise RawvidError(out, "output folder holds another clip's frames (use --force to write there anyway)")
        if not opts.resume:
            raise RawvidError(out, "output folder already holds this clip's frames (use --resume or --force)")
    if existing and opts.force and not (opts.resume and mine):
        # --force starts afresh: frames of another clip (or of an earlier run) must not pass for this
        # run's when it is resumed; only files named as decode names its frames are removed
        for p in existing:
            if _FRAME_FILE.fullmatch(p.name):
                p.unlink()
        existing = []
    from .atomic import atomic_write

    with atomic_write(marker) as f:
        f.write(json.dumps({"manifest_sha256": digest, "rvd": rvd_name}).encode())
    if opts.resume and mine:
        mine_re = re.compile(re.escape(clip) + r"_(\d{6,})\.dng")
        done = [int(g.group(1)) for p in existing if (g := mine_re.fullmatch(p.name))]
        return max(done) if done else None
    return None


def _checked_stop(rvd: RvdFile, layer, opts: DecodeOptions, stop: int, notes: list[str]) -> int:
    """Check every packet's CRC-32 before decoding; a damaged track is refused, or with ``salvage``
    the decode stops before the first frame the damage reaches. Damaged audio is only a note
    (DNGs carry no audio)."""
    from .checksums import check_tracks

    check = check_tracks(rvd, layer)
    if check.ok:
        return stop
    what = check.describe()
    if not check.damaged.get("video") and not check.damaged.get("layer"):
        notes.append(f"warning: {what} (CRC-32 mismatch); the DNGs carry no audio and are not affected")
        return stop
    clean = min(check.clean_frames.get(t, stop) for t in ("video", "layer") if check.damaged.get(t))
    if not opts.salvage:
        raise FormatError(rvd.path, f"{what} (CRC-32 mismatch); decode --salvage writes the {clean} frame(s) "
                          "decoded before the damage")
    if clean <= opts.start:
        raise FormatError(rvd.path, f"{what}: no frame from {opts.start} on decodes before the damage")
    notes.append(f"warning: {what}: --salvage writes frames {opts.start}:{min(stop, clean)} only")
    return min(stop, clean)


def _load_calibration(rvd: RvdFile, count: int, restarts: set[int]):
    """The map each frame is predicted with, stored by per-frame or adaptive calibration.

    None for keyframe calibration; otherwise a list with, per frame, the GlobalMap to calibrate
    with, or None where the last keyframe's map is in force (adaptive: before a frame's first
    change, and from each ``restarts`` frame, where the chain restarts from a RAW keyframe or an
    intra frame of the RAW layer, to the next change)."""
    from .methods import GlobalMap

    c = rvd.manifest.get("calibration") or {}
    mode = c.get("mode", "keyframe")
    if mode == "keyframe":
        return None
    data = rvd.attachment(c.get("file", CALIBRATION_NAME))
    n, k = c.get("values_per_frame", 0), c.get("knots", 0)  # integers: the manifest schema checked them
    rows = count if mode == "per-frame" else len(c["changes"])  # the schema checked the changes too
    if n <= 0 or len(data) != 2 * n * rows or n != 3 * k + 16:
        raise RawvidError(rvd.path, "calibration attachment does not match the manifest")
    arr = np.frombuffer(data, dtype="<f2").reshape(rows, n).astype(np.float64)
    maps = [GlobalMap.from_list(row, k) for row in arr]
    if mode == "per-frame":
        return maps
    changes = dict(zip(c["changes"], maps))
    out, in_force = [], None
    for i in range(count):
        in_force = changes.get(i, in_force)
        out.append(in_force)
        if i in restarts:
            in_force = None
    return out


def _load_refinement(rvd: RvdFile, count: int, method, model: str, notes: list[str]) -> np.ndarray | None:
    """Block weights stored by the encoder's refinement (None when off, or not for this method/model)."""
    from .weights import resolve_model
    from .refine import BLOCK, GAINS, LEVELS, grid_shape, unpack

    r = rvd.manifest.get("refine") or {}
    if r.get("mode") != "blocks":
        return None
    if method.name != "network":
        return None  # the weights blend the network with global-fit; other methods do not use them
    if r.get("model_sha256") != sha256_file(resolve_model(model)):
        notes.append(f"block refinement was made for model {r.get('model')!r}, not {model!r}: not applied")
        return None
    grid = grid_shape(int(rvd.manifest["height"]) // 2, int(rvd.manifest["width"]) // 2)
    try:
        ok = (r.get("block") == 2 * BLOCK and [float(v) for v in r.get("levels", [])] == list(LEVELS)
              and list(r.get("grid", [])) == list(grid) and r.get("frames") == count
              and (r.get("gains") is None or [float(v) for v in r["gains"]] == list(GAINS)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise RawvidError(rvd.path, "block refinement in the manifest does not match the clip or this rawvid version")
    try:
        return unpack(rvd.attachment(r.get("file", REFINE_NAME)), count, grid, len(LEVELS),
                      None if r.get("gains") is None else len(GAINS))
    except ValueError as e:
        raise RawvidError(rvd.path, str(e)) from None


def _layer_method(opts: DecodeOptions, m: dict, notes: list[str]) -> DecodeOptions:
    """A RAW layer was coded against one predictor: decode with exactly that one (checked by parse_layer)."""
    import dataclasses

    pred = m["raw_layer"]["predictor"]
    want = pred.get("method") or "global-fit"  # direct: no prediction, the method only idles
    from .weights import model_label

    model = pred.get("model") if want == "network" else None
    if model and opts.model and model_label(opts.model) == model:
        model = opts.model  # the user's own --model (a path, say) for the weights the file names
    if pred["mode"] == "chain" and (opts.method not in ("auto", want) or (opts.model and opts.model != model)):
        notes.append(f"the RAW layer was coded against {want}{' (' + model + ')' if model else ''}: decoded with it")
    return dataclasses.replace(opts, method=want, model=model)


def decode(rvd_path: str | os.PathLike, output: str | os.PathLike, options: DecodeOptions | None = None, *,
           progress: Progress | None = None) -> DecodeResult:
    """Rebuild a DNG sequence from an .rvd: keyframes exactly, other frames chained by the method."""
    from .bayer import normalise, raw_planes, srgb_half, unpack
    from .dng import read_dng, read_dng_bytes
    from .rawlayer import crc as _crc
    from .video import VideoReader

    opts = options or DecodeOptions()
    t_start = time.perf_counter()
    rvd = RvdFile(rvd_path)
    m = rvd.manifest
    info = info_from_manifest(m)
    count = int(m["frame_count"])
    stop = count if opts.stop is None else min(opts.stop, count)
    if opts.start >= stop:
        raise RawvidError(rvd_path, f"frame range {opts.start}:{opts.stop} selects no frame (the clip has {count})")
    from .methods import CURVE_KNOTS
    from .rawlayer import parse_layer

    layer = parse_layer(m, count, rvd_path)
    if layer is not None and layer.predictor == "chain":
        layer.load_maps(rvd.attachment(LAYER_MAPS_NAME), 3 * CURVE_KNOTS + 16, rvd_path)
    notes: list[str] = []
    stop = _checked_stop(rvd, layer, opts, stop, notes)
    keyframes = {int(k["index"]): k["file"] for k in m.get("keyframes", [])}
    if layer is not None:
        keyframes = {k: None for k in layer.idr}  # intra frames of the RAW layer, no DNGs
    if 0 not in keyframes:
        raise RawvidError(rvd_path, "the manifest lists no keyframe at frame 0")
    runtime = select_runtime(opts.runtime, m.get("network_runtime"))
    device = _select_device(opts.device, runtime)
    if opts.stop is not None and opts.stop > count:
        notes.append(f"--frames asks for frames up to {opts.stop}; the clip has {count}: decoding {opts.start}:{count}")
    if device == "cpu" and runtime == "torch":
        import torch

        torch.set_num_threads(cpu_threads())
    if layer is not None:
        opts = _layer_method(opts, m, notes)
    method = _make_method(opts, m, device, notes, rvd_path, runtime)
    if method.name == "network" and m.get("network_runtime", runtime) != runtime:
        notes.append(f"the file was coded with the network in {m['network_runtime']}, decoded in {runtime}: "
                     "predictions differ by float rounding")
    if m.get("shadows") == "unclipped":  # as the encoder predicted (files from before: clipped at black)
        from .noise import NoiseModel

        method.unclip = NoiseModel(*m["noise_profile"])
    if m.get("highlights") == HIGHLIGHTS:  # files from before it: the network's clipped regions as predicted
        method.highlights = HIGHLIGHTS
    out = Path(output)
    digest = manifest_digest(m)  # identifies the clip
    timings = method.timings
    # everything the file holds is checked before the output folder is touched
    restarts = set(keyframes) | (set(layer.intra) if layer is not None and layer.predictor == "chain" else set())
    calib = _load_calibration(rvd, count, restarts)
    refine = _load_refinement(rvd, count, method, opts.model or m.get("model") or DEFAULT_MODEL, notes)
    clip = clip_name(m)
    last_done = _prepare_output(out, digest, opts, Path(rvd_path).name, clip)
    from .atomic import remove_stale

    stale = remove_stale(out)  # the half-written frame of a killed run
    if stale:
        notes.append(f"removed {len(stale)} temp file(s) left by an interrupted rawvid run")
    first_write = opts.start if last_done is None else max(opts.start, last_done + 1)
    key_from = max(k for k in keyframes if k <= first_write)
    written = 0
    prev_raw = prev_srgb = None
    total = stop - first_write
    if total <= 0:
        return DecodeResult(out, 0, time.perf_counter() - t_start, method.name, device, vars(timings), notes, clip)
    t = time.perf_counter()
    reader = VideoReader(rvd.path, info.width, info.height)
    ahead = ReadAhead(iter(reader), srgb_half, start=key_from)  # video decoded while the network runs
    writer = WriteBehind(lambda path, mosaic, index: write_dng(path, mosaic, info, compress=opts.compress,
                                                               frame_index=index), timings=timings)
    finished = False
    lreader = None
    if layer is not None:
        from .rawlayer import LayerReader

        lreader = LayerReader(rvd.path, info.width, info.height, layer.codec, layer.gop)
    try:
        for i in range(stop):
            item = ahead.next()
            if item is None:
                raise RawvidError(rvd_path, f"video stream ends at frame {i}, the manifest says {count}")
            if i < key_from:
                if lreader is not None:
                    lreader.skip(layer.passes[i], i)
                continue
            srgb = item[1]
            timings.add("video", time.perf_counter() - t)
            t = time.perf_counter()
            if layer is not None:
                if last_done is not None and i <= last_done:
                    # resuming: the layer's pictures still feed its decoder; the chain restarts from the DNGs
                    lreader.skip(layer.passes[i], i, decode=True)
                    mosaic = raw = None
                    if i == last_done or i in layer.intra:
                        mosaic, _ = read_dng(out / frame_name(clip, i))
                        raw = raw_planes(mosaic, info)
                        if i in layer.intra and layer.predictor == "chain":
                            method.keyframe(raw, srgb)
                        elif calib is not None and calib[i] is not None:  # the map the uninterrupted run held
                            method.calibrate(calib[i])
                else:
                    planes = layer_frame(method, layer, lreader, i, prev_raw, prev_srgb, srgb, info,
                                          None if calib is None else calib[i], None if refine is None else refine[i])
                    if _crc(planes) != layer.crcs[i]:
                        if layer.lossless:
                            raise RawvidError(rvd_path, f"frame {i} does not match the encoder's reconstruction: "
                                              "lossless decoding needs the encoder's rawvid version and device")
                        if not any("CRC" in n for n in notes):
                            notes.append(f"frame {i} differs from the encoder's reconstruction (CRC): another "
                                         "device or version predicts slightly differently; the RAW layer keeps "
                                         "the difference small")
                    raw = normalise(planes, info.black, info.white)
                    if i in layer.intra and layer.predictor == "chain":
                        method.keyframe(raw, srgb)
                    mosaic = unpack(planes, info.cfa)
            elif i in keyframes:
                mosaic, _ = read_dng_bytes(rvd.attachment(keyframes[i]), f"{rvd.path}: keyframe {keyframes[i]}")
                if mosaic.shape != (info.height, info.width):
                    raise FormatError(rvd.path, f"keyframe {keyframes[i]} is {mosaic.shape[1]}x{mosaic.shape[0]}, "
                                      f"the clip {info.width}x{info.height}")
                raw = raw_planes(mosaic, info)
                method.keyframe(raw, srgb)
            elif last_done is not None and i <= last_done:
                # resuming: frames up to the last complete one are on disk; the chain restarts from it
                mosaic = None
                if i == last_done:
                    mosaic, _ = read_dng(out / frame_name(clip, i))
                    if calib is not None and calib[i] is not None:  # the map the uninterrupted run held
                        method.calibrate(calib[i])
                raw = None if mosaic is None else raw_planes(mosaic, info)
            else:
                planes, raw, _ = predict_frame(method, prev_raw, prev_srgb, srgb, info,
                                               None if calib is None else calib[i],
                                               None if refine is None else refine[i])
                mosaic = unpack(planes, info.cfa)  # the chain continues from exactly what is written
            if i >= first_write:
                writer.submit(out / frame_name(clip, i), mosaic, i)  # written in order, behind
                written += 1
                if progress:
                    progress(i + 1 - first_write, total)
            prev_raw, prev_srgb = raw, srgb
            t = time.perf_counter()
        finished = True
    finally:
        reader.close()
        ahead.close()
        if lreader is not None:
            lreader.close()
        try:
            writer.close()  # the frames already computed are written, even when stopping on an error
        except BaseException:
            if finished:
                raise
    return DecodeResult(out, written, time.perf_counter() - t_start, method.name, device, vars(timings), notes, clip)
