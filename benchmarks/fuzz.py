"""Mutation fuzzer for rawvid's untrusted inputs: MLV files and .rvd files.

    python benchmarks/fuzz.py --mlv 10000 --rvd 5000 [--seed 0] [--encode-every 25] [--decode-every 10]
                              [--timeout 30] [--memory-gib 2] [--json benchmarks/results/fuzz.json]

Every case mutates a valid seed file written by rawvid's own writers: MLV byte flips, block
size and field edits, truncations, insertions and repeated blocks; .rvd byte flips, EBML
element ID and size edits, truncations, manifest JSON type and value changes (written in
place, with the attachment checksums kept consistent so the schema itself is exercised) and
attachment edits (calibration, refinement, keyframe DNG; checksums fixed up, so the parsers
behind them are reached). Then it runs the real code a user runs on that file:

* MLV: open, read every frame, write the WAV, write a DNG of the first frame and read it
  back; every ``--encode-every``-th case a whole ``encode``.
* .rvd: open (the manifest schema, every attachment's checksum), sizes, every attachment;
  every ``--decode-every``-th case (and every manifest and attachment case) a whole ``decode``.

The cases run in a worker process with its address space limited to its size after start-up
plus ``--memory-gib``, and the parent kills a case that runs longer than ``--timeout`` seconds.
Outcomes: ``accepted`` (ran to the end), ``clean`` (rawvid's own error naming the file),
``unnamed`` (rawvid's error without the file's name), ``crash`` (any other exception, or the
worker died), ``memory`` (MemoryError under the limit) and ``hang``; every failure is listed
with its signature (exception type and the innermost rawvid frame). The last two and
``crash``/``unnamed`` are what must stay at zero.

The mutation and case functions are also what tests/test_fuzz.py drives with hypothesis.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

INTERESTING_U32 = (0, 1, 2, 7, 8, 15, 16, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                   0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING_JSON = (0, -1, 1, 2**31, 2**63, -(2**63), 1e308, -1e308, 0.5, float("nan"), float("inf"), "", "x",
                    "../../etc/passwd", "/tmp/evil.safetensors", None, True, [], {}, [0], {"a": 1}, [[[]]],
                    "\u00e9\u0000")


# --------------------------------------------------------------------------- seeds
def make_mlv_seeds(folder: Path) -> list[Path]:
    """Small valid MLVs: packed 14-bit with audio and every metadata block, LJ92 12-bit in two chunks."""
    from rawvid.meta import Camera, RawInfo
    from rawvid.mlv import AudioFormat, MLVWriter

    folder.mkdir(parents=True, exist_ok=True)
    seeds = []
    for name, bits, lj92, chunk in (("packed14.MLV", 14, False, None), ("lj92_12.MLV", 12, True, 2)):
        black, white = (2048, 15000) if bits == 14 else (256, 3900)
        info = RawInfo(width=64, height=32, bits=bits, black=black, white=white, cfa="RGGB",
                       color_matrix=(0.6722, -0.0635, -0.0963, -0.4287, 1.2460, 0.2028, -0.0908, 0.2162, 0.5668),
                       fps=25.0, camera=Camera(make="Canon", model="Canon EOS 5D Mark III", iso=400,
                                               shutter_us=20000))
        rng = np.random.default_rng(bits)
        fmt = AudioFormat(channels=2, rate=48000, bytes_per_second=192000, block_align=4, bits=16)
        path = folder / name
        with MLVWriter(path, info, lj92=lj92, chunk_frames=chunk, audio=fmt) as w:
            for i in range(3):
                mosaic = rng.integers(black, white, size=(32, 64), dtype=np.uint16)
                w.write_frame(mosaic, number=i)
                w.write_audio(np.zeros(1920 * 2, "<i2").tobytes(), number=i)
        seeds.append(path)
    return seeds


def make_rvd_seeds(folder: Path, mlv: Path) -> list[Path]:
    """Valid .rvd files: keyframes + per-frame calibration + block refinement; and a RAW layer."""
    from rawvid.codec import EncodeOptions, LayerSettings, encode

    seeds = []
    for name, opts in (("side.rvd", EncodeOptions(keyframe_interval=2, calibration="per-frame", refine="blocks")),
                       ("layer.rvd", EncodeOptions(raw_layer=LayerSettings(target_psnr=45.0), refine="off"))):
        path = folder / name
        encode(mlv, path, opts, force=True)
        seeds.append(path)
    return seeds


# --------------------------------------------------------------------------- MLV mutations
def mlv_blocks(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the blocks of a valid MLV chunk."""
    out, off = [], 0
    while off + 8 <= len(data):
        size = struct.unpack_from("<I", data, off + 4)[0]
        if size < 8 or off + size > len(data):
            break
        out.append((off, size))
        off += size
    return out


def mutate_mlv(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of an MLV: (kind, bytes)."""
    buf = bytearray(data)
    blocks = mlv_blocks(data) or [(0, len(data))]
    kind = rng.choice(("flip", "flip", "block_size", "field32", "field16", "truncate", "insert", "repeat",
                       "delete"))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "block_size":
        off, size = rng.choice(blocks)
        new = rng.choice(INTERESTING_U32 + (size - 1, size + 1, size + 8, size * 2, size // 2))
        struct.pack_into("<I", buf, off + 4, new & 0xFFFFFFFF)
    elif kind in ("field32", "field16"):
        off, size = rng.choice(blocks)
        width = 4 if kind == "field32" else 2
        if size > 8 + width:
            at = off + 8 + rng.randrange(size - 8 - width + 1)
            v = rng.choice(INTERESTING_U32 + (rng.getrandbits(32),))
            buf[at : at + width] = (v & 0xFFFFFFFF).to_bytes(4, "little")[:width]
    elif kind == "truncate":
        del buf[rng.randrange(1, len(buf)) :]
    elif kind == "insert":
        at = rng.randrange(len(buf))
        buf[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    elif kind == "repeat":
        off, size = rng.choice(blocks)
        at = rng.choice(blocks)[0]
        buf[at:at] = data[off : off + size]
    else:
        off, size = rng.choice(blocks)
        del buf[off : off + size]
    return kind, bytes(buf)


# --------------------------------------------------------------------------- .rvd mutations
_MASTERS = {0x1A45DFA3, 0x18538067, 0x1F43B675, 0x1941A469, 0x61A7, 0x1654AE6B, 0xAE, 0x114D9B74, 0x4DBB,
            0x1549A966, 0x1254C367, 0x7373, 0x63C0, 0x67C8, 0xA0, 0xE0, 0x1C53BB6B, 0xBB, 0xB7}


def _vint(data: bytes, off: int) -> tuple[int, int] | None:
    if off >= len(data) or data[off] == 0:
        return None
    n = 8 - data[off].bit_length() + 1
    if off + n > len(data):
        return None
    return int.from_bytes(data[off : off + n], "big"), n


def ebml_elements(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[int, int, int]]:
    """(offset, id length, size length) of the EBML elements of a valid file, masters descended."""
    end = len(data) if end is None else end
    out, off = [], start
    while off < end and depth < 8:
        idv = _vint(data, off)
        if idv is None:
            break
        eid, nid = idv
        sz = _vint(data, off + nid)
        if sz is None:
            break
        raw, nsz = sz
        size = raw & ((1 << (7 * nsz)) - 1)
        out.append((off, nid, nsz))
        body = off + nid + nsz
        if size == (1 << (7 * nsz)) - 1:  # unknown size: the rest of the parent
            size = end - body
        if eid in _MASTERS:
            out += ebml_elements(data, body, min(end, body + size), depth + 1)
        off = body + size
    return out


def mutate_rvd_bytes(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A byte or EBML mutation of an .rvd: (kind, bytes)."""
    buf = bytearray(data)
    kind = rng.choice(("flip", "flip", "ebml_id", "ebml_size", "ebml_size", "truncate"))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del buf[rng.randrange(1, len(buf)) :]
    else:
        elements = ebml_elements(data)
        off, nid, nsz = rng.choice(elements)
        if kind == "ebml_id":
            i = off + rng.randrange(nid)
            buf[i] = rng.choice((0x00, 0xFF, 0x80, 0x01, rng.getrandbits(8)))
        else:
            at = off + nid
            choice = rng.randrange(4)
            if choice == 0:
                buf[at] = rng.choice((0x00, 0xFF, 0x01, 0x40))
            elif choice == 1:  # every value bit set: the "unknown size" of this length
                buf[at : at + nsz] = bytes([0xFF >> (nsz - 1)]) + b"\xff" * (nsz - 1)
            else:
                v = int.from_bytes(buf[at : at + nsz], "big") & ((1 << (7 * nsz)) - 1)
                v = max(0, min((1 << (7 * nsz)) - 2, v + rng.choice((-1, 1, -8, 8, v, -v // 2))))
                buf[at : at + nsz] = ((1 << (7 * nsz)) | v).to_bytes(nsz, "big")
    return kind, bytes(buf)


def _manifest_json(data: bytes) -> dict:
    """The manifest of an .rvd held in memory (plain or, format 3 on, zlib)."""
    from rawvid.container import read_manifest_text

    return json.loads(read_manifest_text(data))


def _mutate_json(m, rng: random.Random, depth: int = 0):
    """One change somewhere in a JSON value: delete, rename, retype, extreme value, shorten a list."""
    if isinstance(m, dict) and m and (depth == 0 or rng.random() < 0.6):
        key = rng.choice(sorted(m))
        op = rng.randrange(5)
        if op == 0:
            del m[key]
        elif op == 1:
            m[key + "_"] = m.pop(key)
        elif op in (2, 3) and isinstance(m[key], (dict, list)) and m[key]:
            m[key] = _mutate_json(m[key], rng, depth + 1)
        else:
            m[key] = rng.choice(INTERESTING_JSON)
        return m
    if isinstance(m, list) and m:
        op = rng.randrange(4)
        if op == 0:
            del m[rng.randrange(len(m)) :]
        elif op == 1:
            i = rng.randrange(len(m))
            m[i] = _mutate_json(m[i], rng, depth + 1) if isinstance(m[i], (dict, list)) and m[i] else \
                rng.choice(INTERESTING_JSON)
        else:
            m[rng.randrange(len(m))] = rng.choice(INTERESTING_JSON)
        return m
    return rng.choice(INTERESTING_JSON)


def rewrite_manifest(data: bytes, manifest: dict) -> bytes | None:
    """The .rvd with this manifest written in place (padded), or None when it is longer."""
    from rawvid.checksums import sealed_json
    from rawvid.container import replace_manifest

    try:
        text = sealed_json(manifest)
    except (TypeError, ValueError):
        return None
    return replace_manifest(data, text)


def mutate_manifest(data: bytes, rng: random.Random) -> tuple[str, bytes] | None:
    m = _manifest_json(data)
    for _ in range(rng.randint(1, 3)):
        m = _mutate_json(m, rng)
    out = rewrite_manifest(data, m) if isinstance(m, dict) else None
    return ("manifest", out) if out is not None else None


def mutate_attachment(data: bytes, rng: random.Random) -> tuple[str, bytes] | None:
    """Change bytes of a side attachment (calibration, refinement, keyframe, layer maps) and fix
    its checksum in the manifest, so that the parser behind it is what meets the damage."""
    import hashlib
    import io

    from rawvid.container import MANIFEST_NAME, MANIFEST_Z_NAME, scan

    layout = scan(io.BytesIO(data), "seed")
    atts = [a for a in layout.attachments if a.name not in (MANIFEST_NAME, MANIFEST_Z_NAME) and a.size > 0]
    if not atts:
        return None
    att = rng.choice(atts)
    buf = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        i = att.offset + rng.randrange(att.size)
        buf[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.getrandbits(8)))
    m = _manifest_json(bytes(buf))
    m["attachments"][att.name] = hashlib.sha256(bytes(buf[att.offset : att.offset + att.size])).hexdigest()
    out = rewrite_manifest(bytes(buf), m)
    return (f"attachment:{att.name.split('_')[0].split('.')[0]}", out) if out is not None else None


def mutate_rvd(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    for _ in range(10):
        r = rng.random()
        got = mutate_manifest(data, rng) if r < 0.3 else mutate_attachment(data, rng) if r < 0.45 else \
            mutate_rvd_bytes(data, rng)
        if got is not None:
            return got
    return mutate_rvd_bytes(data, rng)


# --------------------------------------------------------------------------- cases
def run_mlv_case(path: Path, work: Path, encode: bool = False) -> None:
    """What a user does with an MLV: read it all, its audio, a DNG of its first frame; or encode it."""
    import warnings

    from rawvid.dng import read_dng, write_dng
    from rawvid.mlv import MLVReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if encode:
            from rawvid.codec import EncodeOptions, encode as run_encode
            from rawvid.video import VideoSettings

            run_encode(path, work / "e.rvd", EncodeOptions(refine="off", video=VideoSettings.make(preset="ultrafast")),
                       force=True)
            return
        with MLVReader(path) as r:
            first = None
            for fr in r.frames():
                first = fr if first is None else first
            r.write_wav(work / "a.wav")
            if first is not None:
                write_dng(work / "f.dng", first.mosaic, r.info)
                read_dng(work / "f.dng")


def run_rvd_case(path: Path, work: Path, decode: bool = False) -> None:
    """What a user does with an .rvd: info (open, sizes, every attachment), or decode it."""
    import shutil
    import warnings

    from rawvid.container import RvdFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rvd = RvdFile(path)
        rvd.sizes()
        for name in rvd.manifest["attachments"]:
            rvd.attachment(name)
        from click.testing import CliRunner

        from rawvid.cli import main

        for args in (["info", str(path)], ["info", str(path), "--json", "--verify"]):  # the CLI's own rendering
            res = CliRunner().invoke(main, args)
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                raise res.exception
        if decode:
            from rawvid.codec import DecodeOptions, decode as run_decode

            out = work / "frames"
            shutil.rmtree(out, ignore_errors=True)
            run_decode(path, out, DecodeOptions(device="cpu"))


def classify(exc: BaseException | None, path: Path) -> tuple[str, str]:
    """(outcome, signature) of a case."""
    from rawvid.errors import RawvidError

    if exc is None:
        return "accepted", ""
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/rawvid/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else "?"
    if isinstance(exc, RawvidError):
        return ("clean", "") if path.name in str(exc) else ("unnamed", f"{str(exc)[:80]} @ {where}")
    return "crash", f"{type(exc).__name__}: {str(exc)[:80]} @ {where}"


def run_case(kind: str, data: bytes, work: Path, heavy: bool) -> tuple[str, str]:
    """Write the case, run it, classify it (in the calling process)."""
    path = work / ("case.MLV" if kind == "mlv" else "case.rvd")
    for p in work.glob("case.*"):
        p.unlink()
    path.write_bytes(data)
    try:
        (run_mlv_case if kind == "mlv" else run_rvd_case)(path, work, heavy)
    except Exception as exc:  # noqa: BLE001 - classified, not swallowed
        return classify(exc, path)
    return classify(None, path)


# --------------------------------------------------------------------------- worker and parent
def _worker(conn, memory_gib: float) -> None:
    import resource

    import rawvid.codec  # noqa: F401 - everything imported before the limit is set
    import torch  # noqa: F401

    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = vm + int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    work = Path(tempfile.mkdtemp(prefix="rawvid-fuzz-"))
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        kind, data, heavy = msg
        conn.send(run_case(kind, data, work, heavy))


class Runner:
    """A worker process with a memory limit; restarted after a hang or a death."""

    def __init__(self, memory_gib: float, timeout: float):
        self.memory_gib, self.timeout = memory_gib, timeout
        self.proc = None
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.memory_gib), daemon=True)
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")

    def run(self, kind: str, data: bytes, heavy: bool) -> tuple[str, str]:
        self.conn.send((kind, data, heavy))
        if self.conn.poll(self.timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
            self._restart()
            return "crash", "worker died"
        self._restart()
        return "hang", f"over {self.timeout:.0f} s"

    def _restart(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.join(5)
        self._start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(None)
            self.proc.join(5)


def fuzz(n_mlv: int, n_rvd: int, seed: int, encode_every: int, decode_every: int, timeout: float,
         memory_gib: float, log=print) -> dict:
    rng = random.Random(seed)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="rawvid-fuzz-seeds-") as td:
        mlvs = make_mlv_seeds(Path(td) / "mlv")
        rvds = make_rvd_seeds(Path(td), mlvs[0])
        seeds_mlv = [p.read_bytes() for p in mlvs]  # the first chunk of each (the split one loses its .M00)
        seeds_rvd = [p.read_bytes() for p in rvds]
        runner = Runner(memory_gib, timeout)
        t0 = time.perf_counter()
        try:
            for target, n in (("mlv", n_mlv), ("rvd", n_rvd)):
                counts: Counter = Counter()
                by_kind: dict[str, Counter] = {}
                failures: Counter = Counter()
                for i in range(n):
                    if target == "mlv":
                        kind, data = mutate_mlv(rng.choice(seeds_mlv), rng)
                        heavy = encode_every > 0 and i % encode_every == 0
                    else:
                        kind, data = mutate_rvd(rng.choice(seeds_rvd), rng)
                        heavy = kind.startswith(("manifest", "attachment")) or (decode_every > 0 and
                                                                                 i % decode_every == 0)
                    outcome, sig = runner.run(target, data, heavy)
                    counts[outcome] += 1
                    by_kind.setdefault(kind + (" +full" if heavy else ""), Counter())[outcome] += 1
                    if outcome not in ("accepted", "clean"):
                        failures[f"{outcome}: {sig}"] += 1
                    if (i + 1) % 500 == 0:
                        log(f"{target}: {i + 1}/{n} {dict(counts)} ({time.perf_counter() - t0:.0f} s)")
                results[target] = {"cases": n, "outcomes": dict(counts),
                                   "by_mutation": {k: dict(v) for k, v in sorted(by_kind.items())},
                                   "failures": dict(failures.most_common())}
        finally:
            runner.close()
    results["seconds"] = time.perf_counter() - t0
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlv", type=int, default=10000)
    ap.add_argument("--rvd", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encode-every", type=int, default=25)
    ap.add_argument("--decode-every", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--memory-gib", type=float, default=2.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res = fuzz(args.mlv, args.rvd, args.seed, args.encode_every, args.decode_every, args.timeout, args.memory_gib)
    res["command"] = " ".join(sys.argv)
    for target in ("mlv", "rvd"):
        r = res[target]
        print(f"{target}: {r['cases']} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())))
        for sig, n in list(r["failures"].items())[:20]:
            print(f"   {n:5d}  {sig}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    bad = sum(res[t]["outcomes"].get(k, 0) for t in ("mlv", "rvd") for k in ("crash", "unnamed", "memory", "hang"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
