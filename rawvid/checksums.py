"""Every byte of an .rvd checked: the manifest sealed by its own SHA-256, each track's packets by CRC-32.

Attachments (keyframes, side information, the RAW layer's maps) carry SHA-256 digests in the
manifest. What they do not cover, this module does:

* the manifest itself: ``manifest_sha256`` is the SHA-256 of the manifest's canonical JSON
  (keys sorted, compact) without that key, so an edited or damaged manifest is refused;
* the tracks: the manifest's ``track_crc32`` (format 3; format 2 kept it in an attachment,
  ``tracks.crc32.json``, whose own SHA-256 is in the manifest) lists the CRC-32 of every packet
  of the sRGB video, the RAW layer and the audio in file order. A damaged packet is named by the
  frame it belongs to, and a decode can still write the frames decoded before it
  (:func:`clean_prefix`).

The encoder computes the CRCs on the track files it muxes (ffmpeg's stream copy keeps every
packet's bytes, verified in the tests); the reader computes them with the container's own
block parser, never with a resyncing demuxer.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FormatError

SEAL_KEY = "manifest_sha256"
CHECKSUMS_NAME = "tracks.crc32.json"  # format 2
TRACKS_KEY = "track_crc32"  # format 3: in the (sealed) manifest
TRACK_NAMES = ("video", "layer", "audio")


# --------------------------------------------------------------------------- the manifest's seal
def manifest_seal(m: dict) -> str:
    """SHA-256 of the manifest's canonical JSON, without the seal itself."""
    body = {k: v for k, v in m.items() if k != SEAL_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(m: dict) -> dict:
    """The manifest with its seal (the last thing the encoder adds)."""
    return {**{k: v for k, v in m.items() if k != SEAL_KEY}, SEAL_KEY: manifest_seal(m)}


def check_seal(m: dict, path) -> None:
    """Refuse a manifest whose seal does not match (format 2 on: the seal must be there)."""
    got = m.get(SEAL_KEY)
    if got is None:
        if m.get("format_version", 1) >= 2:
            raise FormatError(path, "manifest has no manifest_sha256 (damaged manifest)")
        return
    if not isinstance(got, str) or got != manifest_seal(m):
        raise FormatError(path, "manifest checksum mismatch: the manifest was changed or damaged")


def sealed_json(manifest: dict) -> bytes:
    """The manifest's JSON, sealed, as the encoder writes it (also for tools that edit a file on purpose)."""
    return json.dumps(seal(manifest), separators=(",", ":")).encode()


# --------------------------------------------------------------------------- track CRCs
def track_names(layout) -> dict[int, str]:
    """Track number -> video (the sRGB, track 0), layer (the second video track) or audio."""
    videos = sorted(t for t, k in layout.track_types.items() if k == 1)
    audios = sorted(t for t, k in layout.track_types.items() if k == 2)
    names = {}
    if videos:
        names[videos[0]] = "video"
    if len(videos) > 1:
        names[videos[1]] = "layer"
    if audios:
        names[audios[0]] = "audio"
    return names


def block_crcs(path: str | Path, layout=None) -> dict[str, list[tuple[int, int]]]:
    """(CRC-32, timecode) of every block of every named track, in file order. ``layout``: the
    file's scan when the caller has it (an opened .rvd), so the file is not walked again."""
    from .container import scan

    out: dict[str, list[tuple[int, int]]] = {}
    with open(path, "rb") as f:
        layout = layout or scan(f, str(path))
        for track, name in track_names(layout).items():
            rows = []
            for off, size, tc in layout.blocks.get(track, []):
                f.seek(off)
                rows.append((zlib.crc32(f.read(size)), tc))
            out[name] = rows
    return out


def track_file_crcs(files: dict[str, Path]) -> dict[str, list[int]]:
    """The CRCs the encoder records: each track file's one track (video.mkv, rawlayer.mkv, audio.mka)."""
    out = {}
    for name, p in files.items():
        rows = block_crcs(p)
        got = rows.get("audio" if name == "audio" else "video")
        if got is None:
            raise FormatError(p, f"no {name} track to checksum")
        out[name] = [c for c, _ in got]
    return out


def parse_checksums(data: bytes, path) -> dict[str, list[int]]:
    """The checksums attachment of format 2, validated (names, types, 32-bit values)."""
    try:
        d = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError(path, f"{CHECKSUMS_NAME} is not valid JSON") from None
    return check_track_crcs(d, path, CHECKSUMS_NAME)


def track_crc_record(crcs: dict[str, list[int]]) -> dict:
    """What the encoder records of the tracks' CRC-32s (the manifest's ``track_crc32``)."""
    return {"algorithm": "crc32", "tracks": crcs}


def check_track_crcs(d, path, where: str = TRACKS_KEY) -> dict[str, list[int]]:
    """A track CRC record (``{"algorithm": "crc32", "tracks": {name: [...]}}``), validated."""
    if not isinstance(d, dict) or d.get("algorithm") != "crc32" or not isinstance(d.get("tracks"), dict):
        raise FormatError(path, f"{where} is not a crc32 track list")
    tracks = d["tracks"]
    for name, crcs in tracks.items():
        if name not in TRACK_NAMES or not isinstance(crcs, list) or \
                not all(type(c) is int and 0 <= c < 2**32 for c in crcs):
            raise FormatError(path, f"{where}: bad entry for track {name!r}")
    return tracks


@dataclass
class TrackCheck:
    """What the CRC pass found: per track, packets checked and the damaged ones (file order)."""

    checked: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, list[int]] = field(default_factory=dict)  # track -> packet indices (file order)
    frames: dict[str, list[int]] = field(default_factory=dict)  # track -> display frame indices hit
    clean_frames: dict[str, int] = field(default_factory=dict)  # track -> frames [0, n) decodable untouched
    present: bool = True  # False: a file from before track checksums (format 1)

    @property
    def ok(self) -> bool:
        return not any(self.damaged.values())

    def describe(self) -> str:
        parts = []
        for name, idx in self.damaged.items():
            if idx:
                frames = self.frames.get(name, [])
                what = {"video": "sRGB video", "layer": "RAW layer", "audio": "audio"}[name]
                where = f"frame(s) {', '.join(map(str, frames[:8]))}{' ...' if len(frames) > 8 else ''}" if frames \
                    else f"packet(s) {', '.join(map(str, idx[:8]))}"
                parts.append(f"{what} damaged at {where}")
        return "; ".join(parts)


def _display_order(timecodes: list[int]) -> list[int]:
    """The display index of each packet (packets in file order, by their timecodes)."""
    order = sorted(range(len(timecodes)), key=lambda i: (timecodes[i], i))
    rank = [0] * len(timecodes)
    for r, i in enumerate(order):
        rank[i] = r
    return rank


def clean_prefix(display: list[int], first_bad: int) -> int:
    """Frames [0, n) that decode without the damaged packet: every frame decoded before it (in file
    order) only references frames decoded before it, so the prefix ends at the smallest display
    index among the packets from the damage on."""
    return min(display[first_bad:], default=len(display))


def check_tracks(rvd, layer=None) -> TrackCheck:
    """Compare every packet of the sRGB video, RAW layer and audio with the recorded CRC-32s.
    ``layer``: the parsed RAW layer (``rawlayer.parse_layer``): its passes per frame name the frames."""
    res = TrackCheck()
    if TRACKS_KEY in rvd.manifest:  # validated when the manifest was read (rawvid.manifest.validate)
        want = rvd.manifest[TRACKS_KEY]["tracks"]
    elif CHECKSUMS_NAME in (rvd.manifest.get("attachments") or {}):
        want = parse_checksums(rvd.attachment(CHECKSUMS_NAME), rvd.path)
    else:
        res.present = False
        return res
    got = block_crcs(rvd.path, rvd.layout)
    for name, expected in want.items():
        rows = got.get(name, [])
        crcs = [c for c, _ in rows]
        bad = [i for i, (a, b) in enumerate(zip(crcs, expected)) if a != b]
        if len(crcs) != len(expected):
            bad.append(min(len(crcs), len(expected)))  # packets missing or added: damaged from there on
        res.checked[name] = len(expected)
        res.damaged[name] = bad
        if not bad:
            continue
        first = bad[0]
        if name == "video":
            display = _display_order([tc for _, tc in rows])
            res.frames[name] = sorted({display[i] for i in bad if i < len(display)}) or [len(display)]
            res.clean_frames[name] = clean_prefix(display, first) if first < len(display) else len(display)
        elif name == "layer":
            passes = layer.passes if layer is not None else []
            owner = [f for f, n in enumerate(passes) for _ in range(n)] or list(range(len(crcs) + 1))
            res.frames[name] = sorted({owner[min(i, len(owner) - 1)] for i in bad})
            res.clean_frames[name] = owner[min(first, len(owner) - 1)]
    return res
