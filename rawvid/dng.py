"""DNG: write one Bayer frame with tifffile, read single DNGs and CinemaDNG-style folders.

Written files hold one image in one strip (Resolve rejects multi-strip DNGs and
Lightroom rejects mixed strips/tiles), at the source bit depth: uncompressed
frames are bit-packed (BitsPerSample 14 for a 14-bit clip), lossless-JPEG
frames carry LJ92 with the source precision. Every file is checked by the test
suite to open in LibRaw (rawpy) and return the mosaic bit-exactly.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .atomic import atomic_write
from .errors import FormatError, RawvidError
from .meta import CFA_PATTERNS, MAX_SIDE, Camera, Frame, RawInfo, cfa_from_colors

# TIFF/DNG tag codes (DNG 1.4 specification)
NEW_SUBFILE_TYPE = 254
MAKE = 271
MODEL = 272
SOFTWARE = 305
DATETIME = 306
CFA_REPEAT_PATTERN_DIM = 33421
CFA_PATTERN = 33422
EXPOSURE_TIME = 33434
FNUMBER = 33437
ISO_SPEED = 34855
FOCAL_LENGTH = 37386
DNG_VERSION = 50706
DNG_BACKWARD_VERSION = 50707
UNIQUE_CAMERA_MODEL = 50708
CFA_PLANE_COLOR = 50710
CFA_LAYOUT = 50711
BLACK_LEVEL_REPEAT_DIM = 50713
BLACK_LEVEL = 50714
WHITE_LEVEL = 50717
COLOR_MATRIX1 = 50721
COLOR_MATRIX2 = 50722
AS_SHOT_NEUTRAL = 50728
CALIBRATION_ILLUMINANT1 = 50778
CALIBRATION_ILLUMINANT2 = 50779
CAMERA_SERIAL = 50735
NOISE_PROFILE = 51041
ORIENTATION = 274
EXIF_IFD = 34665
EXIF_PLACEHOLDER = 34666  # an unassigned code just after ExifIFD (see _append_exif)
EXIF_VERSION = 36864
DATETIME_ORIGINAL = 36867
ANALOG_BALANCE = 50727
BASELINE_EXPOSURE = 50730
DEFAULT_CROP_ORIGIN = 50719
DEFAULT_CROP_SIZE = 50720
ACTIVE_AREA = 50829
TIME_CODES = 51043
FRAME_RATE = 51044

# TIFF field types
BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL, DOUBLE = 1, 2, 3, 4, 5, 7, 10, 12
PHOTOMETRIC_CFA = 32803
COMPRESSION_LJ92 = 7


def _rational(x: float, limit: int = 1_000_000) -> tuple[int, int]:
    """x as a TIFF RATIONAL; the denominator shrinks so that the numerator fits 32 bits."""
    limit = max(1, min(limit, int((2**31 - 1) // max(abs(x), 1.0))))
    f = Fraction(x).limit_denominator(limit)
    return f.numerator, f.denominator


def _srationals(values, den: int = 10000) -> tuple[int, ...]:
    return tuple(v for x in values for v in (int(round(x * den)), den))


def timecode_fields(index: int, fps: float) -> tuple[int, int, int, int, bool]:
    """(hours, minutes, seconds, frames, drop-frame) of a clip's frame ``index`` at ``fps``.

    Counted from the frame index at the exact rational rate, never from rounded timestamps:
    23.976 and 29.97 count at their nominal 24 and 30; 29.97 and 59.94 use SMPTE drop-frame
    numbering (frame labels 0-1, or 0-3, skipped each minute except every tenth). Above 30
    frames per second the frames field counts frame pairs (or larger groups), as SMPTE 12M
    does for high rates, so it always fits its two BCD digits.
    """
    from .video import fps_fraction

    rate = fps_fraction(fps)
    nominal = max(1, round(rate))
    n = max(0, int(index))
    drop = rate.denominator == 1001 and nominal in (30, 60)
    if drop:
        d = nominal // 15  # labels skipped a minute: 2 at 29.97, 4 at 59.94
        per10, per1 = nominal * 600 - 9 * d, nominal * 60 - d
        tens, rem = divmod(n, per10)
        n += 9 * d * tens + (d * ((rem - d) // per1) if rem > d else 0)
    group = -(-nominal // 30)  # frames per count of the frames field
    seconds = n // nominal
    return seconds // 3600 % 24, seconds // 60 % 60, seconds % 60, (n % nominal) // group, drop


def _timecode(index: int, fps: float) -> bytes:
    """SMPTE 12M timecode (DNG TimeCodes tag: 8 bytes, BCD frames/seconds/minutes/hours, the
    drop-frame flag in bit 6 of the frames byte) of frame ``index``."""
    hh, mm, ss, ff, drop = timecode_fields(index, fps)
    bcd = [((v // 10) << 4) | (v % 10) for v in (ff, ss, mm, hh)]
    bcd[0] |= 0x40 if drop else 0
    return bytes(bcd) + b"\0" * 4


def exif_entries(cam: Camera) -> list[tuple[int, int, int, bytes]]:
    """The Exif IFD's entries (tag, type, count, little-endian value bytes), sorted by tag: exposure,
    f-number, ISO, focal length and date/time original belong there, not in IFD0 (exiftool -validate)."""
    import struct

    def rational(num_den):
        return struct.pack("<II", *num_den)

    out = [(EXIF_VERSION, UNDEFINED, 4, b"0231")]
    if cam.shutter_us:
        out.append((EXPOSURE_TIME, RATIONAL, 1, rational((min(int(cam.shutter_us), 2**32 - 1), 1_000_000))))
    if cam.aperture:
        out.append((FNUMBER, RATIONAL, 1, rational(_rational(cam.aperture, 1000))))
    if cam.iso:
        out.append((ISO_SPEED, SHORT, 1, struct.pack("<H", min(int(cam.iso), 65535))))
    if cam.datetime:
        text = _ascii(cam.datetime).encode()[:19] + b"\0"
        out.append((DATETIME_ORIGINAL, ASCII, len(text), text))
    if cam.focal_length_mm:
        out.append((FOCAL_LENGTH, RATIONAL, 1, rational(_rational(cam.focal_length_mm, 1000))))
    return sorted(out) if len(out) > 1 else []


def _append_exif(data: bytes, entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """Append an Exif IFD to a little-endian classic TIFF and point IFD0 at it.

    tifffile refuses to write an ExifIFD tag, so IFD0 carries a placeholder entry (EXIF_PLACEHOLDER,
    next to 34665 so the entries stay sorted) that becomes the pointer here."""
    import struct

    if data[:4] != b"II*\0":
        raise ValueError("expected a little-endian classic TIFF")
    ifd0 = struct.unpack_from("<I", data, 4)[0]
    (n,) = struct.unpack_from("<H", data, ifd0)
    entry = next((ifd0 + 2 + 12 * i for i in range(n)
                  if struct.unpack_from("<H", data, ifd0 + 2 + 12 * i)[0] == EXIF_PLACEHOLDER), None)
    if entry is None:
        raise ValueError("IFD0 has no ExifIFD placeholder to patch")
    start = len(data) + (len(data) & 1)  # IFDs start on a word boundary
    area = start + 2 + 12 * len(entries) + 4  # values longer than 4 bytes follow the IFD
    ifd, values = bytearray(struct.pack("<H", len(entries))), bytearray()
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, area + len(values))
            values += value + b"\0" * (len(value) & 1)
    ifd += b"\0\0\0\0"  # no next IFD
    out = bytearray(data) + b"\0" * (start - len(data)) + ifd + values
    struct.pack_into("<HHII", out, entry, EXIF_IFD, LONG, 1, start)
    return bytes(out)


def _ascii(text: str) -> str:
    """TIFF strings are 7-bit ASCII: anything else (a camera name from a file) becomes '?'."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def dng_tags(info: RawInfo, frame_index: int | None = None) -> list[tuple]:
    """The DNG tags rawvid writes, as tifffile ``extratags``."""
    cam = info.camera
    model = _ascii(cam.model or "rawvid")
    tags = [
        (NEW_SUBFILE_TYPE, LONG, 1, 0, True),
        (DNG_VERSION, BYTE, 4, (1, 4, 0, 0), True),
        (DNG_BACKWARD_VERSION, BYTE, 4, (1, 1, 0, 0), True),
        (UNIQUE_CAMERA_MODEL, ASCII, 0, model, True),
        (MAKE, ASCII, 0, _ascii(cam.make) or model.split(" ", 1)[0], True),
        (MODEL, ASCII, 0, model, True),
        (CFA_REPEAT_PATTERN_DIM, SHORT, 2, (2, 2), True),
        (CFA_PATTERN, BYTE, 4, CFA_PATTERNS[info.cfa], True),
        (CFA_PLANE_COLOR, BYTE, 3, (0, 1, 2), True),
        (CFA_LAYOUT, SHORT, 1, 1, True),
        (BLACK_LEVEL_REPEAT_DIM, SHORT, 2, (1, 1), True),
        (BLACK_LEVEL, LONG, 1, int(info.black), True),
        (WHITE_LEVEL, LONG, 1, int(info.white), True),
        (CALIBRATION_ILLUMINANT1, SHORT, 1, int(info.calibration_illuminant), True),
        (AS_SHOT_NEUTRAL, RATIONAL, 3, tuple(v for x in info.neutral for v in _rational(x)), True),
        (FRAME_RATE, SRATIONAL, 1, _rational(info.fps, 100000), True),
        # what raw developers and Resolve look for besides the essentials (as Magic Lantern's own DNGs
        # carry them): the whole mosaic is active and the default crop, upright, no analog gains,
        # no exposure offset
        (ORIENTATION, SHORT, 1, 1, True),
        (ACTIVE_AREA, LONG, 4, (0, 0, int(info.height), int(info.width)), True),
        (DEFAULT_CROP_ORIGIN, LONG, 2, (0, 0), True),
        (DEFAULT_CROP_SIZE, LONG, 2, (int(info.width), int(info.height)), True),
        (ANALOG_BALANCE, RATIONAL, 3, (1, 1, 1, 1, 1, 1), True),
        (BASELINE_EXPOSURE, SRATIONAL, 1, (0, 1), True),
    ]
    if info.color_matrix is not None:
        tags.append((COLOR_MATRIX1, SRATIONAL, 9, _srationals(info.color_matrix), True))
        if info.color_matrix2 is not None and info.calibration_illuminant2 is not None:
            tags.append((COLOR_MATRIX2, SRATIONAL, 9, _srationals(info.color_matrix2), True))
            tags.append((CALIBRATION_ILLUMINANT2, SHORT, 1, int(info.calibration_illuminant2), True))
    if info.noise_profile is not None:
        tags.append((NOISE_PROFILE, DOUBLE, 2, tuple(float(v) for v in info.noise_profile), True))
    if cam.serial:
        tags.append((CAMERA_SERIAL, ASCII, 0, _ascii(cam.serial), True))
    if cam.datetime:
        tags.append((DATETIME, ASCII, 0, _ascii(cam.datetime), True))
    if exif_entries(cam):
        tags.append((EXIF_PLACEHOLDER, LONG, 1, 0, True))  # becomes the ExifIFD pointer in _append_exif
    if frame_index is not None:
        tags.append((TIME_CODES, BYTE, 8, tuple(_timecode(frame_index, info.fps)), True))
    return tags


def encode_dng(mosaic: np.ndarray, info: RawInfo, *, compress: bool = False,
               frame_index: int | None = None) -> bytes:
    """One frame as DNG bytes: bit-packed at ``info.bits`` or lossless JPEG (``compress``);
    ``frame_index``: its place in the clip, for the TimeCodes tag."""
    import tifffile

    from . import __version__, lj92

    mosaic = np.ascontiguousarray(mosaic, dtype=np.uint16)
    h, w = mosaic.shape
    if (h, w) != (info.height, info.width):
        raise ValueError(f"mosaic {w}x{h} does not match metadata {info.width}x{info.height}")
    buf = io.BytesIO()
    common = dict(photometric=PHOTOMETRIC_CFA, bitspersample=info.bits, extratags=dng_tags(info, frame_index),
                  metadata=None, software=f"rawvid {__version__}", rowsperstrip=h, byteorder="<",
                  resolution=(180, 180), resolutionunit=2)  # 180 dpi, inches: what Magic Lantern's DNGs say
    if compress:
        payload = lj92.encode(mosaic, info.bits)  # predictor 1: what darktable's rawspeed decodes
        tifffile.imwrite(buf, data=iter([payload]), shape=(h, w), dtype="uint16",
                         compression=COMPRESSION_LJ92, **common)
    elif info.bits == 16:
        tifffile.imwrite(buf, mosaic, **{**common, "bitspersample": None})
    else:
        tifffile.imwrite(buf, mosaic, **common)
    entries = exif_entries(info.camera)
    return _append_exif(buf.getvalue(), entries) if entries else buf.getvalue()


def write_dng(path: str | os.PathLike, mosaic: np.ndarray, info: RawInfo, *, compress: bool = False,
              frame_index: int | None = None) -> int:
    """Write one frame as a DNG file atomically (temp file, then rename); returns its size."""
    data = encode_dng(mosaic, info, compress=compress, frame_index=frame_index)
    with atomic_write(path) as f:
        f.write(data)
    return len(data)


# --------------------------------------------------------------------------- reading
def _tag(page, code, default=None):
    t = page.tags.get(code)
    return default if t is None else t.value


def _floats(value) -> tuple[float, ...] | None:
    """A (S)RATIONAL tag as floats: tifffile returns a flat (num, den, num, den...) tuple."""
    if value is None:
        return None
    v = list(value)
    if v and isinstance(v[0], (tuple, list)):
        v = [x for pair in v for x in pair]
    return tuple(v[i] / v[i + 1] if v[i + 1] else 0.0 for i in range(0, len(v) - 1, 2))


def _raw_page(tif):
    """The full-resolution CFA image: the IFD (or SubIFD) with NewSubfileType 0 and photometric CFA."""
    pages = list(tif.pages)
    for p in list(pages):
        pages.extend(getattr(p, "pages", None) or [])
    for p in pages:
        if p.photometric == PHOTOMETRIC_CFA and _tag(p, NEW_SUBFILE_TYPE, 0) == 0:
            return p
    return None


def read_dng_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, RawInfo]:
    """Decode a DNG: pixels through LibRaw (any compression, linearisation), tags through tifffile."""
    import rawpy
    import tifffile

    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
        page = _raw_page(tif)
    except Exception as exc:
        raise FormatError(name, f"not a DNG file ({exc})") from None
    if page is None or _tag(page, DNG_VERSION) is None and _tag(tif.pages[0], DNG_VERSION) is None:
        raise FormatError(name, "not a DNG file (no CFA image with DNGVersion)")
    root = tif.pages[0]
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            mosaic = raw.raw_image_visible.copy()
            colors = raw.raw_colors_visible[:2, :2].copy()
            desc = raw.color_desc.decode()
            black = raw.black_level_per_channel
            white = int(raw.white_level)
    except Exception as exc:
        raise FormatError(name, f"LibRaw cannot decode this DNG ({exc})") from None
    h, w = mosaic.shape
    if h < 2 or w < 2 or h > MAX_SIDE or w > MAX_SIDE:
        raise FormatError(name, f"unsupported frame size {w}x{h}")
    if h % 2 or w % 2:  # keep whole Bayer quads
        h, w = h - h % 2, w - w % 2
        mosaic = np.ascontiguousarray(mosaic[:h, :w])
    rgb_index = {"R": 0, "G": 1, "B": 2}
    try:
        cfa = cfa_from_colors(tuple(rgb_index[desc[c]] for c in colors.reshape(-1)))
    except (KeyError, ValueError, IndexError):
        raise FormatError(name, f"not a Bayer RGB sensor (colours {desc!r})") from None
    tag_bits = int(page.bitspersample)
    bits = max(tag_bits if tag_bits <= 16 else 16, white.bit_length())
    bits = min(16, bits)
    make = str(_tag(root, MAKE, "") or "").strip()
    model = str(_tag(root, MODEL, "") or _tag(root, UNIQUE_CAMERA_MODEL, "") or "").strip()
    exif = _tag(root, 34665) or {}
    shutter = _floats(_tag(root, EXPOSURE_TIME) or exif.get("ExposureTime"))
    iso = _tag(root, ISO_SPEED) or exif.get("ISOSpeedRatings")
    if isinstance(iso, (tuple, list)):
        iso = iso[0] if iso else None
    fps = _floats(_tag(root, FRAME_RATE))
    matrix = _floats(_tag(root, COLOR_MATRIX1))
    matrix2 = _floats(_tag(root, COLOR_MATRIX2))
    illum2 = _tag(root, CALIBRATION_ILLUMINANT2)
    second = bool(matrix and len(matrix) == 9 and matrix2 and len(matrix2) == 9 and isinstance(illum2, int)
                  and all(abs(v) <= 1e4 for v in matrix2) and 0 <= illum2 <= 65535)
    neutral = _floats(_tag(root, AS_SHOT_NEUTRAL))
    camera = Camera(
        make=make, model=model, serial=str(_tag(root, CAMERA_SERIAL, "") or ""),
        iso=int(iso) if iso else None,
        shutter_us=int(round(shutter[0] * 1e6)) if shutter and shutter[0] > 0 else None,
        datetime=str(_tag(root, DATETIME, "") or "") or None,
    )
    info = RawInfo(
        width=w, height=h, bits=bits, black=int(round(float(np.mean(black)))), white=white, cfa=cfa,
        color_matrix=matrix if matrix and len(matrix) == 9 else None,
        calibration_illuminant=int(_tag(root, CALIBRATION_ILLUMINANT1, 21) or 21),
        as_shot_neutral=neutral if neutral and len(neutral) == 3 and all(v > 0 for v in neutral) else None,
        fps=fps[0] if fps and fps[0] > 0 else 25.0, camera=camera,
        color_matrix2=matrix2 if second else None, calibration_illuminant2=int(illum2) if second else None,
    )
    return mosaic.astype(np.uint16, copy=False), info


def read_dng(path: str | os.PathLike) -> tuple[np.ndarray, RawInfo]:
    """Read one DNG file: (mosaic uint16 HxW, metadata)."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(p, "no such file")
    return read_dng_bytes(p.read_bytes(), str(p))


_NUM = re.compile(r"(\d+)(?!.*\d)")


def frame_number(name: str) -> int | None:
    """The frame number in a CinemaDNG name: the last run of digits (``clip_000123.dng`` -> 123)."""
    m = _NUM.search(Path(name).stem)
    return int(m.group(1)) if m else None


def _check_geometry(files: list[Path]) -> None:
    """Refuse a sequence whose frames differ in size, reading only the TIFF headers."""
    import tifffile

    first = None
    for p in files:
        try:
            with tifffile.TiffFile(p) as tif:
                page = _raw_page(tif)
                shape = None if page is None else tuple(page.shape[:2])
        except Exception as exc:
            raise FormatError(p, f"not a DNG file ({exc})") from None
        if shape is None:
            raise FormatError(p, "not a DNG file (no CFA image)")
        if first is None:
            first = (p, shape)
        elif shape != first[1]:
            raise FormatError(p, f"frame is {shape[1]}x{shape[0]}, {first[0].name} is "
                              f"{first[1][1]}x{first[1][0]} (DNG frames of mixed geometry)")


@dataclass
class DNGSequence:
    """A folder of DNG frames (CinemaDNG style), ordered by the frame number in each name."""

    folder: Path
    files: list[Path]
    info: RawInfo

    @classmethod
    def open(cls, folder: str | os.PathLike, fps: float | None = None) -> "DNGSequence":
        folder = Path(folder)
        if not folder.is_dir():
            raise FormatError(folder, "not a folder of DNG frames")
        files = [p for p in folder.iterdir() if p.suffix.lower() == ".dng" and p.is_file()]
        if not files:
            raise FormatError(folder, "no .dng files in this folder")
        files.sort(key=lambda p: (frame_number(p.name) is None, frame_number(p.name) or 0, p.name))
        _check_geometry(files)
        _, info = read_dng(files[0])
        if fps:
            info.fps = fps
        return cls(folder, files, info)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> np.ndarray:
        mosaic, info = read_dng(self.files[i])
        if (info.width, info.height) != (self.info.width, self.info.height):
            raise RawvidError(self.files[i], f"frame is {info.width}x{info.height}, the sequence is "
                              f"{self.info.width}x{self.info.height} (DNG frames of mixed geometry)")
        if info.cfa != self.info.cfa or info.bits != self.info.bits:
            raise RawvidError(self.files[i], f"frame is {info.bits}-bit {info.cfa}, the sequence is "
                              f"{self.info.bits}-bit {self.info.cfa}")
        return mosaic

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(max(0, start), stop):
            n = frame_number(self.files[i].name)
            yield Frame(i, i if n is None else n, int(round(i * 1e6 / self.info.fps)), self.read(i))

    def timestamps(self) -> list[int]:
        return [int(round(i * 1e6 / self.info.fps)) for i in range(len(self))]
