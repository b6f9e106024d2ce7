"""The .rvd manifest's schema: every field's type and range, checked on open, before anything is allocated.

The manifest is untrusted input: ``RvdFile`` (which ``info`` and ``decode`` both open) runs
:func:`validate` right after parsing it, so no later code meets a missing key, a wrong type, a
length that disagrees with the frame count, or a size the file could not possibly hold. The RAW
layer's own fields are checked in detail by ``rawlayer.parse_layer`` (called by decode).
"""
from __future__ import annotations

import math
from typing import Any

from .highlights import MODE as HIGHLIGHTS
from .errors import FormatError
from .meta import CFA_PATTERNS, MAX_FPS, MAX_SIDE, SUPPORTED_BITS

#: a frame costs at least this many bytes of the file (its video packet and framing): a manifest
#: claiming more frames than the file could hold is refused before any per-frame list is built
MIN_BYTES_PER_FRAME = 8
#: colour matrix and neutral entries a DNG's rationals can carry (real ones are within +-10)
DNG_MATRIX_LIMIT = 1e4


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite JSON number (not a bool): what a manifest's numeric fields must be."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def rounded(report: Any, digits: int = 3) -> Any:
    """An encoder's report for the manifest with its floats rounded (whole ones as ints): what it
    says to a reader survives, the 16 digits of a float's repr are bytes in every file."""
    if isinstance(report, dict):
        return {k: rounded(v, digits) for k, v in report.items()}
    if isinstance(report, (list, tuple)):
        return [rounded(v, digits) for v in report]
    if isinstance(report, float) and math.isfinite(report):
        return int(report) if report.is_integer() else round(report, digits)
    return report


def validate(m: Any, path, file_size: int) -> None:
    """Raise FormatError (naming ``path`` and the field) unless ``m`` is a well-formed manifest."""

    def bad(field: str, what: str) -> FormatError:
        return FormatError(path, f"manifest {field}: {what}")

    if not isinstance(m, dict):
        raise bad("", "not an object")

    def need_int(key: str, lo: int, hi: int) -> int:
        v = m.get(key)
        if not _is_int(v) or not lo <= v <= hi:
            raise bad(key, f"must be an integer in {lo}..{hi}, not {str(v)[:40]!r}")
        return v

    count = need_int("frame_count", 1, max(1, file_size // MIN_BYTES_PER_FRAME))
    width = need_int("width", 2, MAX_SIDE)
    height = need_int("height", 2, MAX_SIDE)
    if width % 2 or height % 2:
        raise bad("width/height", f"{width}x{height} is not whole Bayer quads")
    bits = m.get("bits")
    if not _is_int(bits) or bits not in SUPPORTED_BITS:
        raise bad("bits", f"must be one of {SUPPORTED_BITS}")
    black = need_int("black", 0, (1 << bits) - 2)
    need_int("white", black + 1, (1 << bits) - 1)
    if not isinstance(m.get("cfa"), str) or m["cfa"] not in CFA_PATTERNS:
        raise bad("cfa", f"must be one of {', '.join(CFA_PATTERNS)}")
    fps = m.get("fps")
    if not is_number(fps) or not 0 < fps <= MAX_FPS:
        raise bad("fps", f"must be a number in (0, {MAX_FPS:g}]")
    _numbers(m, "color_matrix", 9, bad, limit=DNG_MATRIX_LIMIT)  # SRATIONAL x/10000 in the DNG
    _numbers(m, "as_shot_neutral", 3, bad, positive=True, limit=DNG_MATRIX_LIMIT)
    _numbers(m, "noise_profile", 2, bad)
    floor = m.get("noise_floor_db")
    if floor is not None and not (is_number(floor) and 0 <= floor <= 200):
        raise bad("noise_floor_db", "must be a number in [0, 200] dB")
    _numbers(m, "color_matrix2", 9, bad, limit=DNG_MATRIX_LIMIT)
    if m.get("shadows") is not None:
        if m["shadows"] != "unclipped":
            raise bad("shadows", 'must be "unclipped" or absent')
        noise = m.get("noise_profile")
        if not (isinstance(noise, list) and all(is_number(v) and 0 <= v <= 1 for v in noise)):
            raise bad("noise_profile", "unclipped shadows need a noise profile of two numbers in [0, 1]")
    if m.get("highlights") is not None and m["highlights"] != HIGHLIGHTS:
        raise bad("highlights", f'must be "{HIGHLIGHTS}" or absent')
    if m.get("network_runtime") is not None and m["network_runtime"] not in ("torch", "onnxruntime"):
        raise bad("network_runtime", 'must be "torch" or "onnxruntime"')
    for key, optional in (("calibration_illuminant", False), ("calibration_illuminant2", True)):
        if key in m and not (optional and m[key] is None) and not (_is_int(m[key]) and 0 <= m[key] <= 65535):
            raise bad(key, "must be an EXIF light source code")
    for key in ("timestamps_us", "frame_numbers"):
        v = m.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or len(v) != count or not all(_is_int(x) and x >= 0 for x in v):
            raise bad(key, f"must list {count} non-negative integers")
    keyframes = m.get("keyframes", [])
    if not isinstance(keyframes, list) or not all(
            isinstance(k, dict) and _is_int(k.get("index")) and 0 <= k["index"] < count
            and isinstance(k.get("file"), str) for k in keyframes):
        raise bad("keyframes", f"must list {{index < {count}, file}} objects")
    _model_names(m, bad)
    _camera(m.get("camera"), bad)
    for key in ("attachments", "calibration", "refine", "video", "source", "render"):
        if key in m and m[key] is not None and not isinstance(m[key], dict):
            raise bad(key, "must be an object")
    att = m.get("attachments") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in att.items()):
        raise bad("attachments", "must map names to sha256 strings")
    for key in ("raw_layer", "audio"):
        if m.get(key) is not None and not isinstance(m[key], dict):
            raise bad(key, "must be an object")
    from .checksums import TRACKS_KEY, check_track_crcs

    # the tracks' CRC-32s live in the manifest from format 3 (format 2: an attachment); checked
    # here once, wherever they are, for the reader's track check to use as they are
    if TRACKS_KEY in m:
        check_track_crcs(m[TRACKS_KEY], path, TRACKS_KEY)
    elif m.get("format_version", 1) >= 3:
        raise bad(TRACKS_KEY, "is missing (format 3 records every packet's CRC-32)")
    src_bytes = (m.get("source") or {}).get("bytes")
    if src_bytes is not None and (not _is_int(src_bytes) or src_bytes < 0):
        raise bad("source.bytes", "must be a non-negative integer")
    cal = m.get("calibration") or {}
    for key in ("values_per_frame", "knots"):
        if cal.get(key) is not None and (not _is_int(cal[key]) or not 0 <= cal[key] <= 4096):
            raise bad(f"calibration.{key}", "must be an integer in 0..4096")
    if (cal.get("mode") or "keyframe") not in ("keyframe", "per-frame", "adaptive"):  # another: mis-decoded
        raise bad("calibration.mode", "must be keyframe, per-frame or adaptive")
    lay = m.get("raw_layer")
    if isinstance(lay, dict) and lay.get("transform", "none") != "none" and m.get("format_version", 1) < 6:
        raise bad("raw_layer.transform", "needs format version 6")
    if isinstance(m.get("refine"), dict) and m["refine"].get("gains") is not None and m.get("format_version", 1) < 5:
        raise bad("refine.gains", "needs format version 5")
    if cal.get("mode") == "adaptive":
        if m.get("format_version", 1) < 5:
            raise bad("calibration.mode", "adaptive needs format version 5")
        changes = cal.get("changes")
        if not isinstance(changes, list) or not all(_is_int(i) and 0 <= i < count for i in changes) \
                or any(b <= a for a, b in zip(changes, changes[1:])):
            raise bad("calibration.changes", f"must list increasing frame indices under {count}")


def _model_names(m: dict, bad) -> None:
    """A file may name a model, never point at one: the weights a decode loads come from models/ or
    $RAWVID_MODELS, or from the user's own --model, never from a path an .rvd carries."""
    from .weights import MODEL_NAME

    lay, refine = m.get("raw_layer"), m.get("refine")
    pred = lay.get("predictor") if isinstance(lay, dict) else None
    for where, name in (("model", m.get("model")),
                        ("raw_layer.predictor.model", pred.get("model") if isinstance(pred, dict) else None),
                        ("refine.model", refine.get("model") if isinstance(refine, dict) else None)):
        if name is None:
            continue
        if not isinstance(name, str):
            raise bad(where, "must be a string")
        if not MODEL_NAME.fullmatch(name) or name.endswith(".safetensors"):
            raise bad(where, f"must be a model name, not {name[:80]!r}")


def _numbers(m: dict, key: str, n: int, bad, positive: bool = False, limit: float = math.inf) -> None:
    """``n`` finite numbers (positive ones, within +-``limit``: what the DNG tag they go to can hold)."""
    v = m.get(key)
    if v is None:
        return
    if not isinstance(v, list) or len(v) != n or \
            not all(is_number(x) and (x > 0 or not positive) and abs(x) <= limit for x in v):
        raise bad(key, f"must be {n} finite{' positive' if positive else ''} numbers"
                  + (f" within +-{limit:g}" if limit < math.inf else ""))


def _camera(cam: Any, bad) -> None:
    if cam is None:
        return
    if not isinstance(cam, dict):
        raise bad("camera", "must be an object")
    for key in ("make", "model", "serial", "lens", "datetime"):
        if cam.get(key) is not None and not isinstance(cam[key], str):
            raise bad(f"camera.{key}", "must be a string")
    for key in ("iso", "shutter_us"):
        v = cam.get(key)
        if v is not None and (not _is_int(v) or v < 0):
            raise bad(f"camera.{key}", "must be a non-negative integer")
    for key in ("aperture", "focal_length_mm"):
        v = cam.get(key)
        if v is not None and (not is_number(v) or v < 0):
            raise bad(f"camera.{key}", "must be a non-negative number")
    unknown = set(cam) - {"make", "model", "serial", "lens", "datetime", "iso", "shutter_us", "aperture",
                          "focal_length_mm"}
    if unknown:
        raise bad("camera", f"unknown field(s) {', '.join(sorted(unknown))[:60]}")


def format_version_for(m: dict) -> int:
    """The lowest format version that describes a manifest: 6 with a transformed RAW layer, 5 with
    adaptive calibration or block gains, else 4."""
    if (m.get("raw_layer") or {}).get("transform", "none") != "none":
        return 6
    five = (m.get("calibration") or {}).get("mode") == "adaptive" or (m.get("refine") or {}).get("gains")
    return 5 if five else 4
