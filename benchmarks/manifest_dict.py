"""Build the preset dictionary the .rvd manifest is deflated against (format 4), and measure it.

A short clip's manifest is mostly the same text every time (keys, codec names, x265's option
string, the residual mapping's description); deflated alone it was 1.9 KB of a 16-frame 512x320
clip's 3.2 KB RAW part at the lowest --target-psnr. zlib's preset dictionary (RFC 1950 FDICT)
lets the deflater refer back into text the decoder already has, so only what differs is stored.

This script encodes the shipped example clip in each mode rawvid has (paper's mode, refinement,
per-frame calibration, keyframes, RAW layers: target with the chain and with direct coding,
fixed CRF, lossless), strips what is random (CRC-32s, hashes, the seal), and writes the manifests'
JSON, most common mode last (deflate's nearest matches are the cheapest), as
``rawvid/manifest_zdict.py``. The dictionary is then a format constant: once a file has been
written with it, it never changes (a new dictionary is a new format version, the old kept for
reading). ``--measure`` deflates the manifests of other .rvd files with and without it.

    python benchmarks/manifest_dict.py --write            # rebuild (a format change: think first)
    python benchmarks/manifest_dict.py --write6           # format 6's: format 4's plus the transformed layers

Format 6 (the RAW layer's Hadamard transform, session 19) names its layer's transform, layout and
mapping in words format 4's dictionary does not hold (about 100 bytes deflated); its dictionary
(``rawvid/manifest_zdict6.py``) is format 4's followed by the RAW-layer modes' manifests again,
written by the encoder of format 6 (deflate looks back 32 KB: the two fit).
    python benchmarks/manifest_dict.py --measure a.rvd b.rvd [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from rawvid.manifest_zdict import ZDICT as ZDICT4
except ImportError:  # rebuilding format 4's from scratch
    ZDICT4 = b""
EXAMPLE = ROOT / "examples" / "colorchart_pan.MLV"

#: (label, encode options as keyword arguments), least common first
MODES = [
    ("paper's mode, lossless sRGB, keyframes every 4", dict(keyframe_interval=4, lossless_video=True, refine="off")),
    ("paper's mode, per-frame calibration", dict(calibration="per-frame", refine="off")),
    ("lossless RAW layer", dict(crf=32, layer=dict(codec="ffv1"))),
    ("RAW layer at a fixed CRF", dict(crf=32, layer=dict(crf=20.0))),
    ("RAW layer, direct coding", dict(crf=32, layer=dict(target_psnr=50.0, predictor="direct"))),
    ("default (block refinement)", dict()),
    ("RAW layer at a target, sRGB CRF chosen", dict(crf=32, layer=dict(target_psnr=48.0), choose_srgb=True)),
]


def _scrub(value):
    """The manifest without what is random: checksums, hashes and dates emptied, names kept."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "crc32":
                out[k] = []
            elif k in ("attachments", "tracks") and isinstance(v, dict):
                out[k] = {name: ("" if k == "attachments" else []) for name in v}
            elif k in ("manifest_sha256", "created_utc"):
                out[k] = ""
            else:
                out[k] = _scrub(v)
        return out
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


#: the modes whose manifests changed in format 6 (least common first)
MODES6 = [m for m in MODES if "layer" in m[1] and m[1]["layer"].get("codec") != "ffv1"]


def build(frames: int = 6, modes=MODES) -> bytes:
    from rawvid.codec import EncodeOptions, encode
    from rawvid.container import RvdFile
    from rawvid.rawlayer import LayerSettings
    from rawvid.source import open_source
    from rawvid.srgb_pilot import CANDIDATE_CRFS
    from rawvid.video import VideoSettings

    texts = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw in modes:
            video = VideoSettings.make(lossless=True) if kw.get("lossless_video") else VideoSettings.make(
                crf=kw.get("crf", 16))
            opts = EncodeOptions(video=video, stop=frames, keyframe_interval=kw.get("keyframe_interval", 0),
                                 calibration=kw.get("calibration", "auto"), refine=kw.get("refine", "auto"),
                                 raw_layer=LayerSettings(**kw["layer"]) if "layer" in kw else None,
                                 srgb_crfs=CANDIDATE_CRFS if kw.get("choose_srgb") else ())
            out = Path(tmp) / "d.rvd"
            with open_source(EXAMPLE) as src:
                encode(src, out, opts, force=True)
            texts.append(json.dumps(_scrub(RvdFile(out).manifest), separators=(",", ":")))
            print(f"{label}: {len(texts[-1])} characters")
    return "\n".join(texts).encode()


def write_module(zdict: bytes, path: Path) -> None:
    body = zdict.decode()
    lines = [body[i: i + 96] for i in range(0, len(body), 96)]
    text = ['"""The preset dictionary of format 4\'s deflated manifest (RFC 1950 FDICT): a format constant.',
            "",
            "Written by benchmarks/manifest_dict.py from the shipped example clip's manifests in each mode;",
            "never edit it: files name it by its Adler-32 (ZDICT_ID), and a new one is a new format version.",
            '"""', "", "ZDICT = (", *[f"    {json.dumps(line)}" for line in lines], ").encode()",
            f"ZDICT_ID = 0x{zlib.adler32(zdict):08x}", ""]
    path.write_text("\n".join(text))


def write_module6(zdict: bytes, path: Path) -> None:
    body = zdict.decode()
    lines = [body[i: i + 96] for i in range(0, len(body), 96)]
    text = ['"""The preset dictionary of format 6\'s deflated manifest: format 4\'s (rawvid.manifest_zdict) and then',
            "the transformed RAW layer's manifests. Written by benchmarks/manifest_dict.py --write6; a format constant.",
            '"""', "", "import zlib", "", "from .manifest_zdict import ZDICT", "",
            "ZDICT6 = ZDICT + b\"\\n\" + (", *[f"    {json.dumps(line)}" for line in lines], ").encode()",
            "ZDICT6_ID = zlib.adler32(ZDICT6)", ""]
    path.write_text("\n".join(text))


def measure(paths: list[Path]) -> list[dict]:
    from rawvid.container import pack_manifest, read_manifest_text

    rows = []
    for p in paths:
        text = read_manifest_text(p.read_bytes())
        plain = len(zlib.compress(text, 9))
        rows.append({"file": p.name, "json": len(text), "deflated": plain, "with_dictionary": len(pack_manifest(text)),
                     "file_bytes": p.stat().st_size})
        print(rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rebuild rawvid/manifest_zdict.py")
    ap.add_argument("--write6", action="store_true", help="rebuild rawvid/manifest_zdict6.py")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--measure", nargs="*", type=Path, default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.write:
        zdict = build(args.frames)
        write_module(zdict, ROOT / "rawvid" / "manifest_zdict.py")
        print(f"{len(zdict)} bytes, Adler-32 {zlib.adler32(zdict):08x}")
    if args.write6:
        zdict = build(args.frames, MODES6)
        write_module6(zdict, ROOT / "rawvid" / "manifest_zdict6.py")
        print(f"{len(ZDICT4) + 1 + len(zdict)} bytes")
    if args.measure:
        rows = measure(args.measure)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
