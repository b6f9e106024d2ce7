"""Decoded DNGs in the programs users open them with: exiftool, dcraw, darktable (rawspeed) and RawTherapee.

Two clips go through encode and decode: frames of the example (14-bit RGGB, Canon) and a
10-bit GRBG clip. Each decoded frame, plain and lossless-JPEG, must pass ``exiftool -validate``
without a warning; each program renders them, and the renders must exist, not be black, agree
with each other (the same pixels behind both) and not be tinted against the render of the
source frame itself (a DNG of the true RAW). Skipped where the programs are not installed
(Debian: libimage-exiftool-perl, dcraw, darktable, rawtherapee; .ci/run installs them)."""
from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest
from conftest import EXAMPLE, make_info, make_mosaic

from rawvid import MLVWriter
from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode, frame_name
from rawvid.dng import write_dng
from rawvid.mlv import MLVReader


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """{clip: folder with source.dng, plain.dng and lj92.dng of decoded frame 1}."""
    root = tmp_path_factory.mktemp("dng")
    # over 225 px each way: RawTherapee 5.9 refuses smaller DNGs whatever their content (its issue 6963)
    info10 = make_info(width=480, height=270, bits=10, cfa="GRBG")
    with MLVWriter(root / "grbg10.MLV", info10) as w:
        for i in range(3):
            w.write_frame(make_mosaic(info10, seed=i, shift=2 * i), number=i)
    out = {}
    for name, src in (("example", EXAMPLE), ("grbg10", root / "grbg10.MLV")):
        rvd = encode(src, root / f"{name}.rvd", EncodeOptions(stop=3, refine="off")).output
        folder = root / name
        for kind, compress in (("plain", False), ("lj92", True)):
            res = decode(rvd, root / f"{name}-{kind}", DecodeOptions(method="global-fit", stop=2, compress=compress))
            folder.mkdir(exist_ok=True)
            shutil.copy(res.output / frame_name(res.clip, 1), folder / f"{kind}.dng")
        with MLVReader(src) as clip:
            write_dng(folder / "source.dng", clip.read(1), clip.info, frame_index=1)
        out[name] = folder
    return out


@pytest.mark.parametrize("clip", ["example", "grbg10"])
def test_exiftool_validates_decoded_frames(frames, clip):
    if not shutil.which("exiftool"):
        pytest.skip("exiftool is not installed (Debian: libimage-exiftool-perl)")
    for kind in ("plain", "lj92"):
        out = subprocess.run(["exiftool", "-validate", "-warning", "-error", "-a", str(frames[clip] / f"{kind}.dng")],
                             capture_output=True, text=True, timeout=60).stdout
        assert "Validate                        : OK" in out and "Warning" not in out, out


@pytest.mark.parametrize("clip", ["example", "grbg10"])
def test_dcraw_reads_the_camera_iso_and_pattern(frames, clip):
    """Issue 13 item 2: with exposure and ISO in the Exif IFD, dcraw (LibRaw's ancestor) finds them."""
    if not shutil.which("dcraw"):
        pytest.skip("dcraw is not installed")
    src = EXAMPLE if clip == "example" else frames[clip].parent / "grbg10.MLV"
    with MLVReader(src) as c:
        info = c.info
    pattern = {"RGGB": "RG/GB", "GRBG": "GR/BG"}[info.cfa]
    for kind in ("plain", "lj92"):
        out = subprocess.run(["dcraw", "-i", "-v", str(frames[clip] / f"{kind}.dng")], capture_output=True, text=True,
                             timeout=60).stdout
        assert f"ISO speed: {info.camera.iso}" in out and f"Filter pattern: {pattern}" in out, out
        assert f"Camera: {info.camera.model}" in out and f"Full size:    {info.width} x {info.height}" in out, out


def _render(cmd: list[str], out_path, timeout: int = 300) -> np.ndarray:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    img = cv2.imread(str(out_path))
    assert img is not None, (res.returncode, res.stdout[-1500:], res.stderr[-1500:])
    return img.astype(np.float64)


#: each program's command line, rendering DNG to JPEG OUT (CONF: a private config folder)
PROGRAMS = {
    "darktable-cli": lambda dng, out, conf: ["darktable-cli", dng, out, "--core", "--configdir", conf],
    "rawtherapee-cli": lambda dng, out, conf: ["rawtherapee-cli", "-o", out, "-j90", "-Y", "-c", dng],
}


@pytest.mark.parametrize("clip", ["example", "grbg10"])
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_developers_render_decoded_frames_as_the_source(frames, tmp_path, program, clip):
    if not shutil.which(program):
        pytest.skip(f"{program} is not installed")
    renders = {}
    for name in ("source", "plain", "lj92"):
        out = tmp_path / f"{name}.jpg"
        renders[name] = _render(PROGRAMS[program](str(frames[clip] / f"{name}.dng"), str(out), str(tmp_path / "conf")),
                                out)
    src, plain, lj92 = renders["source"], renders["plain"], renders["lj92"]
    assert plain.shape == lj92.shape == src.shape and plain.mean() > 20  # a picture, not black
    assert np.abs(plain - lj92).mean() < 1.0  # the same mosaic behind both files
    # not tinted: per channel, the decoded frame's mean within 5% of the source frame's
    ratio = plain.reshape(-1, 3).mean(0) / src.reshape(-1, 3).mean(0)
    assert np.all(np.abs(ratio - 1) < 0.05), ratio
