"""Magic Lantern Video (MLV v2.0): a streaming reader and a writer.

Layout (Magic Lantern's mlv.h, see also ../shared/docs/FORMATS.md): a file is a
sequence of little-endian blocks ``type[4], blockSize u32, timestamp u64, ...``;
the file header MLVI has no timestamp. The reader walks every block of every
split chunk once to build an index (frame number -> chunk, offset, size), then
reads frames one at a time, so a multi-gigabyte clip never sits in memory.
Every size read from the file is checked before it is trusted.
"""
from __future__ import annotations

import os
import re
import struct
import warnings
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .errors import FormatError, RawvidWarning, UnsupportedError
from .meta import CFA_PATTERNS, MAX_FPS, MAX_SIDE, MIN_SIDE, Camera, Frame, RawInfo, cfa_from_colors, neutral_from_matrix

MLVI_SIZE = 52
RAWI_SIZE = 180
VIDF_HEADER = 32
AUDF_HEADER = 24
BLOCK_HEADER = 16

VIDEO_CLASS_RAW = 0x01
FLAG_LJ92 = 0x20
MLVI_FILE_COUNT_AT = 26  # byte offset of fileCount in the MLVI header
#: WBAL white-balance modes with a known colour temperature (Canon's presets; 9 is Kelvin mode,
#: whose temperature the block carries). Auto (0) and custom gains (6, used as they are) are not here.
WB_KELVIN = {1: 5200.0, 2: 6000.0, 3: 3200.0, 4: 4000.0, 5: 6000.0, 8: 7000.0, 9: 0.0}
FLAG_DELTA = 0x40
FLAG_LZMA = 0x80

MLV_BITS = (10, 12, 14, 16)

#: Minimum sizes of the blocks whose fields we read (type, size, timestamp included).
_MIN_SIZE = {
    b"RAWI": RAWI_SIZE, b"VIDF": VIDF_HEADER, b"AUDF": AUDF_HEADER, b"IDNT": 84,
    b"EXPO": 40, b"WBAL": 44, b"LENS": 96, b"RTCI": 44, b"WAVI": 32, b"VERS": 20,
    b"RAWC": 32, b"XREF": 24,
}
#: Metadata blocks larger than this are skipped unread (they cannot be legitimate).
_MAX_META_BLOCK = 1 << 20


class MLVWarning(RawvidWarning):
    """A recoverable problem in an MLV file (for example a truncated recording)."""


# --------------------------------------------------------------------------- pixel packing
_GROUP = {10: (4, 5), 12: (2, 3), 14: (4, 7), 16: (1, 2)}  # bits -> (pixels, bytes) per group


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` pixels packed at ``bits`` per pixel, rounded up to whole 16-bit words."""
    nbytes = (count * bits + 7) // 8
    return nbytes + (nbytes & 1)


def unpack_bits(buf: bytes | memoryview | np.ndarray, count: int, bits: int) -> np.ndarray:
    """Unpack ML's packed pixels: an MSB-first bitstream cut into little-endian 16-bit words.

    Swapping the bytes of every word gives a plain big-endian bitstream, which is then
    read in groups (14-bit: 4 pixels per 7 bytes) with vectorised shifts.
    """
    if bits not in _GROUP:
        raise ValueError(f"unsupported bit depth {bits}")
    px, nb = _GROUP[bits]
    need = packed_size(count, bits)
    raw = np.frombuffer(buf, dtype=np.uint8, count=need)
    swapped = raw.reshape(-1, 2)[:, ::-1].reshape(-1)
    ngroups = -(-count // px)
    if ngroups * nb > swapped.size:
        swapped = np.concatenate([swapped, np.zeros(ngroups * nb - swapped.size, np.uint8)])
    # left-pad each group to 8 bytes and read it as one big-endian uint64
    groups = np.zeros((ngroups, 8), dtype=np.uint8)
    groups[:, 8 - nb :] = swapped[: ngroups * nb].reshape(ngroups, nb)
    val = groups.view(">u8").reshape(-1).astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((ngroups, px), dtype=np.uint16)
    for j in range(px):
        out[:, j] = (val >> np.uint64(bits * (px - 1 - j))) & mask
    return out.reshape(-1)[:count]


def pack_bits(pixels: np.ndarray, bits: int) -> bytes:
    """Inverse of :func:`unpack_bits`: pack pixels to ML's 16-bit-word bitstream."""
    if bits not in _GROUP:
        raise ValueError(f"unsupported bit depth {bits}")
    px, nb = _GROUP[bits]
    flat = np.asarray(pixels, dtype=np.uint64).reshape(-1)
    if flat.size and int(flat.max()) >= (1 << bits):
        raise ValueError(f"pixel value does not fit in {bits} bits")
    count = flat.size
    ngroups = -(-count // px)
    flat = np.concatenate([flat, np.zeros(ngroups * px - count, np.uint64)]).reshape(ngroups, px)
    val = np.zeros(ngroups, dtype=np.uint64)
    for j in range(px):
        val = (val << np.uint64(bits)) | flat[:, j]
    out = np.empty((ngroups, nb), dtype=np.uint8)
    for i in range(nb):
        out[:, i] = (val >> np.uint64(8 * (nb - 1 - i))) & np.uint64(0xFF)
    stream = out.reshape(-1)[: packed_size(count, bits)]
    if stream.size < packed_size(count, bits):
        stream = np.concatenate([stream, np.zeros(packed_size(count, bits) - stream.size, np.uint8)])
    return stream.reshape(-1, 2)[:, ::-1].tobytes()


def encode_lj92(mosaic: np.ndarray, bits: int) -> bytes:
    """Lossless-JPEG a Bayer frame as MLV-App does: one component, 2W x H/2 (two rows per row).

    Folding two Bayer rows into one JPEG row puts same-colour pixels above each other,
    so the predictor never mixes colours.
    """
    import imagecodecs

    h, w = mosaic.shape
    return bytes(imagecodecs.ljpeg_encode(np.ascontiguousarray(mosaic.reshape(h // 2, 2 * w)), bitspersample=bits))


def decode_lj92(payload: bytes, width: int, height: int) -> np.ndarray:
    """Decode an LJ92 frame to a height x width mosaic, whatever layout its encoder chose."""
    import imagecodecs

    arr = imagecodecs.ljpeg_decode(payload)
    if arr.size != width * height:
        raise ValueError(f"decodes to {arr.size} pixels, expected {width}x{height}")
    return np.ascontiguousarray(arr.reshape(height, width).astype(np.uint16, copy=False))


# --------------------------------------------------------------------------- index structures
@dataclass
class MLVHeader:
    """The MLVI file header of one chunk."""

    version: str
    guid: int
    file_num: int
    file_count: int
    file_flags: int
    video_class: int
    audio_class: int
    video_frame_count: int
    audio_frame_count: int
    fps_nom: int
    fps_denom: int

    @property
    def fps(self) -> float:
        return self.fps_nom / self.fps_denom if self.fps_denom else 0.0


@dataclass
class BlockRef:
    """Where a VIDF/AUDF payload lives: chunk index, payload offset and size."""

    number: int
    timestamp_us: int
    chunk: int
    offset: int
    size: int


@dataclass
class AudioFormat:
    """WAVI: PCM audio layout (RIFF-compatible)."""

    format: int = 1
    channels: int = 2
    rate: int = 48000
    bytes_per_second: int = 192000
    block_align: int = 4
    bits: int = 16


@dataclass
class MLVIndex:
    """Everything learnt from one pass over the blocks of every chunk."""

    headers: list[MLVHeader] = field(default_factory=list)
    xres: int = 0
    yres: int = 0
    bits: int = 0
    black: int = 0
    white: int = 0
    cfa: str = "RGGB"
    color_matrix: tuple[float, ...] | None = None
    illuminant: int = 21
    neutral: tuple[float, float, float] | None = None
    kelvin: float | None = None  # the white balance's colour temperature, where WBAL gives one
    camera: Camera = field(default_factory=Camera)
    video: list[BlockRef] = field(default_factory=list)
    audio: list[BlockRef] = field(default_factory=list)
    audio_format: AudioFormat | None = None
    has_rawi: bool = False
    versions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("latin-1").strip()


def parse_mlvi(data: bytes, path: str) -> MLVHeader:
    """Parse and check an MLVI header (the first 52 bytes of every chunk)."""
    if len(data) < 4 or data[:4] != b"MLVI":
        raise FormatError(path, "not an MLV file (no MLVI header)")
    if len(data) < MLVI_SIZE:
        raise FormatError(path, f"truncated MLVI header ({len(data)} of {MLVI_SIZE} bytes)")
    size = struct.unpack_from("<I", data, 4)[0]
    if size < MLVI_SIZE:
        raise FormatError(path, f"corrupt MLVI header (blockSize {size} < {MLVI_SIZE})")
    fields = struct.unpack_from("<8sQHHIHHIIII", data, 8)
    version = _cstr(fields[0])
    if not version.startswith("v2."):
        raise UnsupportedError(path, f"MLV version {version!r} (rawvid reads v2.x)")
    return MLVHeader(version, *fields[1:])


def _chunk_paths(path: Path) -> list[Path]:
    """NAME.MLV plus its split chunks NAME.M00 ... NAME.M99, in order; a gap is an error."""
    found: dict[int, Path] = {}
    pat = re.compile(re.escape(path.stem) + r"\.[Mm](\d\d)$")
    for p in path.parent.iterdir():
        m = pat.match(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    chunks = [path]
    for i in range(len(found)):
        if i not in found:
            raise FormatError(path, f"missing split chunk {path.stem}.M{i:02d}")
        chunks.append(found[i])
    if found and max(found) != len(found) - 1:
        raise FormatError(path, f"missing split chunk {path.stem}.M{len(found):02d}")
    return chunks


def _parse_rawi(b: bytes, idx: MLVIndex, path: str) -> None:
    xres, yres = struct.unpack_from("<HH", b, 16)
    (_api, _buf, _h, _w, _pitch, _fsize, bpp, black, white) = struct.unpack_from("<9i", b, 20)
    cfa_word = struct.unpack_from("<I", b, 96)[0]
    illum = struct.unpack_from("<i", b, 100)[0]
    cm = struct.unpack_from("<18i", b, 104)
    if not (0 < xres <= MAX_SIDE and 0 < yres <= MAX_SIDE):
        raise FormatError(path, f"absurd frame size {xres}x{yres} in RAWI")
    if xres % 2 or yres % 2:
        raise UnsupportedError(path, f"odd frame size {xres}x{yres} (Bayer frames need even sides)")
    if xres < MIN_SIDE or yres < MIN_SIDE:
        raise UnsupportedError(path, f"frame size {xres}x{yres} is under {MIN_SIDE} pixels a side: LibRaw, and "
                               "every raw developer built on it, cannot open such DNGs")
    if bpp not in MLV_BITS:
        raise UnsupportedError(path, f"unsupported bit depth {bpp} in RAWI (rawvid reads 10, 12, 14 and 16)")
    if not (0 <= black < white < (1 << bpp)):
        raise FormatError(path, f"bad levels in RAWI: black {black}, white {white} at {bpp} bits")
    colors = tuple(cfa_word.to_bytes(4, "little"))
    try:
        cfa = cfa_from_colors(colors)  # type: ignore[arg-type]
    except ValueError:
        idx.warnings.append(f"unknown CFA pattern 0x{cfa_word:08x} in RAWI; assuming RGGB")
        cfa = "RGGB"
    matrix = None
    if all(cm[i + 1] != 0 for i in range(0, 18, 2)):
        matrix = tuple(cm[i] / cm[i + 1] for i in range(0, 18, 2))
        if not all(abs(v) <= 16 for v in matrix):  # a colour matrix entry is a few units at most
            idx.warnings.append("RAWI colour matrix out of range: dropped (the DNGs carry none; set it in your "
                                "raw developer)")
            matrix = None
    idx.xres, idx.yres, idx.bits, idx.black, idx.white, idx.cfa = xres, yres, bpp, black, white, cfa
    idx.color_matrix = matrix
    # ML writes 1 (daylight); DNG readers treat 21 (D65) the same way for a single matrix.
    idx.illuminant = illum if 0 < illum < 256 else 21
    idx.has_rawi = True


def _parse_meta(kind: bytes, b: bytes, idx: MLVIndex) -> None:
    cam = idx.camera
    if kind == b"IDNT":
        name = _cstr(b[16:48])
        cam.model = name
        cam.make = name.split(" ", 1)[0] if name else ""
        cam.serial = _cstr(b[52:84])
    elif kind == b"EXPO":
        _mode, iso, _analog, _dgain, shutter = struct.unpack_from("<4IQ", b, 16)
        cam.iso = cam.iso or (iso or None)
        cam.shutter_us = cam.shutter_us or (shutter or None)
    elif kind == b"LENS":
        focal, _dist, aperture = struct.unpack_from("<HHH", b, 16)
        cam.lens = cam.lens or _cstr(b[32:64])
        cam.focal_length_mm = cam.focal_length_mm or (float(focal) or None)
        cam.aperture = cam.aperture or (aperture / 100 if aperture else None)
    elif kind == b"WBAL":
        mode, kelvin, r, g, bl = struct.unpack_from("<5I", b, 16)
        if mode == 6 and r and g and bl and idx.neutral is None:  # WB_CUSTOM: gains valid
            idx.neutral = (r / g, 1.0, bl / g)
        elif idx.kelvin is None and mode in WB_KELVIN:  # a preset, or Kelvin mode with its temperature
            k = float(kelvin) if mode == 9 else WB_KELVIN[mode]
            idx.kelvin = k if 1667 <= k <= 25000 else None
    elif kind == b"RTCI":
        sec, mnt, hour, mday, mon, year = struct.unpack_from("<6H", b, 16)
        if cam.datetime is None and 1 <= mday <= 31 and mon <= 11:
            cam.datetime = f"{1900 + year:04d}:{mon + 1:02d}:{mday:02d} {hour:02d}:{mnt:02d}:{sec:02d}"
    elif kind == b"VERS":
        n = struct.unpack_from("<I", b, 16)[0]
        idx.versions.append(_cstr(b[20 : 20 + min(n, len(b) - 20)]))
    elif kind == b"WAVI" and idx.audio_format is None:
        fmt = AudioFormat(*struct.unpack_from("<HHIIHH", b, 16))
        if audio_format_ok(fmt):
            idx.audio_format = fmt
        else:  # checked here, not after the video is encoded: the pixels are good, the sound is dropped
            idx.warnings.append(f"unusable audio header (format {fmt.format}, {fmt.channels} channel(s), "
                                f"{fmt.rate} Hz, {fmt.bits} bits, blocks of {fmt.block_align} bytes): "
                                "encoding the video without its audio")


def audio_format_ok(fmt: AudioFormat) -> bool:
    """A WAVI header a WAV file can carry: PCM, 8-32 bits, 1-16 channels, 1 Hz - 768 kHz, and a block
    of one sample per channel (the AUDF payloads are cut to whole blocks)."""
    return (fmt.format == 1 and fmt.bits in (8, 16, 24, 32) and 0 < fmt.channels <= 16 and 0 < fmt.rate <= 768_000
            and fmt.block_align == fmt.channels * fmt.bits // 8)


def _index_chunk(f: BinaryIO, ci: int, size: int, idx: MLVIndex, path: str) -> None:
    """Walk one chunk's blocks by blockSize, recording frames and parsing metadata."""
    off = struct.unpack_from("<I", f.read(8), 4)[0]  # MLVI blockSize (already validated)
    where = f"{Path(path).name}: " if ci else ""  # name split chunks; the clip itself is named by the caller
    while off < size:
        if size - off < BLOCK_HEADER:
            f.seek(off)
            if any(f.read(size - off)):
                idx.warnings.append(f"{where}{size - off} trailing bytes at offset {off} ignored")
            return
        f.seek(off)
        head = f.read(BLOCK_HEADER)
        kind, bsize, ts = struct.unpack("<4sIQ", head)
        if bsize < BLOCK_HEADER or bsize < _MIN_SIZE.get(kind, BLOCK_HEADER):
            if kind == b"\0\0\0\0" and bsize == 0:
                idx.warnings.append(f"{where}zero padding at offset {off} ends the chunk")
                return
            raise FormatError(path, f"corrupt {kind.decode('latin-1')!r} block at offset {off} (blockSize {bsize})")
        if off + bsize > size:
            idx.warnings.append(
                f"{where}{kind.decode('latin-1')} block at offset {off} is cut off "
                f"({size - off} of {bsize} bytes): the recording is truncated"
            )
            return
        if kind in (b"VIDF", b"AUDF"):
            hdr = head + f.read((VIDF_HEADER if kind == b"VIDF" else AUDF_HEADER) - BLOCK_HEADER)
            if kind == b"VIDF":
                number = struct.unpack_from("<I", hdr, 16)[0]
                space = struct.unpack_from("<I", hdr, 28)[0]
                hsize = VIDF_HEADER
            else:
                number, space = struct.unpack_from("<II", hdr, 16)
                hsize = AUDF_HEADER
            if space > bsize - hsize:
                raise FormatError(path, f"corrupt {kind.decode()} block at offset {off} (frameSpace {space} > block)")
            ref = BlockRef(number, ts, ci, off + hsize + space, bsize - hsize - space)
            (idx.video if kind == b"VIDF" else idx.audio).append(ref)
        elif kind == b"RAWI":
            _parse_rawi(head + f.read(RAWI_SIZE - BLOCK_HEADER), idx, path)
        elif bsize <= _MAX_META_BLOCK and kind in _MIN_SIZE:
            _parse_meta(kind, head + f.read(bsize - BLOCK_HEADER), idx)
        off += bsize


# --------------------------------------------------------------------------- reader
class MLVReader:
    """Read a Magic Lantern clip (with its split chunks) one frame at a time.

    >>> with MLVReader("clip.MLV") as clip:
    ...     for frame in clip.frames():
    ...         process(frame.mosaic)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError(self.path, "no such file")
        self.chunks = _chunk_paths(self.path)
        self._files: list[BinaryIO] = []
        try:
            self.index = self._build_index()
        except BaseException:
            self.close()
            raise
        idx = self.index
        head = idx.headers[0]
        fps = head.fps if head.fps > 0 else 25.0
        if fps > MAX_FPS:  # a damaged header: the pixels are still good; a timecode cannot say this
            idx.warnings.append(f"frame rate {fps:.6g} fps in MLVI is not plausible; using 25 (set --fps)")
            fps = 25.0
        neutral = idx.neutral
        if neutral is None and idx.kelvin is not None and idx.color_matrix:
            neutral = neutral_from_matrix(idx.color_matrix, idx.kelvin)  # the camera's WB, not D65
        self.info = RawInfo(
            width=idx.xres, height=idx.yres, bits=idx.bits, black=idx.black, white=idx.white,
            cfa=idx.cfa, color_matrix=idx.color_matrix, calibration_illuminant=idx.illuminant,
            as_shot_neutral=neutral, fps=fps, camera=idx.camera,
        )
        self.lj92 = bool(head.video_class & FLAG_LJ92)
        self.audio_format = idx.audio_format if idx.audio else None
        self.warnings = idx.warnings
        for msg in self.warnings:
            warnings.warn(f"{self.path}: {msg}", MLVWarning, stacklevel=2)

    # -- indexing
    def _build_index(self) -> MLVIndex:
        idx = MLVIndex()
        for ci, chunk in enumerate(self.chunks):
            f = open(chunk, "rb")
            self._files.append(f)
            size = os.fstat(f.fileno()).st_size
            head = parse_mlvi(f.read(MLVI_SIZE), str(chunk))
            if idx.headers and head.guid != idx.headers[0].guid:
                raise FormatError(chunk, "split chunk belongs to another clip (fileGuid differs)")
            idx.headers.append(head)
            f.seek(0)
            _index_chunk(f, ci, size, idx, str(chunk))
        head = idx.headers[0]
        if head.file_count > len(self.chunks):  # the recording ended with more files than are here
            missing = ", ".join(f"{self.path.stem}.M{i - 1:02d}" for i in range(len(self.chunks), head.file_count))
            idx.warnings.append(f"the header counts {head.file_count} files, {len(self.chunks)} found: "
                                f"missing split chunk(s) {missing}; reading the frames that are here")
        vclass = head.video_class
        if vclass & 0x0F != VIDEO_CLASS_RAW:
            raise UnsupportedError(self.path, f"video class 0x{vclass:02x} is not RAW")
        if vclass & (FLAG_DELTA | FLAG_LZMA):
            raise UnsupportedError(self.path, f"DELTA/LZMA-compressed frames (video class 0x{vclass:02x})")
        if not idx.has_rawi:
            raise FormatError(self.path, "RAWI block missing: no frame geometry")
        # frames out of order: order by frameNumber, then timestamp; drop duplicates
        idx.video.sort(key=lambda r: (r.number, r.timestamp_us))
        dedup: list[BlockRef] = []
        for ref in idx.video:
            if dedup and dedup[-1].number == ref.number:
                idx.warnings.append(f"duplicate frame number {ref.number} ignored")
                continue
            dedup.append(ref)
        idx.video = dedup
        idx.audio.sort(key=lambda r: (r.number, r.timestamp_us))
        promised = sum(h.video_frame_count for h in idx.headers)
        if promised > len(idx.video):
            idx.warnings.append(
                f"header promised {promised} frames, {len(idx.video)} complete frame(s) present"
            )
        if not idx.video:
            raise FormatError(self.path, "no complete video frame")
        return idx

    # -- access
    @property
    def header(self) -> MLVHeader:
        return self.index.headers[0]

    @property
    def promised_frames(self) -> int:
        return sum(h.video_frame_count for h in self.index.headers)

    @property
    def size_bytes(self) -> int:
        """Bytes of the whole clip on disk, all chunks together."""
        return sum(p.stat().st_size for p in self.chunks)

    def __len__(self) -> int:
        return len(self.index.video)

    def read(self, i: int) -> np.ndarray:
        """The mosaic of frame ``i`` (in frame-number order) as uint16, height x width."""
        ref = self.index.video[i]
        w, h, bits = self.info.width, self.info.height, self.info.bits
        f = self._files[ref.chunk]
        f.seek(ref.offset)
        if self.lj92:
            payload = f.read(ref.size)
            try:
                mosaic = decode_lj92(payload, w, h)
            except Exception as exc:  # imagecodecs raises its own error types
                raise FormatError(self.path, f"corrupt LJ92 frame {ref.number} (index {i}): {exc}") from None
            top = int(mosaic.max()) if mosaic.size else 0
            if top >> bits:  # a damaged frame can decode to values no {bits}-bit sensor gives
                raise FormatError(self.path, f"corrupt LJ92 frame {ref.number} (index {i}): value {top} "
                                  f"is above the {bits}-bit range")
            return mosaic
        need = packed_size(w * h, bits)
        if ref.size < (w * h * bits + 7) // 8:
            raise FormatError(self.path, f"frame {ref.number} payload is {ref.size} bytes, expected {need}")
        payload = f.read(need)
        if len(payload) < need:
            payload += b"\0" * (need - len(payload))
        return unpack_bits(payload, w * h, bits).reshape(h, w)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Yield frames ``start``..``stop-1`` one at a time, in frame-number order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(max(0, start), stop):
            ref = self.index.video[i]
            yield Frame(i, ref.number, ref.timestamp_us, self.read(i))

    def timestamps(self) -> list[int]:
        return [r.timestamp_us for r in self.index.video]

    def write_wav(self, path: str | os.PathLike) -> bool:
        """Write the clip's audio (if any) as a PCM WAV file, streaming; returns False if none."""
        fmt = self.audio_format
        if fmt is None or not audio_format_ok(fmt):
            return False
        written = 0
        with wave.open(os.fspath(path), "wb") as out:
            out.setnchannels(fmt.channels)
            out.setsampwidth(fmt.bits // 8)
            out.setframerate(fmt.rate)
            for ref in self.index.audio:
                f = self._files[ref.chunk]
                f.seek(ref.offset)
                data = f.read(ref.size)
                usable = len(data) - len(data) % max(1, fmt.block_align)
                out.writeframes(data[:usable])
                written += usable
        return written > 0  # a header without a sample is no audio (an empty track would not mux)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self) -> "MLVReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- writer
def _block(kind: bytes, payload: bytes, timestamp: int = 0) -> bytes:
    return struct.pack("<4sIQ", kind, BLOCK_HEADER + len(payload), timestamp) + payload


def _rawi(info: RawInfo) -> bytes:
    w, h, bits = info.width, info.height, info.bits
    pitch = w * bits // 8
    cfa_word = int.from_bytes(bytes(CFA_PATTERNS[info.cfa]), "little")
    cm = info.color_matrix or (1, 0, 0, 0, 1, 0, 0, 0, 1)
    rational = [v for x in cm for v in (int(round(x * 10000)), 10000)]
    body = struct.pack("<HH", w, h)
    body += struct.pack("<9i", 1, 0, h, w, pitch, pitch * h, bits, info.black, info.white)
    body += struct.pack("<4i", 0, 0, w, h) + struct.pack("<4i", 0, 0, h, w) + struct.pack("<2i", 0, 0)
    body += struct.pack("<ii", cfa_word, info.calibration_illuminant) + struct.pack("<18i", *rational)
    body += struct.pack("<i", 1100)
    return _block(b"RAWI", body)


class MLVWriter:
    """Write a genuine MLV v2.0 clip: packed 10/12/14/16-bit or LJ92 frames, optional split chunks.

    Used to make the example clip and test fixtures; ``frame_space`` inserts EDMAC-style
    padding before each payload, ``chunk_frames`` starts a new .M00/.M01 chunk every N frames.
    """

    def __init__(self, path: str | os.PathLike, info: RawInfo, *, lj92: bool = False, frame_space: int = 0,
                 chunk_frames: int | None = None, audio: AudioFormat | None = None, guid: int = 0x5241575649440001):
        if info.bits not in MLV_BITS:
            raise ValueError(f"MLV cannot hold {info.bits}-bit frames")
        self.path = Path(path)
        self.info, self.lj92, self.frame_space = info, lj92, frame_space
        self.chunk_frames, self.audio, self.guid = chunk_frames, audio, guid
        self._chunk = -1
        self._f: BinaryIO | None = None
        self._counts: list[list[int]] = []
        self._in_chunk = 0
        self._open_chunk()

    def _chunk_path(self, n: int) -> Path:
        return self.path if n == 0 else self.path.with_suffix(f".M{n - 1:02d}")

    def _header(self, n: int, vcount: int, acount: int) -> bytes:
        vclass = VIDEO_CLASS_RAW | (FLAG_LJ92 if self.lj92 else 0)
        fps_nom = int(round(self.info.fps * 1000))
        return struct.pack("<4sI8sQHHIHHIIII", b"MLVI", MLVI_SIZE, b"v2.0", self.guid, n, 0, 0, vclass,
                           1 if self.audio else 0, vcount, acount, fps_nom, 1000)

    def _open_chunk(self) -> None:
        if self._f:
            self._finish_chunk()
        self._chunk += 1
        self._f = open(self._chunk_path(self._chunk), "wb")
        self._counts.append([0, 0])
        self._in_chunk = 0
        self._f.write(self._header(self._chunk, 0, 0))
        if self._chunk == 0:
            cam = self.info.camera
            self._f.write(_rawi(self.info))
            name = (cam.model or "rawvid synthetic").encode()[:31]
            self._f.write(_block(b"IDNT", name.ljust(32, b"\0") + struct.pack("<I", 0) + cam.serial.encode()[:31].ljust(32, b"\0")))
            self._f.write(_block(b"EXPO", struct.pack("<4IQ", 0, cam.iso or 100, cam.iso or 100, 0, cam.shutter_us or 20000)))
            n = self.info.as_shot_neutral
            gains = (int(n[0] * 1024), 1024, int(n[2] * 1024)) if n else (1024, 1024, 1024)
            self._f.write(_block(b"WBAL", struct.pack("<7I", 6 if n else 0, 5500, *gains, 0, 0)))
            vers = b"rawvid MLVWriter\0"
            self._f.write(_block(b"VERS", struct.pack("<I", len(vers)) + vers))
            if self.audio:
                a = self.audio
                self._f.write(_block(b"WAVI", struct.pack("<HHIIHH", a.format, a.channels, a.rate,
                                                           a.bytes_per_second, a.block_align, a.bits)))

    def _finish_chunk(self) -> None:
        assert self._f is not None
        v, a = self._counts[self._chunk]
        self._f.seek(0)
        self._f.write(self._header(self._chunk, v, a))
        self._f.close()
        self._f = None

    def write_frame(self, mosaic: np.ndarray, number: int, timestamp_us: int | None = None) -> None:
        """Append one frame (any frame number: out-of-order recordings are legal)."""
        if mosaic.shape != (self.info.height, self.info.width):
            raise ValueError(f"frame shape {mosaic.shape} does not match the clip")
        if self.chunk_frames and self._in_chunk >= self.chunk_frames:
            self._open_chunk()
        data = encode_lj92(mosaic, self.info.bits) if self.lj92 else pack_bits(mosaic, self.info.bits)
        ts = int(number * 1e6 / self.info.fps) if timestamp_us is None else timestamp_us
        head = struct.pack("<IHHHHI", number, 0, 0, 0, 0, self.frame_space)
        assert self._f is not None
        self._f.write(_block(b"VIDF", head + b"\0" * self.frame_space + data, ts))
        self._counts[self._chunk][0] += 1
        self._in_chunk += 1

    def write_audio(self, pcm: bytes, number: int, timestamp_us: int = 0) -> None:
        """Append one AUDF block of interleaved PCM samples."""
        assert self._f is not None and self.audio is not None
        self._f.write(_block(b"AUDF", struct.pack("<II", number, 0) + pcm, timestamp_us))
        self._counts[self._chunk][1] += 1

    def close(self) -> None:
        if self._f:
            self._f.write(_block(b"NULL", b"\0" * 8))
            self._finish_chunk()
            # as Magic Lantern does when a recording ends: the first file's header counts the files
            with open(self._chunk_path(0), "r+b") as f:
                f.seek(MLVI_FILE_COUNT_AT)
                f.write(struct.pack("<H", self._chunk + 1))

    def __enter__(self) -> "MLVWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
