"""Encoding: RAW clip -> .rvd (sRGB video, RAW keyframes or a RAW layer, manifest), streaming and atomic."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import __version__
from .atomic import atomic_path, remove_stale, temp_dir
from .chain import NETWORK_LAYOUT, network_layout, network_method, select_runtime
from .chain import select_device as _select_device
from .checksums import TRACKS_KEY, sealed_json, track_crc_record, track_file_crcs
from .container import (FORMAT_NAME, FORMAT_VERSION, MANIFEST_Z_NAME, MIME_BINARY, MIME_DNG, MIME_ZLIB, RvdFile,
                        encode_flac, mux, pack_manifest, sha256_file)
from .dng import write_dng
from .errors import FormatError, RawvidError
from .highlights import MODE as HIGHLIGHTS
from .manifest import format_version_for, validate as validate_manifest
from .isp import libraw_version, render, render_params
from .meta import CALIBRATIONS, REFINEMENTS
from .weights import DEFAULT_MODEL, missing_weights_note, model_label
from .methods import GlobalFit
from .noise import NoiseModel, measure_clip_noise
from .rawlayer import LayerSettings, resolve_floor_target
from .layer_coder import LAYER_MAPS_NAME, LAYER_NAME
from .sideinfo import chain_pass
from .source import Source, SourceFrame, open_source
from .video import DEFAULT_CRF, VideoSettings, VideoWriter, ffmpeg_version

#: ``progress(done, total, stage)``: frames done in a stage ("choosing the sRGB CRF", "encoding", "refining", "RAW layer").
Progress = Callable[..., None]
#: Sources whose sRGB comes with them (a camera's video, RVD's PNGs) instead of being rendered here.
GIVEN_SRGB = ("video+dng", "rvd-layout")


@dataclass
class EncodeOptions:
    """Encoder settings (the CLI's options)."""

    keyframe_interval: int = 0  # 0: the first frame only (the paper's setting)
    render: str = "stable"  # stable | rvd
    video: VideoSettings = field(default_factory=VideoSettings)
    start: int = 0
    stop: int | None = None
    fps: float | None = None  # override the source frame rate
    #: keyframe | per-frame (store every frame's global map, 230 bytes a frame) | auto: per-frame where it
    #: measurably pays (renderings that move per frame: rvd, given sRGB), keyframe for stable rendering
    calibration: str = "auto"
    #: off | blocks (per 32x32 block, the weight blending the network with global-fit, chosen against the
    #: true RAW by running the decoder's chain: under 1 KiB a frame) | auto: blocks where every frame's RAW
    #: is known and the model's weights exist
    refine: str = "auto"
    model: str | None = None  # the model decode will use (default: models/fagdn-default)
    device: str = "auto"  # where the refinement pass runs the network: auto | cpu | cuda
    runtime: str = "auto"  # what runs the network: auto (PyTorch if installed, else onnxruntime) | torch | onnxruntime
    #: the RAW layer (rawvid.rawlayer): None = the paper's design (sRGB plus lossless RAW keyframes)
    raw_layer: LayerSettings | None = None
    #: with a --target-psnr layer: sRGB CRFs to try on the first frames, keeping the one whose whole
    #: file the pilot foretells smallest (rawvid.srgb_pilot); empty: ``video.crf`` as given; None: as
    #: ``rawvid encode`` (srgb_pilot.CANDIDATE_CRFS where ``video.crf`` is None, see resolve_video)
    srgb_crfs: tuple[int, ...] | None = None
    #: the network's arithmetic (rawvid.chain.network_layout): auto (bfloat16 on a CPU that has it) or
    #: one of rawvid.weights.LAYOUTS, e.g. ``channels_last`` for float32
    layout: str = "auto"


@dataclass
class EncodeResult:
    output: Path
    frames: int
    seconds: float
    sizes: dict
    #: the RAW layer as the encoder measured it: per-frame black-subtracted PSNR of the
    #: reconstruction (what decode rebuilds) and of the prediction alone, passes per frame
    layer: dict | None = None
    notes: list = field(default_factory=list)  # warnings the user should see (a missing model, ...)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def resolve_video(video: VideoSettings, srgb_crfs: tuple[int, ...] | None,
                  layer: LayerSettings | None) -> tuple[VideoSettings, tuple[int, ...]]:
    """The sRGB settings and the CRFs the sRGB pilot tries, for an encode's mode: what ``rawvid encode``
    does, so that the Python API and the command line make the same file from the same options.

    ``video.crf`` None: the paper's mode (lossy keyframes included: the de-rendering is all there is between
    them) codes the sRGB at CRF 16; a --target-psnr layer lets the encoder choose among
    srgb_pilot.CANDIDATE_CRFS (the smallest whole file foretold); the other layers (--raw-crf,
    --lossless-raw) code the preview at srgb_pilot.LAYERED_SRGB_CRF. A CRF given is kept, and
    ``srgb_crfs`` None then means no choice; ``srgb_crfs`` given is tried as given."""
    from .srgb_pilot import CANDIDATE_CRFS, LAYERED_SRGB_CRF

    if video.lossless:
        return video, ()
    paper = layer is None or layer.keyframes_only
    target = not paper and layer.codec == "x265" and layer.crf is None  # a target in dB or from the floor
    if video.crf is None:
        video = dataclasses.replace(video, crf=DEFAULT_CRF if paper else LAYERED_SRGB_CRF)
        if srgb_crfs is None:
            srgb_crfs = CANDIDATE_CRFS if target else ()
    return video, tuple(srgb_crfs or ())


def keyframe_indices(count: int, interval: int) -> list[int]:
    """Frames stored as RAW: frame 0, then every ``interval`` frames (0 = frame 0 only)."""
    if count <= 0:
        return []
    if interval < 0:
        raise ValueError("keyframe interval must be >= 0")
    return list(range(0, count, interval)) if interval else [0]


def parse_range(text: str | None) -> tuple[int, int | None]:
    """``START:END`` (END exclusive, either may be empty) -> (start, stop)."""
    if not text:
        return 0, None
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"frame range {text!r} is not START:END")
    try:
        start = int(parts[0]) if parts[0] else 0
        stop = int(parts[1]) if parts[1] else None
    except ValueError:
        raise ValueError(f"frame range {text!r} is not START:END with integers") from None
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"frame range {text!r} is empty or negative")
    return start, stop


#: frames rendered ahead of the video encoder, each in its own thread
RENDER_AHEAD = 2


def _given_rgb(fr: SourceFrame) -> np.ndarray:
    return fr.rgb  # type: ignore[return-value]


def _rendered(src: Source, frames: Iterator[SourceFrame], mode: str) -> Iterator[tuple[SourceFrame, np.ndarray]]:
    """sRGB for every frame: the source's own (camera video, RVD PNGs) or rendered with LibRaw.

    Rendering runs RENDER_AHEAD frames ahead in as many worker threads (LibRaw releases the GIL),
    in order."""
    with ThreadPoolExecutor(max_workers=RENDER_AHEAD) as pool:
        pending: collections.deque = collections.deque()
        for fr in frames:
            if fr.rgb is not None:
                fut = pool.submit(_given_rgb, fr)
            else:
                fut = pool.submit(render, fr.mosaic, src.info, mode)
            if len(pending) == RENDER_AHEAD:
                done, f = pending.popleft()
                yield done, f.result()
            pending.append((fr, fut))
        while pending:
            done, f = pending.popleft()
            yield done, f.result()


def resolve_calibration(mode: str, src: Source, layered: bool = False) -> str:
    """The calibration an encode uses: ``auto`` is adaptive where every frame's RAW is known.

    Adaptive stores a frame's own global map (230 bytes) where it predicts the frame better than
    the map in force by more than ``sideinfo.ADAPT_GAIN_DB``. Measured (the scenario clips, default
    mode, 32 frames): 41.50 dB with the keyframe's map, 42.29 with a map every frame, 42.32 adaptive
    with 2.75 maps a clip (exposure steps, zooms); per-frame gains 8.5 dB on the example clip with
    rvd rendering (LibRaw's auto-brightness), where adaptive stores a map nearly every frame.
    It needs the true RAW of every frame, so a video+DNG input keeps keyframe calibration.
    With a RAW layer ``auto`` is keyframe: the layer corrects what a stale map misses, and the maps
    cost more than they save (bench --rd, test clips at 6 and 3 dB under the noise floor: the RAW
    part 0.0247 -> 0.0127 and 0.1031 -> 0.0922 bits per sample without per-frame maps, same PSNR;
    benchmarks/layer_calibration.py, adaptive maps on the exposure-step and zooming scenario
    clips: files 2-15% larger at 3 and 6 dB under the floor, the frames 0-0.35 dB higher).
    """
    if mode not in CALIBRATIONS:
        raise RawvidError(None, f"unknown calibration {mode!r} (auto, keyframe, per-frame or adaptive)")
    if not src.has_raw:
        if mode in ("per-frame", "adaptive"):
            raise RawvidError(src.path, f"{mode} calibration needs the RAW of every frame")
        return "keyframe"
    if mode == "auto":
        return "keyframe" if layered else "adaptive"
    return mode


def resolve_refinement(mode: str, src: Source, model: str) -> str:
    """The refinement an encode uses: ``auto`` is blocks when every frame's RAW and the model's weights exist.

    ``blocks``: per-block weights and gains (``weights``: the weights alone, as before session 16)."""
    from .weights import resolve_model

    if mode not in REFINEMENTS:
        raise RawvidError(None, f"unknown refinement {mode!r} (auto, off, blocks or weights)")
    if mode == "off":
        return "off"
    if not src.has_raw:
        if mode != "auto":
            raise RawvidError(src.path, "block refinement needs the RAW of every frame")
        return "off"
    try:
        resolve_model(model)
    except RawvidError:
        if mode != "auto":
            raise
        return "off"
    return "blocks" if mode == "auto" else mode


def build_manifest(src: Source, opts: EncodeOptions, frame_count: int, timestamps: list[int],
                   numbers: list[int], keyframes: list[int], attachments: dict[str, str],
                   audio: dict | None) -> dict:
    info = src.info.to_dict()
    given = src.kind in GIVEN_SRGB
    render_mode = {"video+dng": "camera", "rvd-layout": "given"}.get(src.kind, opts.render)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "rawvid_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {
            "kind": src.kind, "name": src.path.name, "bytes": src.size_bytes,
            "frames_in_source": src.frame_count, "first_frame": opts.start, "warnings": src.warnings,
        },
        "frame_count": frame_count,
        **info,
        "timestamps_us": timestamps,
        "frame_numbers": numbers,
        "keyframe_interval": opts.keyframe_interval,
        "keyframes": [{"index": k, "file": f"key_{k:06d}.dng"} for k in keyframes],
        "render": {"mode": render_mode,
                   "params": None if given else render_params(opts.render),
                   "libraw": libraw_version()},
        "video": {**opts.video.to_dict(), "ffmpeg": ffmpeg_version()},
        "audio": audio,
        "model": model_label(opts.model or DEFAULT_MODEL),
        "attachments": attachments,
    }


def encode(input: str | os.PathLike | Source | None, output: str | os.PathLike, options: EncodeOptions | None = None,
           *, video: str | os.PathLike | None = None, raw: str | os.PathLike | None = None,
           force: bool = False, progress: Progress | None = None) -> EncodeResult:
    """Encode an MLV, a DNG folder, or ``video`` + ``raw`` into one .rvd file.

    The output appears only when complete (temp file, then rename); an existing
    output is refused unless ``force``.
    """
    opts = options or EncodeOptions()
    output = Path(output)
    if output.exists() and not force:
        raise RawvidError(output, "output exists (use --force to overwrite)")
    if output.is_dir():
        raise RawvidError(output, "output is a folder, expected a file name")
    if not output.parent.is_dir():
        raise RawvidError(output, "output folder does not exist")
    t0 = time.perf_counter()
    # a Source handed in belongs to the caller, who closes it
    src_cm = contextlib.nullcontext(input) if isinstance(input, Source) else \
        open_source(input, video=video, raw=raw, fps=opts.fps)
    with src_cm as src:
        if src.kind not in GIVEN_SRGB:
            render_params(opts.render)  # validate before any work
        layer = opts.raw_layer
        if layer is not None and not src.has_raw:
            raise RawvidError(src.path, "a RAW layer needs the RAW of every frame; --video/--raw inputs have one "
                              "RAW frame (encode an MLV or a DNG folder)")
        if layer is not None and src.info.bits > 16:
            raise RawvidError(src.path, f"a RAW layer codes up to 16-bit data, not {src.info.bits}-bit")
        # lossy keyframes code nothing between the keyframes: calibration and block gains stay as without a layer
        keyframes_only = layer is not None and layer.keyframes_only
        clip_noise = None  # (noise model, noise floor) of the first frame, measured once (measure_clip_noise)
        if layer is not None and layer.floor_offset is not None and opts.start < src.frame_count:
            # --target-psnr floor-3, --keyframe-psnr auto: measured on the first frame, as the noise profile
            first = next(iter(src.frames(opts.start, opts.start + 1)), None)
            if first is None or first.mosaic is None:
                raise RawvidError(src.path, "a target relative to the noise floor needs the first frame's RAW")
            clip_noise = measure_clip_noise(first.mosaic, src.info)
            layer = resolve_floor_target(layer, clip_noise[1])
        video, srgb_crfs = resolve_video(opts.video, opts.srgb_crfs, layer)
        opts = dataclasses.replace(opts, video=video, srgb_crfs=srgb_crfs)
        calibration = resolve_calibration(opts.calibration, src, layer is not None and not keyframes_only)
        model = opts.model or DEFAULT_MODEL
        refinement = resolve_refinement(opts.refine, src, model)
        blocks = refinement != "off"
        # the RAW layer's predictor is the decoder's chain: the network where its weights exist
        net = blocks or (layer is not None and _has_weights(model))
        notes = []
        if src.has_raw and opts.refine != "off" and not _has_weights(model):
            notes.append(missing_weights_note(model, "encoding without block refinement"))
        runtime = select_runtime(opts.runtime) if net else None  # the decoder will use the same, when it can
        device = _select_device(opts.device, runtime) if net else "cpu"  # where the encoder's chain pass runs
        start = opts.start
        stop = src.frame_count if opts.stop is None else min(opts.stop, src.frame_count)
        if opts.stop is not None and opts.stop > src.frame_count:
            notes.append(f"--frames asks for frames up to {opts.stop}; the clip has {src.frame_count}: "
                         f"encoding {start}:{src.frame_count}")
        if start >= stop:
            raise RawvidError(src.path, f"frame range {start}:{opts.stop} selects no frame "
                              f"(the clip has {src.frame_count})")
        if not src.has_raw and (start != 0 or opts.keyframe_interval):
            raise RawvidError(src.path, "with --video/--raw only frame 0 has RAW: no --frames start "
                              "or --keyframe-interval")
        count = stop - start
        keys = set(keyframe_indices(count, opts.keyframe_interval))
        info = src.info
        stale = remove_stale(output.parent)  # what a killed run left beside its output
        if stale:
            notes.append(f"removed {len(stale)} temp file(s) left by an interrupted rawvid run: "
                         f"{', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''}")
        with temp_dir(output.parent) as td, \
                atomic_path(output) as tmp_out:
            tdir = Path(td)
            # the chain's predictor: the network, or global-fit for a layer without weights
            layout = network_layout(device, runtime, opts.layout) if net else NETWORK_LAYOUT
            method = network_method(model, info.width, info.height, device, layout=layout, runtime=runtime) if net else \
                GlobalFit() if layer is not None or calibration == "adaptive" else None
            if method is not None:  # as the decoder will run it (the file records it below)
                method.highlights = HIGHLIGHTS
            srgb_pilot = reuse = None
            if layer is not None and layer.target_psnr is not None and opts.srgb_crfs and not opts.video.lossless \
                    and not keyframes_only:
                opts, srgb_pilot, clip_noise, reuse = _choose_srgb_crf(src, opts, start, stop, keys, method, layer,
                                                                       calibration, blocks, tdir, progress, clip_noise)
            timestamps: list[int] = []
            numbers: list[int] = []
            attachments: dict[str, str] = {}
            t_first: int | None = None
            with VideoWriter(tdir / "video.mkv", info.width, info.height, info.fps, opts.video) as writer:
                for fr, rgb in _rendered(src, src.frames(start, stop), opts.render):
                    i = fr.index - start
                    if fr.mosaic is not None and clip_noise is None:  # the first frame's
                        clip_noise = measure_clip_noise(fr.mosaic, info)
                    if fr.mosaic is not None and i in keys and layer is None:
                        name = f"key_{i:06d}.dng"
                        write_dng(tdir / name, fr.mosaic, info, compress=True, frame_index=i)
                        attachments[name] = sha256_file(tdir / name)
                    writer.write(rgb)
                    t_first = fr.timestamp_us if t_first is None else t_first
                    timestamps.append(fr.timestamp_us - t_first)
                    numbers.append(fr.number)
                    if progress:
                        progress(i + 1, count, "encoding")
            if len(timestamps) != count:
                raise RawvidError(src.path, f"expected {count} frames, read {len(timestamps)}")
            if any(b < a for a, b in zip(timestamps, timestamps[1:])) or min(timestamps) < 0:
                notes.append(f"warning: {src.path}: the frame timestamps run backwards (a damaged recording); "
                             "the .rvd records frame index / fps instead")
                timestamps = [int(round(k * 1e6 / info.fps)) for k in range(count)]
            noise, floor = clip_noise or (None, None)
            calib = refine = st = None
            if calibration != "keyframe" or blocks or layer is not None:
                calib, refine, st = chain_pass(src, tdir / "video.mkv", start, stop, keys, tdir, calibration=calibration,
                                               method=method, blocks=blocks,
                                               gains=refinement == "blocks" and (layer is None or keyframes_only),
                                               layer=layer, model=model, progress=progress, unclip=noise, reuse=reuse)
            side = [d["file"] for d in (calib, refine) if d]
            if st is not None and st.predictor == "chain":
                side.append(LAYER_MAPS_NAME)
            for name in side:
                attachments[name] = sha256_file(tdir / name)
            audio = None
            wav, flac = tdir / "audio.wav", tdir / "audio.mka"
            if start == 0 and stop == src.frame_count and src.write_wav(wav):
                audio = {"codec": "flac", "source": "MLV WAVI/AUDF"}
                try:
                    encode_flac(wav, flac)
                except FormatError as exc:  # sound ffmpeg cannot encode: the pictures are still good
                    notes.append(f"warning: {src.path}: audio dropped, it cannot be encoded "
                                 f"({str(exc).rsplit(': ', 1)[-1]})")
                    audio = None
            tracks = {"video": tdir / "video.mkv", **({"layer": tdir / LAYER_NAME} if st is not None else {}),
                      **({"audio": flac} if audio else {})}
            keylist = sorted(keys) if layer is None else []
            manifest = build_manifest(src, opts, count, timestamps, numbers, keylist, attachments, audio)
            if srgb_pilot is not None:
                manifest["video"]["crf_pilot"] = srgb_pilot
            manifest[TRACKS_KEY] = track_crc_record(track_file_crcs(tracks))
            manifest["noise_profile"] = None if noise is None else [noise.scale, noise.offset]
            if floor is not None and math.isfinite(floor):  # what --target-psnr floor-N is relative to
                manifest["noise_floor_db"] = round(floor, 3)
            if noise is not None:  # predictions are the shadows' mean, under black where it lies there
                manifest["shadows"] = "unclipped"
            manifest["highlights"] = HIGHLIGHTS  # the decoder's network fuses the keyframe into clipped regions
            manifest["calibration"] = calib or {"mode": "keyframe"}
            manifest["refine"] = refine or {"mode": "off"}
            manifest["network_layout"] = layout
            if runtime is not None:
                manifest["network_runtime"] = runtime
            if st is not None:
                predictor = {"mode": st.predictor, "method": None, "model": None}
                if st.predictor == "chain":
                    predictor.update({"method": "network", "model": model_label(model)} if net else
                                     {"method": "global-fit"})
                manifest["raw_layer"] = st.to_dict(predictor, LAYER_NAME)
            manifest["format_version"] = format_version_for(manifest)  # older readers open what they can
            try:  # never write an .rvd that info and decode would refuse
                validate_manifest(json.loads(json.dumps(manifest)), output, 1 << 62)  # as a reader will see it
            except FormatError as exc:
                raise RawvidError(src.path, f"the source's metadata cannot be stored ({exc.message})") from None
            # sealed (the last change to the manifest), then compressed
            (tdir / MANIFEST_Z_NAME).write_bytes(pack_manifest(sealed_json(manifest)))
            files = [(tdir / MANIFEST_Z_NAME, MIME_ZLIB)] + [(tdir / f"key_{k:06d}.dng", MIME_DNG) for k in keylist]
            files += [(tdir / name, MIME_BINARY) for name in side]
            mux(tdir / "video.mkv", tmp_out, files, audio=flac if audio else None,
                title=f"rawvid {src.path.name}", layer=tdir / LAYER_NAME if st is not None else None)
    seconds = time.perf_counter() - t0
    return EncodeResult(output, count, seconds, RvdFile(output).sizes(), None if st is None else st.stats(), notes)


def _choose_srgb_crf(src: Source, opts: EncodeOptions, start: int, stop: int, keys: set[int], method,
                     layer: LayerSettings, calibration: str, blocks: bool, work: Path,
                     progress: Progress | None = None, clip_noise: tuple[NoiseModel, float] | None = None
                     ) -> tuple[EncodeOptions, dict, tuple[NoiseModel, float], dict | None]:
    """Options with the sRGB CRF the joint pilot chose among ``opts.srgb_crfs``, its report for the
    manifest, the clip's noise model and floor (``clip_noise``, or measured on the first frame as the
    main pass would), and what the
    main pass's pilot reuses: the direct-coding pilot it ran (it does not depend on the sRGB) and the
    half-steps its searches found at the chosen CRF (where the main pass's searches start)."""
    from .layer_pilot import PILOT_FRAMES
    from .srgb_pilot import SRGB_PILOT_FRAMES, choose_srgb_crf

    n = min(max(PILOT_FRAMES, SRGB_PILOT_FRAMES), stop - start)
    firsts = list(_rendered(src, src.frames(start, start + n), opts.render))
    clip_noise = clip_noise or measure_clip_noise(firsts[0][0].mosaic, src.info)
    method.unclip = clip_noise[0]  # as the main pass will run it
    crf, report = choose_srgb_crf(src, [rgb for _, rgb in firsts], opts.video, start, stop, keys, method, layer,
                                  calibration=calibration, blocks=blocks, candidates=tuple(opts.srgb_crfs), work=work,
                                  progress=progress)
    # a candidate's ``transform: none``: the chain's residual cost less as it is there (srgb_pilot)
    compact = {"frames": report["frames"], "chosen": crf,
               "foretold_bytes": {k: {"srgb": v["srgb_bytes"], "layer": v["layer_bytes"], "predictor": v["predictor"],
                                      **({"transform": "none"} if v["chain_transform"] == "none" else {})}
                                  for k, v in report["candidates"].items()}}
    return dataclasses.replace(opts, video=dataclasses.replace(opts.video, crf=crf)), compact, clip_noise, \
        report["reuse"]


def _has_weights(model: str) -> bool:
    from .weights import resolve_model

    try:
        resolve_model(model)
        return True
    except RawvidError:
        return False


def read_rvd(path: str | os.PathLike) -> RvdFile:
    """Open and verify an .rvd file (manifest version and every attachment checksum)."""
    return RvdFile(path)
