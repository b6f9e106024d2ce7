"""The real ``rawvid`` command line: encode and info end to end, and every bad input.

Bad input must give one line naming the file, exit code 2, no traceback, no output file.
"""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import EXAMPLE, make_info, make_mosaic, run_cli, with_manifest_text

from rawvid.container import read_manifest_text
from rawvid.dng import write_dng


def assert_clean_error(res, *fragments: str):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1, res.stderr
    joined = " ".join(res.stderr.split())  # rich may wrap long lines
    for frag in fragments:
        assert frag in joined, (frag, res.stderr)


def test_encode_then_info_on_the_example(tmp_path):
    out = tmp_path / "example.rvd"
    res = run_cli("encode", EXAMPLE, "-o", out)
    assert res.returncode == 0, res.stderr
    said = " ".join(res.stderr.split())  # whatever the terminal width wrapped
    assert "wrote" in said and "18 frames" in said
    info = run_cli("info", out)
    assert info.returncode == 0 and "960x540 RGGB 14-bit" in info.stdout and "Canon EOS 550D" in info.stdout
    js = json.loads(run_cli("info", out, "--json").stdout)
    assert js["frame_count"] == 18 and js["camera"]["model"] == "Canon EOS 550D"
    assert js["sizes"]["source_bytes"] == EXAMPLE.stat().st_size
    assert js["sizes"]["ratio_vs_source"] > 4
    assert 0 < js["sizes"]["bits_per_pixel"] < 14


def test_encode_options(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=12, width=64, height=48)
    out = tmp_path / "o.rvd"
    res = run_cli("encode", path, "-o", out, "--keyframe-interval", "5", "--frames", "1:12", "--codec", "h264",
                  "--crf", "20", "--render", "rvd", "--fps", "30")
    assert res.returncode == 0, res.stderr
    m = json.loads(run_cli("info", out, "--json").stdout)
    assert m["frame_count"] == 11 and [k["index"] for k in m["keyframes"]] == [0, 5, 10]
    assert m["video"]["codec"] == "h264" and m["video"]["crf"] == 20 and m["render"]["mode"] == "rvd"
    assert m["fps"] == 30


def test_encode_dng_folder(tmp_path):
    info = make_info(width=64, height=48)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        write_dng(frames / f"A001_{i:06d}.dng", make_mosaic(info, seed=i), info)
    res = run_cli("encode", frames, "-o", tmp_path / "d.rvd", "--lossless")
    assert res.returncode == 0, res.stderr
    m = json.loads(run_cli("info", tmp_path / "d.rvd", "--json").stdout)
    assert m["source"]["kind"] == "dng-sequence" and m["frame_count"] == 3 and m["video"]["codec"] == "ffv1"


def test_truncated_real_mlv_warns_and_encodes(tmp_path):
    from conftest import shared

    src = shared("mlv", "canon5d3_M19-0333-cut.MLV")
    res = run_cli("encode", src, "-o", tmp_path / "t.rvd")
    assert res.returncode == 0, res.stderr
    assert "promised 192 frames" in " ".join(res.stderr.split())


# ---------------------------------------------------------------- bad input
def _mlv_bytes(mlv_factory, **kw) -> bytes:
    path, _, _ = mlv_factory(name="src.MLV", **kw)
    return path.read_bytes()


def _bad(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _encode_fails(tmp_path, src, *fragments):
    out = tmp_path / "out.rvd"
    res = run_cli("encode", src, "-o", out)
    assert_clean_error(res, *fragments)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_bad_not_an_mlv(tmp_path):
    _encode_fails(tmp_path, _bad(tmp_path, "a.MLV", b"GIF89a" + b"\0" * 64), "a.MLV", "not an MLV file")


def test_bad_truncated_header(tmp_path):
    _encode_fails(tmp_path, _bad(tmp_path, "t.MLV", b"MLVI\x34\0\0\0v2.0\0"), "t.MLV", "truncated MLVI header")


def test_bad_rawi_missing(mlv_factory, tmp_path):
    data = _mlv_bytes(mlv_factory, n=1).replace(b"RAWI", b"ZZZZ", 1)
    _encode_fails(tmp_path, _bad(tmp_path, "r.MLV", data), "r.MLV", "RAWI block missing")


def test_bad_absurd_size(mlv_factory, tmp_path):
    data = bytearray(_mlv_bytes(mlv_factory, n=1))
    i = data.find(b"RAWI")
    data[i + 16 : i + 20] = (65535).to_bytes(2, "little") * 2
    _encode_fails(tmp_path, _bad(tmp_path, "s.MLV", bytes(data)), "s.MLV", "absurd frame size 65535x65535")


def test_bad_bit_depth(mlv_factory, tmp_path):
    data = bytearray(_mlv_bytes(mlv_factory, n=1))
    i = data.find(b"RAWI")
    data[i + 44 : i + 48] = (9).to_bytes(4, "little")
    _encode_fails(tmp_path, _bad(tmp_path, "b.MLV", bytes(data)), "b.MLV", "unsupported bit depth 9")


def test_bad_lj92_frame(mlv_factory, tmp_path):
    data = bytearray(_mlv_bytes(mlv_factory, n=3, lj92=True))
    vidf = [i for i in range(len(data) - 4) if data[i : i + 4] == b"VIDF"]
    data[vidf[2] + 32 : vidf[2] + 40] = b"\0" * 8
    _encode_fails(tmp_path, _bad(tmp_path, "j.MLV", bytes(data)), "j.MLV", "corrupt LJ92 frame 2")


def test_bad_missing_split_chunk(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(name="split.MLV", n=6, chunk_frames=2)
    (tmp_path / "split.M00").unlink()
    out = tmp_path / "out.rvd"
    assert_clean_error(run_cli("encode", path, "-o", out), "split.MLV", "missing split chunk split.M00")
    assert not out.exists()


def test_bad_mixed_dng_geometry(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    a, b = make_info(width=64, height=48), make_info(width=96, height=48)
    write_dng(frames / "f_000.dng", make_mosaic(a), a)
    write_dng(frames / "f_001.dng", make_mosaic(b), b)
    out = tmp_path / "out.rvd"
    assert_clean_error(run_cli("encode", frames, "-o", out), "f_001.dng", "mixed geometry")
    assert not out.exists()


def test_bad_unreadable_video(tmp_path):
    info = make_info(width=64, height=48)
    write_dng(tmp_path / "first.dng", make_mosaic(info), info)
    (tmp_path / "cam.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"\x00" * 200)
    out = tmp_path / "out.rvd"
    res = run_cli("encode", "--video", tmp_path / "cam.mp4", "--raw", tmp_path / "first.dng", "-o", out)
    assert_clean_error(res, "cam.mp4", "unreadable video")
    assert not out.exists()


def test_bad_output_exists(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=1)
    out = tmp_path / "out.rvd"
    out.write_bytes(b"keep me")
    assert_clean_error(run_cli("encode", path, "-o", out), "out.rvd", "exists")
    assert out.read_bytes() == b"keep me"


def test_bad_rvd_checksum_and_version(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=2)
    out = tmp_path / "c.rvd"
    assert run_cli("encode", path, "-o", out).returncode == 0
    data = bytearray(out.read_bytes())
    i = data.find(b"II*\0")
    data[i + 500] ^= 0xFF
    out.write_bytes(bytes(data))
    assert_clean_error(run_cli("info", out), "c.rvd", "checksum mismatch")

    assert run_cli("encode", path, "-o", out, "--force").returncode == 0
    data = out.read_bytes()
    text = read_manifest_text(data)
    assert len(re.findall(rb'"format_version":[456],', text)) == 1  # the manifest is compact JSON
    with_manifest_text(out, out, re.sub(rb'"format_version":[456],', b'"format_version":7,', text))
    assert_clean_error(run_cli("info", out), "c.rvd", "format version 7 is newer")


def test_bad_missing_input(tmp_path):
    assert_clean_error(run_cli("encode", tmp_path / "nope.MLV", "-o", tmp_path / "o.rvd"), "nope.MLV", "no such file")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_encode_leaves_nothing(tmp_path, sig):
    info = make_info(width=640, height=360)
    from conftest import write_mlv

    src = tmp_path / "long.MLV"
    write_mlv(src, info, n=120)
    out = tmp_path / "out.rvd"
    # a shell's background job inherits SIGINT as ignored: give the child the default handling a user has
    proc = subprocess.Popen([sys.executable, "-m", "rawvid", "encode", str(src), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]:
        time.sleep(0.05)  # wait until the encoder has started writing its temp files
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], os.listdir(tmp_path)


def test_a_killed_encode_is_cleaned_up_by_the_next(tmp_path):
    """kill -9 leaves the temp folder and .part file; the next encode there removes them (their owner
    is provably gone) and nothing of a live process or of another host."""
    info = make_info(width=640, height=360)
    from conftest import write_mlv

    src = tmp_path / "long.MLV"
    write_mlv(src, info, n=120)
    out = tmp_path / "out.rvd"
    proc = subprocess.Popen([sys.executable, "-m", "rawvid", "encode", str(src), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len([p for p in tmp_path.iterdir() if p.name.startswith(".")]) < 2:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.kill()
    proc.wait(timeout=30)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert any(n.startswith(".rawvid-") for n in left) and any(n.endswith(".part") for n in left), left
    assert all(f"~{proc.pid}" in n for n in left)  # named for their owner
    from rawvid.atomic import owner

    live = tmp_path / f".other.rvd.{owner()}.abcd1234.part"  # this very process: alive
    live.write_bytes(b"x")
    foreign = tmp_path / ".other.rvd.elsewhere~1.abcd1234.part"  # another host on a shared disk
    foreign.write_bytes(b"x")
    res = run_cli("encode", src, "-o", out, "--frames", "0:2", "--refine", "off")
    assert res.returncode == 0, res.stderr
    assert "removed 2 temp file(s) left by an interrupted rawvid run" in " ".join(res.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted([live.name, foreign.name])


def test_interrupted_decode_says_what_it_kept_and_resumes(tmp_path):
    info = make_info(width=640, height=360)
    from conftest import write_mlv

    src = tmp_path / "long.MLV"
    write_mlv(src, info, n=40)
    rvd = tmp_path / "c.rvd"
    assert run_cli("encode", src, "-o", rvd, "--refine", "off").returncode == 0
    out = tmp_path / "frames"
    proc = subprocess.Popen([sys.executable, "-m", "rawvid", "decode", str(rvd), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.dng"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the decode finished before the interrupt")
    kept = len(list(out.glob("*.dng")))
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert f"{kept} complete DNG frame(s) kept" in err and "--resume" in err
    res = run_cli("decode", rvd, "-o", out, "--resume")
    assert res.returncode == 0, res.stderr
    assert len(list(out.glob("*.dng"))) == 40


def test_force_clears_another_clips_frames_and_long_ranges_are_reported(mlv_factory, tmp_path):
    a, _, _ = mlv_factory("a.MLV", n=6, width=64, height=48)
    b, _, _ = mlv_factory("b.MLV", n=3, width=64, height=48)
    for name, src in (("a", a), ("b", b)):
        assert run_cli("encode", src, "-o", tmp_path / f"{name}.rvd", "--refine", "off").returncode == 0
    out = tmp_path / "frames"
    assert run_cli("decode", tmp_path / "a.rvd", "-o", out).returncode == 0
    (out / "notes.txt").write_text("the user's own file")
    res = run_cli("decode", tmp_path / "b.rvd", "-o", out, "--force", "--frames", "0:100")
    assert res.returncode == 0, res.stderr
    assert "asks for frames up to 100; the clip has 3" in res.stderr
    assert sorted(p.name for p in out.glob("*.dng")) == ["b_000000.dng", "b_000001.dng", "b_000002.dng"]  # a's gone
    assert (out / "notes.txt").read_text() == "the user's own file"  # only frame files are removed
    res = run_cli("decode", tmp_path / "b.rvd", "-o", out, "--resume")
    assert res.returncode == 0 and len(list(out.glob("*.dng"))) == 3  # nothing of clip a passes for b's


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    import errno

    from rawvid.atomic import atomic_write
    from rawvid.errors import RawvidError

    target = tmp_path / "frame.dng"
    with pytest.raises(RawvidError, match=r"frame\.dng: cannot write: No space left on device"):
        with atomic_write(target) as f:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises on a full disk
    assert not target.exists() and not list(tmp_path.iterdir())  # no final file, no temp file


@pytest.mark.parametrize("command,passive", [("decode", True), ("encode", True), ("train", False), ("info", False)])
def test_encode_and_decode_let_openmp_workers_sleep(command, passive, monkeypatch):
    """Encode and decode run threads beside the network's: OpenMP must not spin on their core.
    Training (small operations, where spinning pays) keeps OpenMP's default."""
    from click.testing import CliRunner

    from rawvid.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0
    assert os.environ.get("OMP_WAIT_POLICY") == ("PASSIVE" if passive else None)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's own setting wins
    CliRunner().invoke(main, [command, "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
