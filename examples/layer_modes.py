"""Encode the shipped example clip in each of rawvid's modes and print what each costs and keeps.

The paper's mode (lossless DNG keyframe), the same with lossy keyframes (``--keyframe-psnr auto``), a
RAW layer 3 dB under the clip's noise floor (``--target-psnr floor-3``) and the lossless layer, each
encoded, decoded back to DNGs and scored against the source: bits per Bayer sample of the whole
file and of its RAW part (everything but the sRGB preview), and the pooled black-subtracted PSNR.

    python examples/layer_modes.py [--frames 8]
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from rawvid import DecodeOptions, EncodeOptions, LayerSettings, MLVReader, decode, encode, frame_name, open_rvd, \
    read_dng

CLIP = Path(__file__).resolve().parent / "colorchart_pan.MLV"
# each as `rawvid encode` makes it with the same options (the sRGB's CRF left to the mode: 16 in the
# paper's mode, chosen by the encoder under a target, 32 beside the lossless layer)
MODES = {
    "paper's mode (lossless DNG keyframe)": EncodeOptions(refine="off", calibration="keyframe"),
    "paper's mode, --keyframe-psnr auto": EncodeOptions(refine="off", calibration="keyframe",
                                                        raw_layer=LayerSettings(keyframes_only=True)),
    "--target-psnr floor-3": EncodeOptions(raw_layer=LayerSettings(floor_offset=-3.0)),
    "--lossless-raw": EncodeOptions(raw_layer=LayerSettings(codec="ffv1")),
}


def pooled_psnr(decoded: list[np.ndarray], truth: list[np.ndarray], black: int, white: int) -> float:
    """Black-subtracted PSNR over every frame's squared error (lossless: infinite)."""
    mse = np.mean([np.mean((d.astype(np.float64) - t) ** 2) for d, t in zip(decoded, truth)])
    return math.inf if mse == 0 else 10 * math.log10((white - black) ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()
    with MLVReader(CLIP) as clip:
        info = clip.info
        truth = [f.mosaic.copy() for f in clip.frames(0, args.frames)]
    samples = info.width * info.height * len(truth)
    print(f"{CLIP.name}: {len(truth)} frames {info.width}x{info.height} {info.bits}-bit")
    with tempfile.TemporaryDirectory() as td:
        for k, (name, opts) in enumerate(MODES.items()):
            opts.stop = args.frames
            rvd = Path(td) / f"clip{k}.rvd"
            res = encode(CLIP, rvd, opts)
            f = open_rvd(rvd)
            out = Path(td) / f"frames{k}"
            dec = decode(rvd, out, DecodeOptions())
            decoded = [read_dng(out / frame_name(dec.clip, i))[0] for i in range(len(truth))]
            p = pooled_psnr(decoded, truth, info.black, info.white)
            lay = f.manifest.get("raw_layer") or {}
            extra = f", target {lay['target_psnr']} dB" if lay.get("target_psnr") else ""
            print(f"{name:40s} file {8 * f.sizes()['file_bytes'] / samples:.3f} bits/sample, RAW part "
                  f"{f.sizes()['raw_part_bits_per_pixel']:.3f}, PSNR {'lossless' if math.isinf(p) else f'{p:.2f} dB'}"
                  f"{extra} ({res.seconds:.1f} s)")


if __name__ == "__main__":
    main()
