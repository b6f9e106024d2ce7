"""The .rvd container: encode, then read back the manifest, keyframes and sizes; tampering is caught."""
from __future__ import annotations

import io
import json
import re
import subprocess

import numpy as np
import pytest
import rawpy
from conftest import assert_clean_error_text, run_cli

from rawvid.codec import EncodeOptions, encode, keyframe_indices, parse_range
from rawvid.container import FORMAT_VERSION, MIME_JSON, RvdFile, mux
from rawvid.errors import FormatError, RawvidError, UnsupportedError
from rawvid.video import VideoSettings, ffmpeg_exe, read_frames


@pytest.fixture
def clip(mlv_factory):
    return mlv_factory(n=6, width=128, height=96)


def test_encode_writes_a_complete_rvd(clip, tmp_path):
    path, info, mosaics = clip
    res = encode(path, tmp_path / "c.rvd", EncodeOptions(keyframe_interval=4))
    rvd = RvdFile(res.output)
    m = rvd.manifest
    # written at the lowest version that describes the file: 5 only with adaptive calibration's changes
    # or block gains (the default refinement); 6 only with a transformed RAW layer
    assert m["format"] == "rawvid" and FORMAT_VERSION == 6
    assert m["format_version"] == (5 if m["calibration"]["mode"] == "adaptive" or m["refine"].get("gains") else 4)
    assert m["frame_count"] == 6 and (m["width"], m["height"], m["bits"], m["cfa"]) == (128, 96, 14, "RGGB")
    assert (m["black"], m["white"]) == (info.black, info.white)
    assert len(m["timestamps_us"]) == 6 and m["timestamps_us"][0] == 0
    assert [k["index"] for k in m["keyframes"]] == [0, 4]
    assert m["render"]["mode"] == "stable" and m["video"]["codec"] == "h265"
    # keyframes, and the block refinement of the default settings (MLV: every frame's RAW is known)
    # (and the frames' own maps where adaptive calibration stored some)
    side = {"calibration.f16"} if m["calibration"]["mode"] == "adaptive" else set()
    assert set(m["attachments"]) == {"key_000000.dng", "key_000004.dng", "refine.u8.zlib"} | side
    assert set(m["track_crc32"]["tracks"]) == {"video"}  # the CRC-32s are in the manifest (format 3)
    for k in (0, 4):  # keyframes are the true RAW, bit-exactly, and LibRaw opens them
        data = rvd.attachment(f"key_{k:06d}.dng")
        with rawpy.imread(io.BytesIO(data)) as raw:
            assert np.array_equal(raw.raw_image, mosaics[k])
    sizes = rvd.sizes()
    assert sizes["video_bytes"] > 0 and sizes["keyframe_bytes"] > 0
    assert sizes["file_bytes"] > sizes["video_bytes"] + sizes["keyframe_bytes"]
    assert sizes["bits_per_pixel"] == pytest.approx(8 * sizes["file_bytes"] / (6 * 128 * 96))
    assert list(tmp_path.glob(".*")) == []  # no temp files or folders left


def test_stock_ffmpeg_sees_video_and_attachments(clip, tmp_path):
    out = encode(clip[0], tmp_path / "c.rvd").output
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "Video: hevc" in text
    # manifest, keyframe, block refinement (and the maps adaptive calibration stored)
    assert len(re.findall(r"Stream #0:\d+: Attachment", text)) == 1 + len(RvdFile(out).manifest["attachments"])
    assert "image/x-adobe-dng" in text and "manifest.json.zlib" in text and "refine.u8.zlib" in text
    frames = list(read_frames(out))
    assert len(frames) == 6 and frames[0].shape == (96, 128, 3)


def test_lossless_video_holds_exactly_the_rendered_srgb(clip, tmp_path):
    from rawvid.isp import render

    path, info, mosaics = clip
    out = encode(path, tmp_path / "c.rvd", EncodeOptions(video=VideoSettings.make(lossless=True))).output
    assert RvdFile(out).manifest["video"]["lossless"] is True
    for frame, mosaic in zip(read_frames(out), mosaics):
        assert np.array_equal(frame, render(mosaic, info, "stable"))


def test_frame_range_and_rvd_render(clip, tmp_path):
    out = encode(clip[0], tmp_path / "c.rvd", EncodeOptions(start=2, stop=5, render="rvd")).output
    m = RvdFile(out).manifest
    assert m["frame_count"] == 3 and m["frame_numbers"] == [2, 3, 4] and m["source"]["first_frame"] == 2
    assert m["render"]["mode"] == "rvd"
    assert len(list(read_frames(out))) == 3


def test_audio_is_carried_as_flac(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=4, audio=True)
    out = encode(path, tmp_path / "a.rvd").output
    rvd = RvdFile(out)
    assert rvd.manifest["audio"]["codec"] == "flac"
    assert rvd.sizes()["audio_bytes"] > 0
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "Audio: flac" in text


def test_video_plus_raw_source(clip, tmp_path):
    from rawvid.dng import write_dng
    from rawvid.isp import render
    from rawvid.video import VideoWriter

    path, info, mosaics = clip
    with VideoWriter(tmp_path / "cam.mkv", 128, 96, 30.0, VideoSettings.make(lossless=True)) as w:
        for m in mosaics:
            w.write(render(m, info))
    write_dng(tmp_path / "first.dng", mosaics[0], info)
    out = encode(None, tmp_path / "v.rvd", video=tmp_path / "cam.mkv", raw=tmp_path / "first.dng").output
    rvd = RvdFile(out)
    assert rvd.manifest["frame_count"] == 6 and rvd.manifest["render"]["mode"] == "camera"
    assert rvd.manifest["source"]["kind"] == "video+dng" and rvd.manifest["fps"] == pytest.approx(30)
    with rawpy.imread(io.BytesIO(rvd.attachment("key_000000.dng"))) as raw:
        assert np.array_equal(raw.raw_image, mosaics[0])


def test_video_raw_geometry_mismatch(clip, tmp_path):
    from rawvid.dng import write_dng
    from rawvid.video import VideoWriter

    path, info, mosaics = clip
    with VideoWriter(tmp_path / "cam.mkv", 64, 48, 30.0, VideoSettings.make(lossless=True)) as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
    write_dng(tmp_path / "first.dng", mosaics[0], info)
    with pytest.raises(RawvidError, match="same geometry"):
        encode(None, tmp_path / "v.rvd", video=tmp_path / "cam.mkv", raw=tmp_path / "first.dng")
    assert not (tmp_path / "v.rvd").exists()


def test_output_exists_needs_force(clip, tmp_path):
    out = tmp_path / "c.rvd"
    out.write_bytes(b"precious")
    with pytest.raises(RawvidError, match="exists"):
        encode(clip[0], out)
    assert out.read_bytes() == b"precious"
    encode(clip[0], out, force=True)
    assert RvdFile(out).manifest["frame_count"] == 6


def _flip_byte_in(path, needle: bytes, delta: int = 1000):
    data = bytearray(path.read_bytes())
    i = data.find(needle)
    data[i + delta] ^= 0x55
    path.write_bytes(bytes(data))


def test_checksum_mismatch_is_caught(clip, tmp_path):
    out = encode(clip[0], tmp_path / "c.rvd").output
    _flip_byte_in(out, b"II*\0")  # inside the keyframe DNG attachment
    with pytest.raises(FormatError, match="checksum mismatch in attachment 'key_000000.dng'"):
        RvdFile(out)


#: the smallest manifest the schema accepts (one 32x32 frame)
BASE = {"format": "rawvid", "format_version": 1, "frame_count": 1, "width": 32, "height": 32, "bits": 14,
        "black": 2048, "white": 15000, "cfa": "RGGB", "fps": 25.0, "attachments": {}}


def _rvd_with_manifest(tmp_path, manifest: dict):
    from rawvid.video import VideoWriter

    with VideoWriter(tmp_path / "v.mkv", 32, 32, 25.0, VideoSettings.make(lossless=True)) as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    mux(tmp_path / "v.mkv", tmp_path / "x.rvd", [(tmp_path / "manifest.json", MIME_JSON)])
    return tmp_path / "x.rvd"


def _rvd_with_stored_manifest(tmp_path, stored: bytes):
    """An .rvd whose manifest.json.zlib attachment holds exactly ``stored``."""
    from rawvid.container import MANIFEST_Z_NAME, MIME_ZLIB
    from rawvid.video import VideoWriter

    with VideoWriter(tmp_path / "v.mkv", 32, 32, 25.0, VideoSettings.make(lossless=True)) as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
    (tmp_path / MANIFEST_Z_NAME).write_bytes(stored)
    mux(tmp_path / "v.mkv", tmp_path / "z.rvd", [(tmp_path / MANIFEST_Z_NAME, MIME_ZLIB)])
    return tmp_path / "z.rvd"


def test_a_compressed_manifest_is_checked_before_it_is_read(tmp_path):
    """Format 3's zlib manifest: inflated within the manifest limit, whole, with nothing but zeros after it."""
    import zlib

    from rawvid.checksums import sealed_json
    from rawvid.container import MAX_MANIFEST_BYTES

    good = sealed_json({**BASE, "format_version": 3, "track_crc32": {"algorithm": "crc32", "tracks": {"video": []}}})
    assert RvdFile(_rvd_with_stored_manifest(tmp_path, zlib.compress(good) + b"\0" * 9)).manifest["format_version"] == 3
    cases = [(b"not zlib at all", "not a zlib stream"), (zlib.compress(good)[:-6], "truncated"),
             (zlib.compress(good) + b"junk", "data after its zlib stream"),
             (zlib.compress(b" " * (MAX_MANIFEST_BYTES + 10)), "inflates past"),
             (zlib.compress(sealed_json({**BASE, "format_version": 3})), "track_crc32: is missing")]
    for stored, message in cases:
        with pytest.raises(FormatError, match=message):
            RvdFile(_rvd_with_stored_manifest(tmp_path, stored))


def test_the_manifest_is_deflated_against_format_4s_frozen_dictionary(tmp_path):
    """Format 4: the manifest's zlib header names the preset dictionary, which never changes (files carry
    its Adler-32); a stream asking for another dictionary is refused by name, format 3's plain one still reads."""
    import zlib

    from rawvid.checksums import sealed_json
    from rawvid.container import pack_manifest, unpack_manifest
    from rawvid.manifest_zdict import ZDICT, ZDICT_ID

    assert ZDICT_ID == zlib.adler32(ZDICT) == 0xE8854153  # the dictionary of every format-4 file written
    good = sealed_json({**BASE, "format_version": 4, "track_crc32": {"algorithm": "crc32", "tracks": {"video": []}}})
    stored = pack_manifest(good)
    assert stored[1] & 0x20 and int.from_bytes(stored[2:6], "big") == ZDICT_ID
    assert len(stored) < len(zlib.compress(good, 9)) and unpack_manifest(stored, "x") == good
    assert RvdFile(_rvd_with_stored_manifest(tmp_path, stored)).manifest["format_version"] == 4
    # format 6 deflates against its own dictionary (format 4's plus the transformed layer's words), also frozen
    from rawvid.manifest_zdict6 import ZDICT6, ZDICT6_ID

    assert ZDICT6_ID == zlib.adler32(ZDICT6) == 0x601DAD68 and ZDICT6.startswith(ZDICT)
    six = good.replace(b'"format_version":4', b'"format_version":6')
    stored6 = pack_manifest(six)
    assert int.from_bytes(stored6[2:6], "big") == ZDICT6_ID and unpack_manifest(stored6, "x") == six
    other = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, b'{"format":"other"}')
    with pytest.raises(FormatError, match=r"z\.rvd: manifest\.json\.zlib needs an unknown dictionary"):
        RvdFile(_rvd_with_stored_manifest(tmp_path, other.compress(good) + other.flush()))


def test_version_from_the_future(tmp_path):
    path = _rvd_with_manifest(tmp_path, {**BASE, "format_version": 99})
    with pytest.raises(UnsupportedError, match="format version 99 is newer"):
        RvdFile(path)


def test_missing_listed_attachment(tmp_path):
    path = _rvd_with_manifest(tmp_path, {**BASE, "attachments": {"key_000000.dng": "00" * 32}})
    with pytest.raises(FormatError, match="'key_000000.dng' is missing"):
        RvdFile(path)


def test_not_an_rvd(tmp_path, clip):
    (tmp_path / "x.rvd").write_bytes(b"\x1a\x45\xdf\xa3" + b"\x80" * 3)
    with pytest.raises(FormatError):
        RvdFile(tmp_path / "x.rvd")
    (tmp_path / "y.rvd").write_bytes(b"hello world")
    with pytest.raises(FormatError, match="not an .rvd"):
        RvdFile(tmp_path / "y.rvd")
    plain = tmp_path / "plain.mkv"
    from rawvid.video import VideoWriter

    with VideoWriter(plain, 32, 32, 25.0, VideoSettings.make(lossless=True)) as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(FormatError, match="no manifest.json"):
        RvdFile(plain)


def test_truncated_rvd(clip, tmp_path):
    out = encode(clip[0], tmp_path / "c.rvd").output
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        RvdFile(out)


def test_attachment_names_are_never_paths(tmp_path):
    # an attachment named like a path is just a name: it can be listed, and nothing is written
    evil = tmp_path / "sub"
    evil.mkdir()
    (evil / "payload.dng").write_bytes(b"x")
    path = _rvd_with_manifest(tmp_path, dict(BASE))
    rvd = RvdFile(path)
    with pytest.raises(FormatError, match="no attachment"):
        rvd.attachment("../../etc/passwd")


def test_keyframe_indices_and_ranges():
    assert keyframe_indices(10, 0) == [0]
    assert keyframe_indices(10, 4) == [0, 4, 8]
    assert keyframe_indices(0, 4) == []
    assert parse_range("2:7") == (2, 7) and parse_range(":5") == (0, 5) and parse_range("3:") == (3, None)
    for bad in ("5:2", "a:b", "1:2:3", "-1:4"):
        with pytest.raises(ValueError):
            parse_range(bad)


@pytest.mark.parametrize(("edit", "field"), [
    (lambda m: m.pop("frame_count"), "frame_count"),
    (lambda m: m.update(frame_count="3"), "frame_count"),
    (lambda m: m.update(frame_count=200_000_000, timestamps_us=[]), "frame_count"),  # more than the file holds
    (lambda m: m.update(width=2 ** 31), "width"),
    (lambda m: m.update(height=33), "width/height"),
    (lambda m: m.update(bits=13), "bits"),
    (lambda m: m.update(black=20000), "black"),
    (lambda m: m.update(cfa="RGBG"), "cfa"),
    (lambda m: m.update(fps=-1), "fps"),
    (lambda m: m.update(model=["x"]), "model"),
    (lambda m: m.update(timestamps_us=[0, 1]), "timestamps_us"),
    (lambda m: m.update(camera={"iso": -100}), "camera.iso"),
    (lambda m: m.update(camera={"shoe": 1}), "camera"),
    (lambda m: m.update(color_matrix=[1, 2, "x"]), "color_matrix"),
    (lambda m: m.update(keyframes=[{"index": 5, "file": "k.dng"}]), "keyframes"),
    # found by benchmarks/fuzz.py: unhashable values, numbers as strings, finite but absurd matrices
    (lambda m: m.update(cfa=["RGGB"]), "cfa"),
    (lambda m: m.update(bits={"14": 1}), "bits"),
    (lambda m: m.update(source={"bytes": "9"}), "source.bytes"),
    (lambda m: m.update(calibration={"mode": "per-frame", "values_per_frame": ""}), "calibration.values_per_frame"),
    (lambda m: m.update(color_matrix=[1e308] * 9), "color_matrix"),
    (lambda m: m.update(noise_floor_db="50"), "noise_floor_db"),
    (lambda m: m.update(noise_floor_db=float("nan")), "noise_floor_db"),
])
def test_the_manifest_schema_refuses_bad_fields_before_allocating(tmp_path, edit, field):
    m = json.loads(json.dumps(BASE))
    edit(m)
    path = _rvd_with_manifest(tmp_path, m)
    with pytest.raises(FormatError, match=f"manifest {field}"):
        RvdFile(path)
    for cmd in (("info", path), ("decode", path, "-o", tmp_path / "out")):
        assert_clean_error_text(run_cli(*cmd), str(path.name), f"manifest {field}")


def test_a_deeply_nested_manifest_is_a_clean_error(tmp_path):
    _rvd_with_manifest(tmp_path, {})  # for its v.mkv, the video the deep manifest is muxed with
    deep = "[" * 200_000 + "]" * 200_000
    (tmp_path / "manifest.json").write_text(deep)
    mux(tmp_path / "v.mkv", tmp_path / "deep.rvd", [(tmp_path / "manifest.json", MIME_JSON)])
    with pytest.raises(FormatError, match="nested too deeply|not an .rvd"):
        RvdFile(tmp_path / "deep.rvd")
    assert_clean_error_text(run_cli("info", tmp_path / "deep.rvd"), "deep.rvd")


def test_a_zero_ebml_byte_is_a_clean_error_naming_file_and_offset(tmp_path, clip):
    out = encode(clip[0], tmp_path / "c.rvd").output
    data = bytearray(out.read_bytes())
    data[4] = 0x00  # the EBML header's size byte: an integer "longer than 8 bytes"
    bad = tmp_path / "bad.rvd"
    bad.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"bad\.rvd.*invalid EBML integer.*offset 0"):
        RvdFile(bad)
    assert_clean_error_text(run_cli("info", bad), "bad.rvd", "invalid EBML integer")


def test_backwards_timestamps_never_make_an_unreadable_rvd(tmp_path):
    """Found by benchmarks/fuzz.py: a damaged MLV whose frame timestamps run backwards gave an .rvd
    that info and decode refused. The encoder records index / fps instead, with a warning."""
    from conftest import make_info, make_mosaic

    from rawvid.mlv import MLVWriter

    info = make_info(96, 64)
    path = tmp_path / "back.MLV"
    with MLVWriter(path, info) as w:
        for i, ts in enumerate((500_000, 100_000, 200_000)):
            w.write_frame(make_mosaic(info, seed=i), number=i, timestamp_us=ts)
    res = encode(path, tmp_path / "b.rvd", EncodeOptions(refine="off"))
    assert any("timestamps run backwards" in n for n in res.notes)
    m = RvdFile(res.output).manifest
    assert m["timestamps_us"] == [0, 40000, 80000]
    assert run_cli("info", res.output).returncode == 0


@pytest.mark.parametrize("edit", [dict(camera=None), dict(source=None), dict(video=None, render=None),
                                  dict(render={"mode": 5}, refine={"mode": True}, audio={"codec": 3},
                                       calibration={"mode": None}, video={"codec": 1.5})],
                         ids=["camera", "source", "video-render", "any-types"])
def test_null_optional_fields_are_read_as_absent(tmp_path, edit):
    """Found by benchmarks/fuzz.py: a null camera or source crashed info and decode."""
    path = _rvd_with_manifest(tmp_path, {**BASE, **edit})
    assert RvdFile(path).sizes()["file_bytes"] > 0
    res = run_cli("info", path)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    from rawvid.decoder import info_from_manifest

    assert info_from_manifest(RvdFile(path).manifest).width == 32
    (tmp_path / "r").mkdir()
    bad = _rvd_with_manifest(tmp_path / "r", {**BASE, "render": "x"})
    assert_clean_error_text(run_cli("info", bad), "manifest render")
    # a calibration this rawvid does not know would decode wrong: refused, whatever its type
    (tmp_path / "c").mkdir()
    bad = _rvd_with_manifest(tmp_path / "c", {**BASE, "calibration": {"mode": ["x"]}})
    assert_clean_error_text(run_cli("info", bad), "manifest calibration.mode")
