"""The .rvd container: a Matroska file any player plays, with rawvid's data as attachments.

Streams: the sRGB video (and the source's audio, as FLAC, when it has any).
Attachments: the manifest (clip metadata, keyframe list, settings, checksums; since format 3
``manifest.json.zlib``, before it ``manifest.json``) and each RAW keyframe as a lossless DNG.
ffmpeg writes the file; reading uses a small EBML parser of our own that checks every element size against its parent
and the file, and never uses an attachment's stored name as a path.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import FormatError, UnsupportedError
from .manifest_zdict import ZDICT, ZDICT_ID
from .manifest_zdict6 import ZDICT6, ZDICT6_ID
from .video import ffmpeg_exe

FORMAT_NAME = "rawvid"
#: 2: the manifest is sealed (manifest_sha256) and the tracks' packets carry CRC-32s (tracks.crc32.json)
#: 3: the manifest is zlib-compressed (manifest.json.zlib) and holds the CRC-32s itself (track_crc32).
#: Together they were most of a short clip's RAW part at the lowest targets (a 16-frame 512x320 test
#: clip: 3.4 KB of manifest and 0.4 KB of CRCs beside a 0.6 KB layer); compressed, 1.9 KB.
#: 4: the manifest is deflated against a preset dictionary (rawvid.manifest_zdict, RFC 1950 FDICT): what every
#: manifest says alike (keys, codec names, x265's options, the residual mapping) is no longer stored; the same
#: clip's manifest 1.9 -> 0.6 KB.
#: 5: adaptive calibration (the manifest's calibration.changes: the frames that store their own map).
#: 6: the RAW layer codes the Hadamard transform of each 2x2 quad (raw_layer.transform, rawvid.rawlayer.analyse).
#: A file is written at the lowest version that describes it (rawvid.manifest.format_version_for):
#: without adaptive calibration, 4, which rawvid from session 14 on reads.
FORMAT_VERSION = 6
MANIFEST_NAME = "manifest.json"  # formats 1 and 2
MANIFEST_Z_NAME = "manifest.json.zlib"  # format 3 on
MIME_DNG = "image/x-adobe-dng"
MIME_JSON = "application/json"
MIME_ZLIB = "application/zlib"
MIME_BINARY = "application/octet-stream"  # side information: calibration, refinement
MAX_MANIFEST_BYTES = 64 << 20
#: the manifest's preset dictionaries by Adler-32 (format 4 on); one per format, never changed
ZDICTS = {ZDICT_ID: ZDICT, ZDICT6_ID: ZDICT6}
LAYER_TITLE = "rawvid RAW layer"  # the residual to the de-rendered prediction

# Matroska element IDs (with their length-marker bits, as written in the file)
EBML = 0x1A45DFA3
SEGMENT = 0x18538067
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_TYPE = 0x83
CODEC_ID = 0x86
CLUSTER = 0x1F43B675
CLUSTER_TIMECODE = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
ATTACHMENTS = 0x1941A469
ATTACHED_FILE = 0x61A7
FILE_NAME = 0x466E
FILE_MIME = 0x4660
FILE_DATA = 0x465C
UNKNOWN_SIZE = -1


# --------------------------------------------------------------------------- EBML reading
def _read_vint(f: BinaryIO, keep_marker: bool) -> tuple[int, int] | None:
    """Read an EBML variable-length integer: (value, length) or None at end of file."""
    first = f.read(1)
    if not first:
        return None
    b0 = first[0]
    if b0 == 0:
        raise ValueError("invalid EBML integer (more than 8 bytes)")
    length = 8 - b0.bit_length() + 1
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = b0 if keep_marker else b0 & ((1 << (8 - length)) - 1)
    for byte in rest:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return UNKNOWN_SIZE, length
    return value, length


def _element(f: BinaryIO, end: int, path: str) -> tuple[int, int, int] | None:
    """Read one element header at the current position: (id, data offset, data size)."""
    pos = f.tell()
    if pos >= end:
        return None
    try:
        eid = _read_vint(f, keep_marker=True)
        size = _read_vint(f, keep_marker=False) if eid else None
    except ValueError as exc:  # every parse error names the file and where
        raise FormatError(path, f"{exc} in the Matroska element at offset {pos}") from None
    if eid is None or size is None:
        raise FormatError(path, f"truncated Matroska element at offset {pos}")
    data = f.tell()
    sz = size[0]
    if sz == UNKNOWN_SIZE:
        sz = end - data
    if data + sz > end:
        raise FormatError(path, f"Matroska element 0x{eid[0]:X} at offset {pos} overruns its parent")
    return eid[0], data, sz


def _children(f: BinaryIO, start: int, size: int, path: str):
    f.seek(start)
    end = start + size
    while True:
        el = _element(f, end, path)
        if el is None:
            return
        yield el
        f.seek(el[1] + el[2])


def _uint(f: BinaryIO, off: int, size: int) -> int:
    f.seek(off)
    return int.from_bytes(f.read(min(size, 8)), "big")


@dataclass
class Attachment:
    name: str
    mime: str
    offset: int
    size: int


@dataclass
class RvdLayout:
    """What the Matroska structure holds: attachments and bytes per stream."""

    attachments: list[Attachment] = field(default_factory=list)
    track_types: dict[int, int] = field(default_factory=dict)  # track number -> 1 video, 2 audio
    track_codecs: dict[int, str] = field(default_factory=dict)
    track_bytes: dict[int, int] = field(default_factory=dict)
    #: track number -> its blocks in file (decode) order: (frame data offset, size, timecode)
    blocks: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)

    def stream_bytes(self, kind: int) -> int:
        return sum(b for t, b in self.track_bytes.items() if self.track_types.get(t) == kind)


def _block_header(f: BinaryIO, off: int, size: int, path: str) -> tuple[int, int, int]:
    """A (Simple)Block's track number, relative timecode and header length (track, int16, flags)."""
    f.seek(off)
    try:
        v = _read_vint(f, keep_marker=False)
    except ValueError:
        v = None
    if v is None or v[1] + 3 > size:
        raise FormatError(path, f"corrupt Matroska block at offset {off}")
    rel = int.from_bytes(f.read(2), "big", signed=True)
    return v[0], rel, v[1] + 3


def _add_block(lay: RvdLayout, f: BinaryIO, off: int, size: int, cluster_time: int, path: str) -> None:
    track, rel, head = _block_header(f, off, size, path)
    lay.track_bytes[track] = lay.track_bytes.get(track, 0) + size
    lay.blocks.setdefault(track, []).append((off + head, size - head, cluster_time + rel))


def scan(f: BinaryIO, path: str) -> RvdLayout:
    """Walk the Matroska file: EBML header, Segment, then Tracks, Clusters, Attachments."""
    f.seek(0, os.SEEK_END)
    file_size = f.tell()
    f.seek(0)
    if f.read(4) != EBML.to_bytes(4, "big"):
        raise FormatError(path, "not an .rvd file (not a Matroska file)")
    f.seek(0)
    head = _element(f, file_size, path)
    if head is None or head[0] != EBML:
        raise FormatError(path, "not an .rvd file (not a Matroska file)")
    f.seek(head[1] + head[2])
    seg = _element(f, file_size, path)
    if seg is None or seg[0] != SEGMENT:
        raise FormatError(path, "not an .rvd file (no Matroska segment)")
    lay = RvdLayout()
    for eid, off, size in _children(f, seg[1], seg[2], path):
        if eid == TRACKS:
            for tid, toff, tsize in _children(f, off, size, path):
                if tid != TRACK_ENTRY:
                    continue
                num = kind = 0
                codec = ""
                for cid, coff, csize in _children(f, toff, tsize, path):
                    if cid == TRACK_NUMBER:
                        num = _uint(f, coff, csize)
                    elif cid == TRACK_TYPE:
                        kind = _uint(f, coff, csize)
                    elif cid == CODEC_ID:
                        f.seek(coff)
                        codec = f.read(min(csize, 64)).decode("ascii", "replace").rstrip("\0")
                lay.track_types[num] = kind
                lay.track_codecs[num] = codec
        elif eid == CLUSTER:
            cluster_time = 0
            for cid, coff, csize in _children(f, off, size, path):
                if cid == CLUSTER_TIMECODE:
                    cluster_time = _uint(f, coff, csize)
                elif cid == SIMPLE_BLOCK:
                    _add_block(lay, f, coff, csize, cluster_time, path)
                elif cid == BLOCK_GROUP:
                    for bid, boff, bsize in _children(f, coff, csize, path):
                        if bid == BLOCK:
                            _add_block(lay, f, boff, bsize, cluster_time, path)
        elif eid == ATTACHMENTS:
            for aid, aoff, asize in _children(f, off, size, path):
                if aid != ATTACHED_FILE:
                    continue
                name = mime = ""
                doff = dsize = -1
                for cid, coff, csize in _children(f, aoff, asize, path):
                    if cid in (FILE_NAME, FILE_MIME):
                        f.seek(coff)
                        text = f.read(min(csize, 4096)).decode("utf-8", "replace").rstrip("\0")
                        if cid == FILE_NAME:
                            name = text
                        else:
                            mime = text
                    elif cid == FILE_DATA:
                        doff, dsize = coff, csize
                if doff >= 0:
                    lay.attachments.append(Attachment(name, mime, doff, dsize))
    return lay


# --------------------------------------------------------------------------- the manifest's bytes
def _zdict_for(text: bytes) -> bytes:
    """The dictionary a manifest is deflated against: format 6's from version 6 (a rawvid that reads
    only up to 5 then refuses the file by its version, not by an unknown dictionary), else format 4's."""
    m = re.search(rb'"format_version":\s*(\d+)', text[:4096])
    return ZDICT6 if m and int(m.group(1)) >= 6 else ZDICT


def _deflate(text: bytes, level: int = 9) -> bytes:
    """zlib (RFC 1950) against the manifest dictionary: the stream's header names it by its Adler-32."""
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, _zdict_for(text))
    return c.compress(text) + c.flush()


def pack_manifest(text: bytes) -> bytes:
    """The stored form of a (sealed) manifest's JSON: format 4 on, zlib at level 9 with the preset dictionary."""
    return _deflate(text)


def _dictionary(data: bytes, path) -> bytes | None:
    """The preset dictionary a zlib stream's header asks for (None: none), refused when unknown."""
    if len(data) < 6 or data[0] & 0x0F != 8 or (data[0] << 8 | data[1]) % 31 or not data[1] & 0x20:
        return None  # no FLG.FDICT (a short or bad header is zlib's to refuse)
    want = int.from_bytes(data[2:6], "big")
    if want not in ZDICTS:
        raise FormatError(path, f"{MANIFEST_Z_NAME} needs an unknown dictionary ({want:08x}; written by a newer rawvid?)")
    return ZDICTS[want]


def unpack_manifest(data: bytes, path) -> bytes:
    """A stored manifest's JSON, inflated to at most MAX_MANIFEST_BYTES. Zero bytes after the zlib
    stream are allowed (a tool may rewrite the manifest in place, :func:`replace_manifest`), nothing else."""
    zdict = _dictionary(data, path)
    d = zlib.decompressobj(zdict=zdict) if zdict else zlib.decompressobj()
    try:
        text = d.decompress(data, MAX_MANIFEST_BYTES + 1)
    except zlib.error:
        raise FormatError(path, f"{MANIFEST_Z_NAME} is not a zlib stream") from None
    if len(text) > MAX_MANIFEST_BYTES or d.unconsumed_tail:
        raise FormatError(path, f"{MANIFEST_Z_NAME} inflates past {MAX_MANIFEST_BYTES} bytes")
    if not d.eof:
        raise FormatError(path, f"{MANIFEST_Z_NAME} is truncated")
    if d.unused_data.strip(b"\0"):
        raise FormatError(path, f"{MANIFEST_Z_NAME} has data after its zlib stream")
    return text


def manifest_attachment(by_name: dict) -> Attachment | None:
    """The manifest among a file's attachments (by name): format 3's compressed one, else the plain one."""
    return by_name.get(MANIFEST_Z_NAME) or by_name.get(MANIFEST_NAME)


def manifest_text(att: Attachment, stored: bytes, path) -> bytes:
    """The manifest's JSON from its attachment's stored bytes (inflated when compressed)."""
    return unpack_manifest(stored, path) if att.name == MANIFEST_Z_NAME else stored


def _manifest_in(data: bytes) -> Attachment:
    """The manifest attachment of an .rvd held in memory."""
    import io

    att = manifest_attachment({a.name: a for a in scan(io.BytesIO(data), "rvd").attachments})
    if att is None:
        raise FormatError("rvd", "no manifest attachment")
    return att


def read_manifest_text(data: bytes) -> bytes:
    """The manifest's JSON text of an .rvd held in memory (tools that edit files on purpose)."""
    att = _manifest_in(data)
    return manifest_text(att, data[att.offset: att.offset + att.size], "rvd")


def replace_manifest(data: bytes, text: bytes) -> bytes | None:
    """The .rvd (bytes) with its manifest's JSON replaced in place, or None when it does not fit.

    For tools and tests that edit a file on purpose (the fuzzer, damaged-file tests); the caller
    seals ``text`` if it wants it accepted. The stored form is padded (zeros after a zlib stream,
    spaces after plain JSON), so nothing else in the file moves."""
    att = _manifest_in(data)
    off, size, packed = att.offset, att.size, att.name == MANIFEST_Z_NAME
    tries = [_deflate(text, level) for level in range(9, 0, -1)] if packed else [text]
    stored = min(tries, key=len)
    if len(stored) > size:
        return None
    return data[:off] + stored.ljust(size, b"\0" if packed else b" ") + data[off + size:]


# --------------------------------------------------------------------------- reading an .rvd
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RvdFile:
    """An opened .rvd: the manifest, checked, and its attachments read on demand."""

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError(self.path, "no such file")
        p = str(self.path)
        with open(self.path, "rb") as f:
            self.layout = scan(f, p)
            self.file_size = f.seek(0, os.SEEK_END)
        self._by_name = {a.name: a for a in self.layout.attachments}
        man = manifest_attachment(self._by_name)
        if man is None:
            raise FormatError(self.path, "not an .rvd file (no manifest.json attachment)")
        name = self.manifest_name = man.name
        if man.size > MAX_MANIFEST_BYTES:
            raise FormatError(self.path, f"{name} is {man.size} bytes (limit {MAX_MANIFEST_BYTES})")
        text = manifest_text(man, self._read(man), self.path)
        try:
            self.manifest = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(self.path, f"{name} is not valid JSON ({exc})") from None
        except RecursionError:
            raise FormatError(self.path, f"{name} is nested too deeply") from None
        self._check_version()
        from .checksums import check_seal
        from .manifest import validate

        check_seal(self.manifest, self.path)  # a damaged or edited manifest is refused before it is read
        validate(self.manifest, self.path, self.file_size)  # every field, before anyone allocates from it
        if verify:
            self.verify()

    def _check_version(self) -> None:
        m = self.manifest
        if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
            raise FormatError(self.path, "not an .rvd file (manifest format is not 'rawvid')")
        v = m.get("format_version")
        if not isinstance(v, int):
            raise FormatError(self.path, "manifest has no format_version")
        if v > FORMAT_VERSION:
            raise UnsupportedError(self.path, f"format version {v} is newer than this rawvid reads "
                                   f"({FORMAT_VERSION}); upgrade rawvid")
        if v < 1:
            raise FormatError(self.path, f"invalid format version {v}")

    def _read(self, att: Attachment) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(att.offset)
            data = f.read(att.size)
        if len(data) != att.size:
            raise FormatError(self.path, f"attachment {att.name!r} is truncated")
        return data

    def verify(self) -> None:
        """Check that every attachment the manifest lists is present with its sha256."""
        expected = self.manifest.get("attachments")
        if not isinstance(expected, dict):
            raise FormatError(self.path, "manifest lists no attachments")
        for name, digest in expected.items():
            att = self._by_name.get(name)
            if att is None:
                raise FormatError(self.path, f"attachment {name!r} is missing")
            if hashlib.sha256(self._read(att)).hexdigest() != digest:
                raise FormatError(self.path, f"checksum mismatch in attachment {name!r}")

    def attachment(self, name: str) -> bytes:
        """The bytes of an attachment listed in the manifest (checked against its sha256)."""
        expected = self.manifest.get("attachments") or {}
        if name not in expected or name not in self._by_name:
            raise FormatError(self.path, f"no attachment {name!r}")
        data = self._read(self._by_name[name])
        if hashlib.sha256(data).hexdigest() != expected[name]:
            raise FormatError(self.path, f"checksum mismatch in attachment {name!r}")
        return data

    def sizes(self) -> dict:
        """Bytes per part and bits per Bayer sample of the whole file."""
        m = self.manifest
        keyframe_bytes = sum(a.size for a in self.layout.attachments if a.mime == MIME_DNG)
        videos = sorted(t for t, k in self.layout.track_types.items() if k == 1)
        srgb_bytes = self.layout.track_bytes.get(videos[0], 0) if videos else 0
        layer_bytes = sum(self.layout.track_bytes.get(t, 0) for t in videos[1:])
        side_bytes = sum(a.size for a in self.layout.attachments if a.mime == MIME_BINARY)
        manifest_bytes = self._by_name[self.manifest_name].size
        samples = int(m["frame_count"]) * int(m["width"]) * int(m["height"])
        d = {
            "file_bytes": self.file_size,
            "video_bytes": srgb_bytes,  # the sRGB track
            "raw_layer_bytes": layer_bytes,
            "raw_part_bytes": self.file_size - srgb_bytes,  # everything but the sRGB track
            "audio_bytes": self.layout.stream_bytes(2),
            "keyframe_bytes": keyframe_bytes,
            "manifest_bytes": manifest_bytes,
            "bits_per_pixel": 8 * self.file_size / samples if samples else 0.0,
            "video_bits_per_pixel": 8 * srgb_bytes / samples if samples else 0.0,
            "raw_layer_bits_per_pixel": 8 * layer_bytes / samples if samples else 0.0,
            "raw_part_bits_per_pixel": 8 * (self.file_size - srgb_bytes) / samples if samples else 0.0,
            "keyframe_bits_per_pixel": 8 * keyframe_bytes / samples if samples else 0.0,
            "side_info_bytes": side_bytes,  # per-frame calibration and block refinement
        }
        src = (m.get("source") or {}).get("bytes")
        if src:
            d["source_bytes"] = src
            d["ratio_vs_source"] = src / self.file_size
        return d


# --------------------------------------------------------------------------- writing
def mux(video: str | os.PathLike, out: str | os.PathLike, attachments: list[tuple[Path, str]],
        audio: str | os.PathLike | None = None, title: str = "", layer: str | os.PathLike | None = None) -> None:
    """Remux a video file (stream copy) with optional audio and attachments into Matroska.

    ``attachments`` are (file, mimetype); each is stored under its file name. ``layer``: the
    RAW layer's video file, copied in as the second video track (the sRGB stays track 0).
    ``audio``: a FLAC track already in Matroska (:func:`encode_flac`), copied; a WAV is
    encoded to FLAC here. Stream copy keeps every packet's bytes, so the CRC-32s the
    encoder computes on these files hold for the .rvd.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", os.fspath(video)]
    if layer:
        cmd += ["-i", os.fspath(layer)]
    if audio:
        cmd += ["-i", os.fspath(audio)]
    cmd += ["-map", "0:v:0"]
    if layer:
        cmd += ["-map", "1:v:0", "-metadata:s:v:1", f"title={LAYER_TITLE}"]
    # the sRGB track's colour description in the container too (players read it there first)
    cmd += ["-c:v", "copy", "-color_primaries:v:0", "bt709", "-color_trc:v:0", "iec61966-2-1"]
    if audio:
        copy = Path(audio).suffix.lower() == ".mka"
        cmd += ["-map", f"{2 if layer else 1}:a:0", "-c:a", "copy" if copy else "flac"]
    for i, (path, mime) in enumerate(attachments):
        cmd += ["-attach", os.fspath(path), f"-metadata:s:t:{i}", f"mimetype={mime}"]
    if title:
        cmd += ["-metadata", f"title={title}"]
    # no per-element CRC-32s (the manifest holds every packet's), no version strings or random IDs
    # (bitexact), none of the inputs' tags: 161 of a 16-frame 512x320 clip's 4019 non-sRGB bytes
    cmd += ["-map_metadata", "-1", "-fflags", "+bitexact", "-write_crc32", "0"]
    cmd += ["-f", "matroska", os.fspath(out)]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        lines = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise FormatError(out, f"muxing failed: {lines[-1] if lines else 'ffmpeg error'}")


def encode_flac(wav: str | os.PathLike, out: str | os.PathLike) -> None:
    """WAV to a FLAC track in Matroska (muxed by copy, so its packets can be checksummed first)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", os.fspath(wav), "-map", "0:a:0",
           "-c:a", "flac", "-f", "matroska", os.fspath(out)]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        lines = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise FormatError(wav, f"audio encoding failed: {lines[-1] if lines else 'ffmpeg error'}")
