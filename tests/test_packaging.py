"""The built wheel carries the shipped weights (and their ONNX export) and the documented API: installed
outside the repository, on a Python where PyTorch cannot be imported (what the README's install gives),
encode, open_rvd and decode work, and decode uses the network (in ONNX Runtime)."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import EXAMPLE, ROOT


def test_wheel_carries_the_weights_and_decodes_with_the_network(tmp_path):
    """Issue 13 items 9 and 10: the built wheel, installed into a fresh venv (its dependencies from this
    Python's site-packages, so no download), on a Python where PyTorch cannot be imported."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("rawvid-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    script = (
        "import sys\n"
        "sys.modules['torch'] = None  # not installed\n"
        "import rawvid\n"
        "from rawvid import encode, decode, open_rvd, read_rvd, EncodeOptions, DecodeOptions, LayerSettings\n"
        "from rawvid.weights import resolve_model\n"
        "assert rawvid.__file__.startswith(sys.argv[1]), rawvid.__file__\n"
        "assert str(resolve_model('fagdn-default')).startswith(sys.argv[1])\n"
        "rvd = encode(sys.argv[2], sys.argv[3] + '/c.rvd', EncodeOptions(stop=3), force=True).output\n"
        "assert open_rvd(rvd).sizes()['file_bytes'] > 0 and read_rvd is open_rvd\n"
        "res = decode(rvd, sys.argv[3] + '/out', DecodeOptions(stop=3))\n"
        "print(res.method, res.notes, open_rvd(rvd).manifest['network_runtime'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAWVID_MODELS", "PYTHONPATH")}
    out = subprocess.run([str(python), "-c", script, site, str(EXAMPLE), str(tmp_path)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    # no "no weights" note: the wheel's weights were used, by ONNX Runtime
    assert out.stdout.strip() == "network [] onnxruntime", out.stdout


def test_the_layer_modes_example_runs():
    """examples/layer_modes.py, on the shipped clip's first two frames: every mode encodes, decodes and scores."""
    import subprocess
    import sys

    from conftest import EXAMPLE, ROOT

    res = subprocess.run([sys.executable, str(ROOT / "examples" / "layer_modes.py"), "--frames", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "bits/sample" in ln]
    assert len(lines) == 4 and "PSNR lossless" in lines[-1] and EXAMPLE.exists()
