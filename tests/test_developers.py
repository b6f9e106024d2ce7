"""Decoded DNGs in the raw developers users open them with: darktable (rawspeed) and RawTherapee.

Each program renders the plain and the lossless-JPEG frame of the example; the renders must exist,
not be black, and agree with each other (the same pixels behind both). Skipped where the programs
are not installed (Debian: darktable, rawtherapee; .ci/run installs them)."""
from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest
from conftest import EXAMPLE

from rawvid.dng import write_dng
from rawvid.mlv import MLVReader


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("dng")
    with MLVReader(EXAMPLE) as clip:
        mosaic, info = clip.read(1), clip.info
    write_dng(out / "plain.dng", mosaic, info, frame_index=1)
    write_dng(out / "lj92.dng", mosaic, info, compress=True, frame_index=1)
    return out


def _render(cmd: list[str], out_path, timeout: int = 300) -> np.ndarray:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    img = cv2.imread(str(out_path))
    assert img is not None, (res.returncode, res.stdout[-1500:], res.stderr[-1500:])
    return img


def _check(renders: dict[str, np.ndarray]) -> None:
    plain, lj92 = renders["plain"].astype(np.float64), renders["lj92"].astype(np.float64)
    assert plain.shape == lj92.shape and plain.mean() > 20  # a picture, not black
    assert np.abs(plain - lj92).mean() < 1.0  # the same mosaic behind both files
    means = plain.reshape(-1, 3).mean(0)
    assert means.max() / means.min() < 1.6  # not tinted: a grey-ish colour chart scene stays balanced


#: each program's command line, rendering DNG to JPEG OUT (CONF: a private config folder)
PROGRAMS = {
    "darktable-cli": lambda dng, out, conf: ["darktable-cli", dng, out, "--core", "--configdir", conf],
    "rawtherapee-cli": lambda dng, out, conf: ["rawtherapee-cli", "-o", out, "-j90", "-Y", "-c", dng],
}


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_developers_render_plain_and_compressed_frames(frames, tmp_path, program):
    if not shutil.which(program):
        pytest.skip(f"{program} is not installed")
    renders = {}
    for name in ("plain", "lj92"):
        out = tmp_path / f"{name}.jpg"
        renders[name] = _render(PROGRAMS[program](str(frames / f"{name}.dng"), str(out), str(tmp_path / "conf")), out)
    _check(renders)
