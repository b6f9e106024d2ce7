"""The built wheel carries the shipped weights and the documented API: installed outside the repository,
encode, open_rvd and decode work, and decode uses the network."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import EXAMPLE, ROOT


def test_wheel_carries_the_weights_and_decodes_with_the_network(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("rawvid-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    script = (
        "import rawvid, sys\n"
        "from rawvid import encode, decode, open_rvd, read_rvd, EncodeOptions, DecodeOptions, LayerSettings\n"
        "from rawvid.model import resolve_model\n"
        "assert rawvid.__file__.startswith(sys.argv[1]), rawvid.__file__\n"
        "assert str(resolve_model('fagdn-default')).startswith(sys.argv[1])\n"
        "rvd = encode(sys.argv[2], sys.argv[3] + '/c.rvd', EncodeOptions(stop=3), force=True).output\n"
        "assert open_rvd(rvd).sizes()['file_bytes'] > 0 and read_rvd is open_rvd\n"
        "res = decode(rvd, sys.argv[3] + '/out', DecodeOptions(stop=3))\n"
        "print(res.method, res.notes)\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("RAWVID_MODELS", None)
    out = subprocess.run([sys.executable, "-c", script, str(site), str(EXAMPLE), str(tmp_path)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("network []")  # no "no weights" note: the wheel's weights were used
