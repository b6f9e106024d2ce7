"""rawvid batch: real clips encoded, decoded and benched on a local process pool and on a local Ray instance."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import make_info, run_cli, write_mlv

from rawvid.batch import Executor, Job, _probe, plan, run_batch
from rawvid.container import RvdFile
from rawvid.dng import read_dng, write_dng


@pytest.fixture
def archive(tmp_path):
    """An archive: a split MLV, a DNG folder, an MLV in a sub-folder, and a corrupt MLV."""
    root = tmp_path / "archive"
    (root / "day2").mkdir(parents=True)
    info = make_info(96, 64)
    write_mlv(root / "a.MLV", info, 4, chunk_frames=2)  # a.MLV + a.M00
    mosaics = write_mlv(root / "day2" / "b.MLV", info, 3)
    (root / "shot").mkdir()
    for i, m in enumerate(mosaics):
        write_dng(root / "shot" / f"shot_{i:04d}.dng", m, info)
    (root / "day2" / "broken.MLV").write_bytes(b"MLVI" + bytes(60))
    return root


def _by_clip(report: dict) -> dict:
    return {c["clip"]: c for c in report["clips"]}


def test_plan_mirrors_the_tree(archive, tmp_path):
    assert (archive / "a.M00").is_file()  # the split chunk is part of a.MLV, not a clip
    todo, done = plan([archive], tmp_path / "out")
    assert not done
    out = (tmp_path / "out").resolve()
    assert {j.name: j.output for j in todo} == {
        "a.MLV": out / "a.rvd", "day2/b.MLV": out / "day2" / "b.rvd", "day2/broken.MLV": out / "day2" / "broken.rvd",
        "shot": out / "shot.rvd"}
    # two inputs: one folder each under the output; an output folder inside an input is no input
    other = tmp_path / "other"
    other.mkdir()
    write_mlv(other / "c.MLV", make_info(96, 64), 2)
    (archive / "out").mkdir()
    (archive / "out" / "c.MLV").write_bytes((other / "c.MLV").read_bytes())
    todo, _ = plan([archive, other], archive / "out")
    assert {j.name for j in todo} == {"archive/a.MLV", "archive/day2/b.MLV", "archive/day2/broken.MLV",
                                      "archive/shot", "other/c.MLV"}
    assert {j.output.parent.name for j in todo if j.name.startswith("other")} == {"other"}
    (tmp_path / "x" / "archive").mkdir(parents=True)
    write_mlv(tmp_path / "x" / "archive" / "d.MLV", make_info(96, 64), 2)
    with pytest.raises(Exception, match="share a name"):
        plan([archive, tmp_path / "x" / "archive"], tmp_path / "o2")
    with pytest.raises(Exception, match=r"no clips here \(.rvd files\)"):
        plan([archive], tmp_path / "o3", mode="decode")


def test_pool_batch_reports_failures_and_resumes(archive, tmp_path):
    out = tmp_path / "out"
    res = run_cli("batch", archive, "-o", out, "-j", "2", "--refine", "off", timeout=600)
    assert res.returncode == 1, res.stderr  # a clip failed: exit 1, the others done
    assert "Traceback" not in res.stderr + res.stdout
    report = json.loads((out / "rawvid-batch.json").read_text())
    clips = _by_clip(report)
    assert {k: c["status"] for k, c in clips.items()} == {"a.MLV": "done", "day2/b.MLV": "done",
                                                          "day2/broken.MLV": "failed", "shot": "done"}
    assert "broken.MLV" in clips["day2/broken.MLV"]["error"] and not (out / "day2" / "broken.rvd").exists()
    assert report["executor"]["kind"] == "processes" and report["executor"]["workers"] == 2
    for name, frames in (("a.MLV", 4), ("day2/b.MLV", 3), ("shot", 3)):
        c = clips[name]
        rvd = RvdFile(c["output"])
        assert int(rvd.manifest["frame_count"]) == frames == c["frames"]
        assert c["bytes_out"] == Path(c["output"]).stat().st_size and c["bytes_in"] > c["bytes_out"]
    assert clips["a.MLV"]["bytes_in"] == (archive / "a.MLV").stat().st_size + (archive / "a.M00").stat().st_size
    totals = report["totals"]
    assert totals["done"] == 3 and totals["failed"] == 1 and totals["frames"] == 10 and totals["clips_per_minute"] > 0
    # rerun: complete outputs are skipped (figures kept from the last report), the failed clip is tried again
    mtime = (out / "a.rvd").stat().st_mtime_ns
    again = run_batch([archive], out, executor=Executor(workers=1))
    clips = _by_clip(again.report)
    assert [clips[k]["status"] for k in ("a.MLV", "day2/b.MLV", "shot", "day2/broken.MLV")] == \
        ["skipped", "skipped", "skipped", "failed"]
    assert clips["a.MLV"]["frames"] == 4 and (out / "a.rvd").stat().st_mtime_ns == mtime
    # a source newer than its output is encoded again
    later = time.time() + 5
    os.utime(archive / "shot" / "shot_0001.dng", (later, later))
    third = _by_clip(run_batch([archive / "shot"], out / "again", executor=Executor(workers=1)).report)
    assert third["shot"]["status"] == "done"
    todo, done = plan([archive], out)
    assert {j.name for j in todo} == {"day2/broken.MLV", "shot"} and all(j.force for j in todo if j.name == "shot")


def test_ray_batch(archive, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    res = run_cli("batch", archive, "-o", out, "--ray", "-j", "2", "--refine", "off", timeout=600)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    report = json.loads((out / "rawvid-batch.json").read_text())
    clips = _by_clip(report)
    assert report["executor"]["kind"] == "ray" and report["totals"]["startup_seconds"] > 0
    assert sorted(c["status"] for c in clips.values()) == ["done", "done", "done", "failed"]
    assert "broken.MLV" in clips["day2/broken.MLV"]["error"]
    assert all(c["worker"] and str(os.getpid()) not in c["worker"] for c in clips.values())  # Ray's workers ran them
    assert not list(out.glob(".rawvid-batch-probe*"))  # the file-system probe leaves nothing
    first = RvdFile(out / "day2" / "b.rvd").manifest
    # rerun on Ray: the done clips are skipped, untouched
    res = run_cli("batch", archive, "-o", out, "--ray", "-j", "2", "--refine", "off", timeout=600)
    clips = _by_clip(json.loads((out / "rawvid-batch.json").read_text()))
    assert [clips[k]["status"] for k in ("a.MLV", "day2/b.MLV", "shot")] == ["skipped"] * 3
    assert RvdFile(out / "day2" / "b.rvd").manifest == first


def test_decode_batch_resumes_a_partial_folder(archive, tmp_path):
    from rawvid.batch import BatchSettings
    from rawvid.encoder import EncodeOptions

    rvds = tmp_path / "rvds"
    run_batch([archive / "shot", archive / "day2" / "b.MLV"], rvds, BatchSettings(encode=EncodeOptions(refine="off")))
    assert (rvds / "archive" / "shot.rvd").is_file() and (rvds / "day2" / "b.rvd").is_file()
    frames = tmp_path / "frames"
    first = run_batch([rvds], frames, executor=Executor(workers=2), settings=_decode_settings())
    assert [c["status"] for c in first.clips] == ["done", "done"]
    shot = frames / "archive" / "shot"
    kept = (shot / "shot_000002.dng").read_bytes()
    (shot / "shot_000002.dng").unlink()  # an interrupted decode
    second = _by_clip(run_batch([rvds], frames, settings=_decode_settings()).report)
    statuses = sorted(c["status"] for c in second.values())
    assert statuses == ["done", "skipped"]
    redone = next(c for c in second.values() if c["status"] == "done")
    assert redone["frames"] == 1 and (shot / "shot_000002.dng").read_bytes() == kept  # byte-identical when resumed
    mosaic, info = read_dng(shot / "shot_000000.dng")
    assert mosaic.shape == (64, 96) and info.bits == 14


def _decode_settings():
    from rawvid.batch import BatchSettings
    from rawvid.decoder import DecodeOptions

    return BatchSettings("decode", decode=DecodeOptions(method="global-fit"))


def test_bench_batch(archive, tmp_path):
    from rawvid.batch import BatchSettings
    from rawvid.decoder import DecodeOptions
    from rawvid.encoder import EncodeOptions

    s = BatchSettings("bench", EncodeOptions(refine="off"), DecodeOptions(method="global-fit"), bench_frames=3)
    res = run_batch([archive / "day2" / "b.MLV"], tmp_path / "bench", s)
    (c,) = res.clips
    bench = json.loads(Path(c["output"]).read_text())
    assert c["status"] == "done" and Path(c["output"]).name == "b.MLV.bench.json"
    assert bench["runs"][0]["method"] == "global-fit" and c["psnr_black"] == bench["runs"][0]["psnr_black"] > 20


def test_shared_file_system_probe(tmp_path):
    token = tmp_path / "probe"
    token.write_text("abc")
    assert _probe([str(tmp_path)], str(token), "abc")["problems"] == []
    problems = _probe([str(tmp_path / "gone")], str(token), "xyz")["problems"]
    assert any("gone" in p and "not found" in p for p in problems) and any("another batch" in p for p in problems)
    assert "No such file" in _probe([], str(tmp_path / "none"), "abc")["problems"][0]


def test_batch_bad_input(tmp_path):
    from conftest import assert_clean_error_text

    (tmp_path / "empty").mkdir()
    assert_clean_error_text(run_cli("batch", tmp_path / "empty", "-o", tmp_path / "o"), "empty", "no clips here")
    (tmp_path / "file").write_text("x")
    assert_clean_error_text(run_cli("batch", tmp_path / "empty", "-o", tmp_path / "file"), "not a folder")
    job = Job("encode", tmp_path / "x.MLV", tmp_path / "x.rvd", "x.MLV")
    assert not job.force


def test_rvd_layout_folders_are_clips(tmp_path):
    """An RVD-layout split (data.json, RAW/, sRGB/): each video is a clip, encoded with the sRGB it gives."""
    from test_dataset import example_scenes

    from rawvid.batch import BatchSettings
    from rawvid.dataset import RVDLayout, build_dataset
    from rawvid.decoder import DecodeOptions
    from rawvid.encoder import EncodeOptions

    build_dataset(tmp_path / "ds", example_scenes(), seed=1, frames=3, test_frames=3, size=(64, 64),
                  clips_per_scene=1, test_fraction=0.34, renders=("stable",))
    split = tmp_path / "ds" / "stable" / "test"
    videos = [v.name for v in RVDLayout.open(split).videos]
    res = run_batch([tmp_path / "ds"], tmp_path / "out", BatchSettings(encode=EncodeOptions(refine="off")))
    clips = _by_clip(res.report)
    assert {f"stable/test/{v}" for v in videos} <= set(clips)
    for v in videos:
        c = clips[f"stable/test/{v}"]
        assert c["status"] == "done" and c["output"] == str((tmp_path / "out" / "stable" / "test" / f"{v}.rvd").resolve())
        m = RvdFile(c["output"]).manifest
        assert m["frame_count"] == 3 and m["source"]["kind"] == "rvd-layout"
    again = run_batch([split], tmp_path / "out2", BatchSettings(encode=EncodeOptions(refine="off")))
    assert sorted(c["clip"] for c in again.clips) == sorted(videos)  # the split itself as the input
    bench = run_batch([split], tmp_path / "bench", BatchSettings("bench", EncodeOptions(refine="off"),
                                                                  DecodeOptions(method="global-fit")))
    (first, *_) = bench.clips
    assert first["status"] == "done" and json.loads(Path(first["output"]).read_text())["runs"][0]["clip"].endswith(
        first["clip"])
