"""Every byte of an .rvd checked: the manifest's seal, each packet's CRC-32, damage named by frame, --salvage."""
from __future__ import annotations

import json

import pytest
from conftest import assert_clean_error_text, run_cli, with_manifest_text

from rawvid.checksums import CHECKSUMS_NAME, block_crcs, check_tracks, clean_prefix, sealed_json
from rawvid.video import VideoSettings
from rawvid.codec import DecodeOptions, EncodeOptions, LayerSettings, decode, encode
from rawvid.container import MANIFEST_NAME, RvdFile, read_manifest_text, scan
from rawvid.errors import FormatError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One clip with audio encoded twice: keyframes (H.265 with B-frames), and with a RAW layer."""
    from conftest import make_info, write_mlv

    root = tmp_path_factory.mktemp("sums")
    write_mlv(root / "clip.MLV", make_info(96, 64), 8, audio=True)
    plain = encode(root / "clip.MLV", root / "plain.rvd", EncodeOptions(refine="off", keyframe_interval=4,
                                                                                calibration="keyframe")).output
    layered = encode(root / "clip.MLV", root / "layer.rvd",
                     EncodeOptions(refine="off", video=VideoSettings.make(crf=16), raw_layer=LayerSettings(target_psnr=45.0))).output
    return root, plain, layered


def _blocks(path, track_name):
    from rawvid.checksums import track_names

    with open(path, "rb") as f:
        lay = scan(f, str(path))
    num = next(t for t, n in track_names(lay).items() if n == track_name)
    return lay.blocks[num]


def _damaged_copy(src, dst, track, index):
    """A copy with one byte flipped in the middle of a track's packet (the container stays intact)."""
    off, size, _ = _blocks(src, track)[index]
    data = bytearray(src.read_bytes())
    data[off + size // 2] ^= 0x5A
    dst.write_bytes(bytes(data))
    return dst


def test_the_recorded_crcs_are_the_muxed_packets(files):
    _, plain, layered = files
    for path in (plain, layered):
        rvd = RvdFile(path)
        m = rvd.manifest
        assert m["format_version"] in (4, 5, 6) and len(m["manifest_sha256"]) == 64
        recorded = m["track_crc32"]["tracks"]
        actual = {k: [c for c, _ in v] for k, v in block_crcs(path).items()}
        assert recorded == actual and set(recorded) >= {"video", "audio"}
        assert len(recorded["video"]) == 8
        check = check_tracks(rvd)
        assert check.ok and check.present and check.checked["video"] == 8
    assert "layer" in RvdFile(layered).manifest["track_crc32"]["tracks"]


def test_a_damaged_srgb_frame_is_named_and_salvage_writes_what_came_before(files, tmp_path):
    root, plain, _ = files
    rows = _blocks(plain, "video")
    display = sorted(range(len(rows)), key=lambda i: rows[i][2])
    target = display.index(5)  # the packet (file order) of display frame 5
    bad = _damaged_copy(plain, tmp_path / "bad.rvd", "video", target)
    res = run_cli("info", bad, "--verify")
    assert_clean_error_text(res, "bad.rvd", "sRGB video damaged at frame(s) 5", "CRC-32")
    with pytest.raises(FormatError, match=r"sRGB video damaged at frame\(s\) 5 .*--salvage"):
        decode(bad, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before the folder was made
    ranks = [sorted(r[2] for r in rows).index(r[2]) for r in rows]  # display index of each packet
    clean = clean_prefix(ranks, target)
    assert 0 < clean <= 5
    got = decode(bad, tmp_path / "salvaged", DecodeOptions(method="global-fit", salvage=True))
    assert got.frames == clean and any("--salvage writes frames 0:" in n for n in got.notes)
    whole = tmp_path / "whole"
    decode(plain, whole, DecodeOptions(method="global-fit"))
    for i in range(clean):  # the frames decoded before the damage are exactly the undamaged file's
        name = f"{got.clip}_{i:06d}.dng"
        assert (tmp_path / "salvaged" / name).read_bytes() == (whole / name).read_bytes()
    assert not (tmp_path / "salvaged" / f"{got.clip}_{clean:06d}.dng").exists()


def test_a_damaged_layer_packet_and_damaged_audio(files, tmp_path):
    _, plain, layered = files
    bad = _damaged_copy(layered, tmp_path / "lay.rvd", "layer", 3)
    assert_clean_error_text(run_cli("decode", bad, "-o", tmp_path / "o"), "lay.rvd", "RAW layer damaged at frame(s)")
    got = decode(bad, tmp_path / "s", DecodeOptions(salvage=True))
    assert 0 < got.frames <= 3
    # audio: named by info --verify; decode goes on (the DNGs carry no audio) with a warning
    noisy = _damaged_copy(plain, tmp_path / "audio.rvd", "audio", 1)
    assert_clean_error_text(run_cli("info", noisy, "--verify"), "audio.rvd", "audio damaged")
    res = decode(noisy, tmp_path / "a", DecodeOptions(method="global-fit"))
    assert res.frames == 8 and any("audio damaged" in n for n in res.notes)
    ok = run_cli("info", plain, "--verify")
    assert ok.returncode == 0 and "packets OK" in ok.stdout


def test_an_edited_manifest_is_refused(files, tmp_path):
    _, plain, _ = files
    data = plain.read_bytes()
    text = read_manifest_text(data)
    assert text.count(b'"black":2048') == 1
    edited = tmp_path / "edited.rvd"
    with_manifest_text(plain, edited, text.replace(b'"black":2048', b'"black":2049'))
    with pytest.raises(FormatError, match="manifest checksum mismatch"):
        RvdFile(edited)
    assert_clean_error_text(run_cli("info", edited), "edited.rvd", "manifest checksum mismatch")
    # and a seal that is missing from a manifest of format 2 on
    m = RvdFile(plain).manifest
    unsealed = tmp_path / "unsealed.rvd"
    with_manifest_text(plain, unsealed, json.dumps({k: v for k, v in m.items() if k != "manifest_sha256"},
                                                   separators=(",", ":")).encode())
    with pytest.raises(FormatError, match="no manifest_sha256"):
        RvdFile(unsealed)
    # format 3 keeps the CRC-32s in the manifest: sealed again without them, it is still refused
    stripped = tmp_path / "stripped.rvd"
    with_manifest_text(plain, stripped, sealed_json({k: v for k, v in m.items() if k != "track_crc32"}))
    assert_clean_error_text(run_cli("info", stripped), "stripped.rvd", "track_crc32: is missing")


def test_format_2_files_still_verify(files, tmp_path):
    """Format 2 (a plain manifest.json and the CRC-32s in tracks.crc32.json) opens and verifies; its
    damaged packets are still found."""
    import hashlib
    import subprocess

    from rawvid.container import MIME_JSON, mux
    from rawvid.video import ffmpeg_exe

    _, plain, _ = files
    m = RvdFile(plain).manifest
    for kind, name in (("v:0", "v.mkv"), ("a:0", "a.mka")):  # stream copy keeps every packet's bytes
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(plain), "-map", f"0:{kind}", "-c", "copy",
                        str(tmp_path / name)], check=True)
    sums = tmp_path / CHECKSUMS_NAME
    sums.write_text(json.dumps(m["track_crc32"], separators=(",", ":")))
    old = {k: v for k, v in m.items() if k != "track_crc32"}
    old["format_version"] = 2
    old["attachments"] = {**m["attachments"], CHECKSUMS_NAME: hashlib.sha256(sums.read_bytes()).hexdigest()}
    (tmp_path / MANIFEST_NAME).write_bytes(sealed_json(old))
    out = tmp_path / "v2.rvd"
    parts = [(tmp_path / MANIFEST_NAME, MIME_JSON)] + [(tmp_path / n, "application/octet-stream")
                                                       for n in m["attachments"]]
    for n in m["attachments"]:
        (tmp_path / n).write_bytes(RvdFile(plain).attachment(n))
    mux(tmp_path / "v.mkv", out, parts + [(sums, MIME_JSON)], audio=tmp_path / "a.mka")
    rvd = RvdFile(out)
    assert rvd.manifest["format_version"] == 2 and rvd.manifest_name == MANIFEST_NAME
    check = check_tracks(rvd)
    assert check.present and check.ok and check.checked["video"] == 8
    damaged = _damaged_copy(out, tmp_path / "v2-damaged.rvd", "video", 3)
    assert not check_tracks(RvdFile(damaged)).ok


def test_format_1_files_still_open(tmp_path):
    from test_container import BASE, _rvd_with_manifest

    path = _rvd_with_manifest(tmp_path, dict(BASE))
    assert RvdFile(path).manifest["format_version"] == 1
    res = run_cli("info", path, "--verify")
    assert res.returncode == 0 and "no track checksums" in res.stdout
