"""Property-based fuzzing (hypothesis) of rawvid's untrusted inputs, within a small time budget.

The mutations and the cases are benchmarks/fuzz.py's (the long fuzzer); here hypothesis drives
them. Each case runs in fuzz.py's worker process: its address space is limited to its size
after start-up plus 2 GiB and a case that runs over 60 s is a hang. Every case must end with
the file read to the end, or with rawvid's own error naming the file.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from conftest import ROOT

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))  # spawned workers get this path too, and import fuzz by name
import fuzz  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


class _Seeds:
    """The seed files' bytes (a plain object, so that hypothesis does not print megabytes of them)."""

    def __init__(self, mlv: list[bytes], rvd: list[bytes]):
        self.mlv, self.rvd = mlv, rvd

    def __repr__(self) -> str:
        return "seeds"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-seeds")
    mlvs = fuzz.make_mlv_seeds(root / "mlv")
    rvds = fuzz.make_rvd_seeds(root, mlvs[0])
    return _Seeds([p.read_bytes() for p in mlvs], [p.read_bytes() for p in rvds])


@pytest.fixture(scope="module")
def runner():
    r = fuzz.Runner(memory_gib=2.0, timeout=60.0)
    yield r
    r.close()


def _check(runner, target: str, got, heavy: bool) -> None:
    if got is None:  # a manifest change that does not fit in place: nothing to test
        return
    kind, data = got
    outcome, signature = runner.run(target, data, heavy)
    assert outcome in ("accepted", "clean"), f"{kind}: {outcome}: {signature}"


@settings(max_examples=60, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False), which=st.integers(0, 1))
def test_mlv_block_mutations(seeds, runner, rnd: random.Random, which: int):
    _check(runner, "mlv", fuzz.mutate_mlv(seeds.mlv[which], rnd), heavy=False)


@settings(max_examples=8, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False))
def test_mlv_mutations_through_encode(seeds, runner, rnd: random.Random):
    _check(runner, "mlv", fuzz.mutate_mlv(seeds.mlv[0], rnd), heavy=True)


@settings(max_examples=60, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False), which=st.integers(0, 1))
def test_rvd_byte_and_ebml_mutations(seeds, runner, rnd: random.Random, which: int):
    _check(runner, "rvd", fuzz.mutate_rvd_bytes(seeds.rvd[which], rnd), heavy=False)


@settings(max_examples=30, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False), which=st.integers(0, 1))
def test_manifest_schema_mutations_through_decode(seeds, runner, rnd: random.Random, which: int):
    _check(runner, "rvd", fuzz.mutate_manifest(seeds.rvd[which], rnd), heavy=True)


@settings(max_examples=30, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False), which=st.integers(0, 1))
def test_side_attachment_mutations_through_decode(seeds, runner, rnd: random.Random, which: int):
    """Calibration, refinement, keyframe and layer-map bytes changed with their checksums fixed up."""
    _check(runner, "rvd", fuzz.mutate_attachment(seeds.rvd[which], rnd), heavy=True)


def test_the_worker_reports_hangs_memory_and_deaths(tmp_path):
    """The harness itself: a case over its time is a hang, and the worker is replaced after it."""
    r = fuzz.Runner(memory_gib=2.0, timeout=0.01)
    try:
        outcome, _ = r.run("rvd", b"\x1a\x45\xdf\xa3" + bytes(100), True)
        assert outcome in ("hang", "clean")
        r.timeout = 60.0
        assert r.run("mlv", b"not an mlv", False)[0] == "clean"
    finally:
        r.close()
    assert fuzz.classify(MemoryError(), Path("x.MLV"))[0] == "memory"
    assert fuzz.classify(KeyError("k"), Path("x.MLV"))[0] == "crash"


def test_a_damaged_keyframe_dng_is_named_with_its_rvd(seeds, tmp_path):
    """Found by the fuzzer: a keyframe whose bytes (and checksum) were changed failed naming only
    the attachment; the error names the .rvd and the keyframe."""
    rnd = random.Random(0)
    for _ in range(200):
        got = fuzz.mutate_attachment(seeds.rvd[0], rnd)
        if got and got[0] == "attachment:key":
            break
    else:
        pytest.skip("no keyframe mutation drawn")
    path = tmp_path / "k.rvd"
    path.write_bytes(got[1])
    from rawvid.codec import decode
    from rawvid.errors import RawvidError

    try:
        decode(path, tmp_path / "out")
    except RawvidError as exc:
        assert "k.rvd" in str(exc) and "keyframe" in str(exc)


def test_non_utf8_tags_in_the_layer_track_are_not_trusted(seeds, tmp_path):
    """Found by the fuzzer: a byte that made the RAW layer's track title invalid UTF-8 crashed PyAV's
    open; the title is not ours to trust, so it is read with replacement characters."""
    from rawvid.codec import decode
    from rawvid.container import LAYER_TITLE

    data = seeds.rvd[1]
    title = LAYER_TITLE.encode()
    assert data.count(title) == 1
    damaged = data.replace(title, b"\x88" + title[1:])
    path = tmp_path / "t.rvd"
    path.write_bytes(damaged)
    res = decode(path, tmp_path / "out")
    assert res.frames == 3
