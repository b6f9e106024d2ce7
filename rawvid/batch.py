"""``rawvid batch``: every clip under some folders, encoded (or decoded, or benched) into an output
tree that mirrors the input tree, on a local process pool or as Ray tasks.

One clip is one task. A failing clip is reported and the others go on; a clip whose output is
complete is skipped (outputs are atomic, so "exists" means "complete"; a decode folder is
complete when its marker names the clip and every frame is there), so an interrupted batch is
resumed by running the same command again. The report (JSON) is rewritten atomically after
every clip.

Ray is optional (``pip install 'rawvid[cluster]'``). Ray runs tasks on other machines, so the
inputs and the output folder must be on a file system every node shares: :func:`check_shared_fs`
proves it on every node before the first clip starts.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .errors import RawvidError

if TYPE_CHECKING:  # the codec loads PyTorch: imported where a clip runs, not to plan a batch
    from .decoder import DecodeOptions
    from .encoder import EncodeOptions

MODES = ("encode", "decode", "bench")
REPORT_NAME = "rawvid-batch.json"
PROBE_NAME = ".rawvid-batch-probe"


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Job:
    """One clip to process: where it is, where its output goes, and whether to redo it."""

    mode: str
    input: Path
    output: Path
    name: str  # the clip's path relative to its input root (tables, report)
    force: bool = False  # the output exists but is older than the input: rewrite it
    video: str | None = None  # a clip of an RVD-layout folder (``input``): its video name


def _is_clip(p: Path, mode: str) -> bool:
    if mode == "decode":
        return p.is_file() and p.suffix.lower() == ".rvd"
    if p.is_file():
        return p.suffix.lower() == ".mlv"  # split chunks (.M00, .M01, ...) belong to their .MLV
    return p.is_dir() and any(q.suffix.lower() == ".dng" and q.is_file() for q in p.iterdir())


def _layout_videos(p: Path, mode: str) -> list[tuple[Path, str]] | None:
    """The clips of an RVD-layout folder (encode, bench), or None when ``p`` is not one."""
    from .dataset import RVDLayout

    if mode == "decode" or not RVDLayout.is_layout(p):
        return None
    return [(p, v.name) for v in RVDLayout.open(p).videos]


def find_clips(root: Path, mode: str, skip: Path | None = None) -> list[tuple[Path, str | None]]:
    """Clips under ``root`` in name order, as (path, video): MLV files, DNG folders and the videos
    of RVD-layout folders (decode: .rvd files). Hidden entries and the ``skip`` folder (the output,
    when it lies inside an input) are left out."""
    if _is_clip(root, mode):
        return [(root, None)]
    if not root.is_dir():
        return []
    layout = _layout_videos(root, mode)
    if layout is not None:
        return layout
    found: list[tuple[Path, str | None]] = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or (skip is not None and p.resolve() == skip):
            continue
        if _is_clip(p, mode):
            found.append((p, None))
        elif p.is_dir():
            found.extend(find_clips(p, mode, skip))
    return found


def output_path(mode: str, clip: Path, rel: Path, out: Path, video: str | None = None) -> Path:
    """Where a clip's output goes under ``out``: ``rel`` with the mode's suffix (an RVD-layout
    video: ``rel/VIDEO.rvd``)."""
    if video is not None:
        return out / rel / (f"{video}.rvd" if mode == "encode" else f"{video}.bench.json")
    if mode == "encode":  # clip.MLV -> clip.rvd; a DNG folder shot01/ -> shot01.rvd
        return out / (rel.with_suffix(".rvd") if clip.is_file() else rel.with_name(rel.name + ".rvd"))
    if mode == "decode":  # clip.rvd -> clip/ (a DNG sequence)
        return out / rel.with_suffix("")
    return out / rel.with_name(rel.name + ".bench.json")


def _source_files(clip: Path) -> list[Path]:
    """A clip's files: an MLV and its split chunks (those present), or a DNG folder's frames."""
    if clip.is_dir():
        return [q for q in clip.iterdir() if q.suffix.lower() == ".dng"]
    return [clip] + sorted(clip.parent.glob(clip.stem + ".[Mm][0-9][0-9]"))


def _newest_mtime(clip: Path, video: str | None = None) -> float:
    """Newest modification time of a clip's files (an RVD-layout video: its index and frame folders)."""
    if video is not None:
        parts = [clip / "data.json", clip / "RAW" / video, clip / "sRGB" / video]
        return max(p.stat().st_mtime for p in parts if p.exists())
    return max((q.stat().st_mtime for q in _source_files(clip)), default=0.0)


def decode_complete(rvd: Path, folder: Path) -> bool:
    """True when ``folder`` holds every frame of ``rvd``, written by decode for this very clip."""
    from .container import RvdFile
    from .decoder import DECODE_MARKER, clip_name, frame_name, manifest_digest

    marker = folder / DECODE_MARKER
    if not marker.is_file():
        return False
    try:
        mine = json.loads(marker.read_text()).get("manifest_sha256")
        m = RvdFile(rvd).manifest
    except (OSError, ValueError, RawvidError):
        return False
    if mine != manifest_digest(m):
        return False
    clip = clip_name(m)
    return all((folder / frame_name(clip, i)).is_file() for i in range(int(m["frame_count"])))


def is_complete(job: Job) -> bool:
    """Whether a job's output is already complete (and not older than its input)."""
    if job.mode == "decode":
        return decode_complete(job.input, job.output)
    return job.output.is_file() and job.output.stat().st_mtime >= _newest_mtime(job.input, job.video)


def plan(paths: Iterable[str | os.PathLike], out: str | os.PathLike, mode: str = "encode",
         redo: bool = False) -> tuple[list[Job], list[Job]]:
    """The jobs of a batch: (to run, already complete). One input root mirrors into ``out``
    directly; several mirror into ``out/<root name>/``. ``redo`` runs every clip again."""
    if mode not in MODES:
        raise ValueError(f"unknown batch mode {mode!r} ({', '.join(MODES)})")
    out = Path(out).resolve()
    roots = [Path(p).resolve() for p in paths]
    if not roots:
        raise RawvidError(None, "no input: give one or more folders (or clips)")
    for r in roots:
        if not r.exists():
            raise RawvidError(r, "no such file or folder")
    names = [r.name if not _is_clip(r, mode) else r.parent.name for r in roots]  # (a layout folder is a root)
    if len(roots) > 1 and len(set(names)) < len(names):
        raise RawvidError(None, f"input folders share a name ({', '.join(names)}): their outputs would mix; "
                          "give folders with distinct names")
    todo: list[Job] = []
    done: list[Job] = []
    seen: dict[Path, Path] = {}
    for root, name in zip(roots, names):
        base = out if len(roots) == 1 else out / name
        clips = find_clips(root, mode, skip=out)
        if not clips:
            kinds = ".rvd files" if mode == "decode" else "MLV files, DNG folders or RVD-layout folders"
            raise RawvidError(root, f"no clips here ({kinds})")
        for clip, video in clips:
            if video is not None:  # an RVD-layout folder: its own name (or "." when it is the root)
                rel = Path(".") if clip == root else clip.relative_to(root)
            else:
                rel = Path(clip.name) if clip == root else clip.relative_to(root)
            target = output_path(mode, clip, rel, base, video)
            if target in seen:
                raise RawvidError(clip, f"its output {target} is also {seen[target]}'s")
            seen[target] = clip
            shown = rel / video if video is not None else rel
            job = Job(mode, clip, target, str(Path(name) / shown if len(roots) > 1 else shown), video=video)
            if not redo and is_complete(job):
                done.append(job)
            else:
                stale = mode != "decode" and target.exists()
                todo.append(Job(mode, clip, target, job.name, force=redo or stale, video=video))
    return todo, done


# --------------------------------------------------------------------------- one clip
@dataclass
class BatchSettings:
    """What every clip of a batch is given: the encode or decode options (one per mode)."""

    mode: str = "encode"
    encode: EncodeOptions | None = None  # encode, and how a bench encodes
    decode: DecodeOptions | None = None  # decode, and the method a bench scores
    bench_frames: int | None = None  # bench: score at most this many frames per clip
    threads: int = 0  # CPU threads per clip (0: all cores)


@dataclass
class ClipReport:
    """One clip's line in the report."""

    clip: str
    input: str
    output: str
    status: str  # done | skipped | failed
    frames: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bits_per_pixel: float | None = None  # of the .rvd (encode, bench)
    psnr_black: float | None = None  # mean black-subtracted PSNR where the truth exists
    seconds: float = 0.0
    error: str | None = None
    notes: list = field(default_factory=list)
    worker: str = ""

    @classmethod
    def of(cls, job: Job, status: str, **fields) -> "ClipReport":
        """The line of ``job``, with these figures."""
        return cls(job.name, str(job.input), str(job.output), status, **fields)


def _failed(job: Job, why: str) -> dict:
    """The line of a clip whose worker died (killed, out of memory) before it could report."""
    return asdict(ClipReport.of(job, "failed", error=f"{job.input}: {why}"))


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def _layout_video(clip: Path, name: str):
    """(layout, video) of one clip of an RVD-layout folder."""
    from .dataset import RVDLayout

    layout = RVDLayout.open(clip)
    video = next((v for v in layout.videos if v.name == name), None)
    if video is None:
        raise RawvidError(clip, f"no video {name!r} in data.json")
    return layout, video


def _clip_bytes(clip: Path, video: str | None = None) -> int:
    if video is not None:
        layout, v = _layout_video(clip, video)
        return layout.size_bytes(v)
    return sum(q.stat().st_size for q in _source_files(clip))


def _encode(job: Job, s: BatchSettings, rep: ClipReport) -> None:
    from .encoder import EncodeOptions, encode

    job.output.parent.mkdir(parents=True, exist_ok=True)
    if job.video is not None:  # a clip of an RVD-layout folder: its RAW frames with the sRGB it gives
        from .source import rvd_video_source

        with rvd_video_source(*_layout_video(job.input, job.video)) as src:
            res = encode(src, job.output, s.encode or EncodeOptions(), force=job.force)
    else:
        res = encode(job.input, job.output, s.encode or EncodeOptions(), force=job.force)
    rep.frames, rep.notes = res.frames, list(res.notes)
    rep.bytes_out, rep.bits_per_pixel = res.sizes["file_bytes"], res.sizes["bits_per_pixel"]
    if res.layer:  # the RAW layer's reconstruction, measured by the encoder against the source
        from .bench import _mean

        rep.psnr_black = _mean(res.layer["psnr_black"])


def _decode(job: Job, s: BatchSettings, rep: ClipReport) -> None:
    from dataclasses import replace

    from .decoder import DecodeOptions, decode

    opts = replace(s.decode or DecodeOptions(), resume=True)  # a folder left by an interrupted run continues
    res = decode(job.input, job.output, opts)
    rep.frames, rep.notes = res.frames, list(res.notes)
    rep.bytes_out = _tree_bytes(job.output)


def _bench(job: Job, s: BatchSettings, rep: ClipReport) -> None:
    from .atomic import atomic_write
    from .bench import MethodSpec, Setting, run_bench
    from .decoder import DecodeOptions
    from .encoder import EncodeOptions, _has_weights
    from .weights import DEFAULT_MODEL

    dec = s.decode or DecodeOptions()
    enc = s.encode or EncodeOptions()
    method = dec.method
    if method == "auto":
        method = "network" if _has_weights(dec.model or DEFAULT_MODEL) else "global-fit"
    spec = MethodSpec(method, (dec.model or DEFAULT_MODEL) if method == "network" else None)
    setting = Setting(enc.video, enc.keyframe_interval, enc.render, enc.calibration, enc.refine)
    results = run_bench([job.input], [spec], [setting], max_frames=s.bench_frames, device=dec.device,
                        only=None if job.video is None else {f"{job.input.name}/{job.video}"})
    job.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(job.output) as f:
        f.write(json.dumps(results, indent=1, default=float).encode())
    run = results["runs"][0]
    rep.frames = run["frames"]
    rep.bytes_out = run["rate"]["rvd_bytes"]
    rep.bits_per_pixel = run["rate"]["bits_per_pixel"]
    rep.psnr_black = run["psnr_black"]


def run_job(job: Job, settings: BatchSettings) -> dict:
    """Process one clip (in whichever process or Ray worker runs it); never raises for a bad
    clip: the error goes into the report, so one clip cannot stop the batch."""
    import warnings

    if settings.threads:  # this clip's share of the cores (decode and the encoder's network pass)
        os.environ["RAWVID_THREADS"] = str(settings.threads)
        try:
            import torch
        except ImportError:  # ONNX Runtime reads RAWVID_THREADS
            pass
        else:
            torch.set_num_threads(settings.threads)
    rep = ClipReport.of(job, "done", worker=f"{socket.gethostname()}:{os.getpid()}")
    t0 = time.perf_counter()
    try:
        rep.bytes_in = job.input.stat().st_size if job.mode == "decode" else _clip_bytes(job.input, job.video)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            {"encode": _encode, "decode": _decode, "bench": _bench}[job.mode](job, settings, rep)
        from .errors import RawvidWarning

        rep.notes += [str(w.message) for w in caught if issubclass(w.category, RawvidWarning)]
    except RawvidError as exc:
        rep.status, rep.error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure is this clip's, reported with its type
        rep.status, rep.error = "failed", f"{job.input}: {type(exc).__name__}: {exc}"
    rep.seconds = time.perf_counter() - t0
    return asdict(rep)


def skipped_report(job: Job, previous: dict[str, dict]) -> dict:
    """A complete clip's line: its figures from the last report when it has them."""
    old = previous.get(str(job.output))
    if old and old.get("status") in ("done", "skipped"):
        return {**old, "status": "skipped"}
    size = _tree_bytes(job.output) if job.output.is_dir() else job.output.stat().st_size
    return asdict(ClipReport.of(job, "skipped", bytes_out=size))


# --------------------------------------------------------------------------- where clips run
@dataclass
class Executor:
    """Where the clips run: ``processes`` (a local pool; one worker runs in this process) or ``ray``."""

    kind: str = "processes"
    workers: int = 1  # clips at once on this machine (a local pool, or a local Ray instance)
    address: str | None = None  # ray: join this cluster (else RAY_ADDRESS, else a local instance)
    cpus_per_clip: float = 1.0
    gpus_per_clip: float = 0.0
    memory_per_clip: int | None = None  # bytes, declared to Ray's scheduler


def _pool_results(jobs: list[Job], settings: BatchSettings, workers: int) -> Iterator[dict]:
    if workers <= 1:
        for job in jobs:
            yield run_job(job, settings)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: the parent may hold threads (PyTorch, rich) that a fork would copy mid-state
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job, settings): job for job in jobs}
        try:
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                    yield _failed(futures[fut], f"worker died: {type(exc).__name__}: {exc}")
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray_init(ex: Executor) -> None:
    import logging

    import ray

    address = ex.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    else:  # a local instance sized to the workers asked for; a small object store (clips never pass through it)
        ray.init(address="local", num_cpus=max(1, int(ex.workers * ex.cpus_per_clip + 0.999)),
                 num_gpus=int(ex.gpus_per_clip * ex.workers + 0.999) if ex.gpus_per_clip else 0,
                 object_store_memory=128 * 2**20, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)


def _probe(paths: list[str], token_file: str, token: str) -> dict:
    """On one node: can it read every input, and does it see the driver's token in the output folder?"""
    problems = []
    for p in paths:
        if not os.path.exists(p):
            problems.append(f"{p}: not found")
    try:
        with open(token_file) as f:
            if f.read() != token:
                problems.append(f"{token_file}: holds another batch's token")
    except OSError as exc:
        problems.append(f"{token_file}: {exc.strerror or exc}")
    return {"node": socket.gethostname(), "problems": problems}


def check_shared_fs(roots: list[Path], out: Path) -> list[str]:
    """Run a probe on every alive Ray node; returns the nodes' problems (empty: all share the files)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .atomic import atomic_write

    token = secrets.token_hex(16)
    token_file = out / PROBE_NAME
    with atomic_write(token_file) as f:
        f.write(token.encode())
    try:
        probe = ray.remote(_probe)
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote([str(r) for r in roots], str(token_file), token)
                for n in ray.nodes() if n.get("Alive")]
        return [f"node {r['node']}: {p}" for r in ray.get(refs) for p in r["problems"]]
    finally:
        with contextlib.suppress(OSError):
            token_file.unlink()


@contextlib.contextmanager
def ray_session(ex: Executor, roots: list[Path], out: Path) -> Iterator[None]:
    """Ray started (or joined), the shared file system proven on every node; shut down after."""
    import ray

    _ray_init(ex)
    try:
        problems = check_shared_fs(roots, out)
        if problems:
            raise RawvidError(out, "inputs and output must be on a file system every Ray node shares; "
                              + "; ".join(problems[:3]))
        yield
    finally:
        ray.shutdown()


def _ray_results(jobs: list[Job], settings: BatchSettings, ex: Executor) -> Iterator[dict]:
    """One Ray task per clip with the resources it declares; results as they finish."""
    import ray

    opts: dict = {"num_cpus": ex.cpus_per_clip, "num_gpus": ex.gpus_per_clip, "max_retries": 0}
    if ex.memory_per_clip:
        opts["memory"] = ex.memory_per_clip
    task = ray.remote(run_job).options(**opts)
    pending = {task.remote(job, settings): job for job in jobs}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task's worker died (killed, out of memory)
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    yield _failed(job, f"Ray task failed: {type(exc).__name__}: {first}")
    except BaseException:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise


# --------------------------------------------------------------------------- the batch
@dataclass
class BatchResult:
    report: dict
    path: Path

    @property
    def clips(self) -> list[dict]:
        return self.report["clips"]


def _totals(clips: list[dict], wall: float, startup: float) -> dict:
    ran = [c for c in clips if c["status"] == "done"]
    frames = sum(c["frames"] for c in ran)
    return {"clips": len(clips), "done": len(ran), "skipped": sum(c["status"] == "skipped" for c in clips),
            "failed": sum(c["status"] == "failed" for c in clips), "frames": frames,
            "bytes_in": sum(c["bytes_in"] for c in ran), "bytes_out": sum(c["bytes_out"] for c in ran),
            "startup_seconds": startup, "wall_seconds": wall, "clips_per_minute": 60 * len(ran) / wall if wall > 0 else None,
            "frames_per_second": frames / wall if wall > 0 else None}


def _load_previous(path: Path) -> dict[str, dict]:
    try:
        old = json.loads(path.read_text())
        return {c["output"]: c for c in old.get("clips", []) if isinstance(c, dict) and "output" in c}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def run_batch(paths: Iterable[str | os.PathLike], out: str | os.PathLike, settings: BatchSettings | None = None,
              executor: Executor | None = None, *, report: str | os.PathLike | None = None, redo: bool = False,
              on_result: Callable[[dict, int, int], None] | None = None) -> BatchResult:
    """Process every clip under ``paths`` into ``out``; returns (and writes) the report.

    ``on_result(clip_report, finished, total)`` is called as each clip finishes (for a progress bar)."""
    from .atomic import atomic_write

    settings = settings or BatchSettings()
    ex = executor or Executor()
    paths = [Path(p) for p in paths]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RawvidError(out, "output exists and is not a folder")
    todo, done = plan(paths, out, settings.mode, redo)
    out.mkdir(parents=True, exist_ok=True)
    report_path = Path(report) if report else out / REPORT_NAME
    previous = _load_previous(report_path)
    clips = [skipped_report(j, previous) for j in done]
    head = {"rawvid_batch": 1, "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": sys.argv, "mode": settings.mode, "inputs": [str(p) for p in paths], "output": str(out),
            "executor": asdict(ex), "machine": {"host": socket.gethostname(), "cpu_count": os.cpu_count()}}

    startup = 0.0

    def write(wall: float) -> dict:
        rep = {**head, "totals": _totals(clips, wall, startup), "clips": sorted(clips, key=lambda c: c["clip"])}
        with atomic_write(report_path) as f:
            f.write(json.dumps(rep, indent=1).encode())
        return rep

    total = len(todo) + len(done)
    for n, c in enumerate(clips):
        if on_result:
            on_result(c, n + 1, total)
    if ex.kind == "ray" and todo:
        if not ray_available():
            raise RawvidError(None, "--ray needs Ray: pip install 'rawvid[cluster]' (or run without --ray: "
                              "a local process pool)")
        session = ray_session(ex, [p.resolve() for p in paths], out.resolve())
    elif ex.kind in ("ray", "processes"):
        session = contextlib.nullcontext()
    else:
        raise ValueError(f"unknown executor {ex.kind!r} (processes, ray)")
    t_start = time.perf_counter()
    with session:
        startup = time.perf_counter() - t_start  # Ray's start (or join) and the file-system probe
        t0 = time.perf_counter()
        results = _ray_results(todo, settings, ex) if ex.kind == "ray" else _pool_results(todo, settings, ex.workers)
        try:
            for r in results:
                clips.append(r)
                write(time.perf_counter() - t0)
                if on_result:
                    on_result(r, len(clips), total)
        finally:  # an interrupted batch still leaves the report of what finished
            rep = write(time.perf_counter() - t0)
    return BatchResult(rep, report_path)
