"""MLV reading: packing, synthetic clips of every flavour, the real 5D Mark III file, ffmpeg cross-check."""
from __future__ import annotations

import subprocess
import wave

import numpy as np
import pytest
from conftest import make_info, run_cli, shared, write_mlv

from rawvid.dng import read_dng, write_dng
from rawvid.errors import FormatError, UnsupportedError
from rawvid.mlv import MLVReader, MLVWarning, pack_bits, unpack_bits
from rawvid.video import ffmpeg_exe


def test_14bit_packing_matches_the_documented_vector():
    # ../shared/docs/FORMATS.md: pixels 1..8 at 14 bits pack to these bytes
    expected = bytes.fromhex("04002000c00000040014016008c0")
    assert pack_bits(np.arange(1, 9), 14) == expected
    assert unpack_bits(expected, 8, 14).tolist() == list(range(1, 9))


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    px = rng.integers(0, 1 << bits, size=96 * 64 + 8).astype(np.uint16)
    assert np.array_equal(unpack_bits(pack_bits(px, bits), px.size, bits), px)


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_packed_clip_reads_bit_exactly(mlv_factory, bits):
    path, info, mosaics = mlv_factory(bits=bits, n=3)
    with MLVReader(path) as clip:
        assert (clip.info.width, clip.info.height, clip.info.bits) == (info.width, info.height, bits)
        assert (clip.info.black, clip.info.white, clip.info.cfa) == (info.black, info.white, "RGGB")
        assert not clip.lj92
        got = [f.mosaic for f in clip.frames()]
    assert len(got) == 3
    for a, b in zip(got, mosaics):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("bits", [12, 14])
def test_lj92_clip_reads_bit_exactly(mlv_factory, bits):
    path, _, mosaics = mlv_factory(bits=bits, n=3, lj92=True)
    with MLVReader(path) as clip:
        assert clip.lj92
        assert all(np.array_equal(f.mosaic, m) for f, m in zip(clip.frames(), mosaics))
    packed = 3 * 96 * 64 * bits / 8
    assert path.stat().st_size < packed  # LJ92 actually compresses


def test_frame_space_padding_is_skipped(mlv_factory):
    path, _, mosaics = mlv_factory(n=2, frame_space=2356)
    with MLVReader(path) as clip:
        assert all(np.array_equal(f.mosaic, m) for f, m in zip(clip.frames(), mosaics))


def test_split_chunks_are_joined(mlv_factory, tmp_path):
    path, _, mosaics = mlv_factory(n=7, chunk_frames=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.M00", "clip.M01", "clip.MLV"]
    with MLVReader(path) as clip:
        assert len(clip.chunks) == 3
        assert len(clip) == 7
        assert all(np.array_equal(f.mosaic, m) for f, m in zip(clip.frames(), mosaics))
        assert clip.size_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_out_of_order_frames_are_sorted(mlv_factory):
    order = [2, 0, 3, 1, 4]
    path, _, mosaics = mlv_factory(n=5, order=order)
    with MLVReader(path) as clip:
        frames = list(clip.frames())
    assert [f.number for f in frames] == [0, 1, 2, 3, 4]
    assert all(np.array_equal(f.mosaic, mosaics[f.number]) for f in frames)
    assert frames[0].timestamp_us < frames[-1].timestamp_us


@pytest.mark.parametrize("cfa", ["GRBG", "GBRG", "BGGR"])
def test_cfa_pattern_is_read_from_rawi(mlv_factory, cfa):
    path, _, _ = mlv_factory(cfa=cfa, n=1)
    with MLVReader(path) as clip:
        assert clip.info.cfa == cfa


def test_metadata_blocks(mlv_factory):
    path, info, _ = mlv_factory(n=2, fps=23.976)
    with MLVReader(path) as clip:
        assert clip.info.camera.model == "Canon EOS 5D Mark III"
        assert clip.info.camera.make == "Canon"
        assert clip.info.camera.iso == 400 and clip.info.camera.shutter_us == 20000
        assert clip.info.fps == pytest.approx(23.976, abs=1e-3)
        assert clip.info.color_matrix == pytest.approx(info.color_matrix, abs=1e-4)
        assert clip.timestamps()[1] > clip.timestamps()[0]


def test_audio_is_kept(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=4, audio=True)
    with MLVReader(path) as clip:
        assert clip.audio_format is not None and clip.audio_format.rate == 48000
        assert clip.write_wav(tmp_path / "a.wav")
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 48000, 2)
        assert w.getnframes() == 4 * (48000 // 25)


@pytest.mark.parametrize("field,at,fmt,value", [
    ("rate-0", 20, "<I", 0), ("rate-max", 20, "<I", 0xFFFFFFFF),
    ("block-align", 28, "<H", 33715),  # found by benchmarks/fuzz.py: every AUDF cut to nothing, an empty track
], ids=lambda v: v if isinstance(v, str) else None)
def test_unusable_audio_header_drops_the_audio_up_front(mlv_factory, tmp_path, field, at, fmt, value):
    import struct

    path, _, _ = mlv_factory(n=3, audio=True)
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, data.index(b"WAVI") + at, value)  # WAVI samplingRate / blockAlign
    path.write_bytes(bytes(data))
    with pytest.warns(MLVWarning, match="unusable audio header"):
        with MLVReader(path) as clip:
            assert clip.audio_format is None and not clip.write_wav(tmp_path / "a.wav")
    res = run_cli("encode", path, "-o", tmp_path / "c.rvd", "--refine", "off")
    assert res.returncode == 0 and "Traceback" not in res.stderr and "without its audio" in res.stderr
    assert (tmp_path / "c.rvd").is_file()


def test_frames_stream_one_at_a_time(mlv_factory):
    path, _, mosaics = mlv_factory(n=4)
    with MLVReader(path) as clip:
        it = clip.frames(1, 3)
        first = next(it)
        assert first.index == 1 and np.array_equal(first.mosaic, mosaics[1])
        assert [f.index for f in it] == [2]
        assert np.array_equal(clip.read(3), mosaics[3])


def _ffmpeg_bayer(path, width, height):
    """Decode an uncompressed MLV with ffmpeg's own demuxer (bayer_rggb16le, scaled to 16 bits)."""
    res = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                          "bayer_rggb16le", "-"], capture_output=True, check=True)
    return np.frombuffer(res.stdout, "<u2").reshape(-1, height, width)


def test_reader_agrees_with_ffmpeg_demuxer(mlv_factory):
    path, info, mosaics = mlv_factory(n=3, bits=14)
    theirs = _ffmpeg_bayer(path, info.width, info.height) >> 2  # ffmpeg scales 14 bit as (v<<2)|(v>>12)
    assert theirs.shape[0] == 3
    assert all(np.array_equal(t, m) for t, m in zip(theirs, mosaics))


def test_real_5d3_truncated_clip():
    path = shared("mlv", "canon5d3_M19-0333-cut.MLV")
    with pytest.warns(MLVWarning, match="192 frames"):
        clip = MLVReader(path)
    with clip:
        assert len(clip) == 1 and clip.promised_frames == 192
        i = clip.info
        assert (i.width, i.height, i.bits, i.black, i.white, i.cfa) == (1472, 610, 14, 2048, 15000, "RGGB")
        assert i.camera.model == "Canon EOS 5D Mark III" and i.camera.lens.startswith("EF50mm")
        assert i.fps == pytest.approx(59.94)
        assert i.color_matrix[0] == pytest.approx(0.6722)
        mosaic = clip.read(0)
    theirs = _ffmpeg_bayer(path, 1472, 610)
    assert theirs.shape[0] == 1
    assert np.array_equal(theirs[0] >> 2, mosaic)
    assert 2000 < np.median(mosaic) < 15000


# ---------------------------------------------------------------- bad input
def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_not_an_mlv(tmp_path):
    with pytest.raises(FormatError, match="not an MLV file"):
        MLVReader(_write(tmp_path / "x.MLV", b"RIFF" + b"\0" * 100))


def test_truncated_header(tmp_path):
    with pytest.raises(FormatError, match="truncated MLVI header"):
        MLVReader(_write(tmp_path / "x.MLV", b"MLVI" + b"\x34\0\0\0" + b"v2.0"))


def test_rawi_missing(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=1)
    data = bytearray(path.read_bytes())
    i = data.find(b"RAWI")
    data[i : i + 4] = b"XXXX"  # an unknown block now: skipped, so no geometry
    with pytest.raises(FormatError, match="RAWI block missing"):
        MLVReader(_write(tmp_path / "norawi.MLV", bytes(data)))


@pytest.mark.parametrize("field,offset,value,match", [
    ("xres", 16, (60000).to_bytes(2, "little"), "absurd frame size"),
    # found by benchmarks/fuzz.py: a DNG LibRaw refuses to open
    ("yres", 18, (8).to_bytes(2, "little"), "under 22 pixels a side"),
    ("bits", 44, (8).to_bytes(4, "little"), "unsupported bit depth 8"),
])
def test_bad_rawi_fields(mlv_factory, tmp_path, field, offset, value, match):
    path, _, _ = mlv_factory(n=1)
    data = bytearray(path.read_bytes())
    i = data.find(b"RAWI")
    data[i + offset : i + offset + len(value)] = value
    with pytest.raises((FormatError, UnsupportedError), match=match):
        MLVReader(_write(tmp_path / f"{field}.MLV", bytes(data)))


def test_corrupt_lj92_frame_is_named(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=3, lj92=True)
    data = bytearray(path.read_bytes())
    vidf = [i for i in range(len(data)) if data[i : i + 4] == b"VIDF"]
    j = vidf[1] + 32
    data[j : j + 4] = b"\0\0\0\0"  # destroy frame 1's JPEG SOI/DHT markers
    bad = _write(tmp_path / "bad.MLV", bytes(data))
    with MLVReader(bad) as clip:
        clip.read(0)
        with pytest.raises(FormatError, match="corrupt LJ92 frame 1"):
            clip.read(1)


def test_missing_split_chunk(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=7, chunk_frames=3)
    (tmp_path / "clip.M00").unlink()
    with pytest.raises(FormatError, match=r"missing split chunk clip\.M00"):
        MLVReader(path)


def test_missing_last_split_chunk_is_a_warning_naming_it(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=7, chunk_frames=3)  # clip.MLV (3 frames), clip.M00 (3), clip.M01 (1)
    (tmp_path / "clip.M01").unlink()
    with pytest.warns(MLVWarning, match=r"counts 3 files, 2 found: missing split chunk\(s\) clip\.M01"):
        with MLVReader(path) as clip:
            assert len(clip) == 6  # the frames that are here
    res = run_cli("encode", path, "-o", tmp_path / "c.rvd", "--refine", "off")
    assert res.returncode == 0 and "clip.M01" in res.stderr and "warning" in res.stderr


def test_chunk_of_another_clip(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=4, chunk_frames=2)
    data = bytearray((tmp_path / "clip.M00").read_bytes())
    data[16] ^= 0xFF  # fileGuid
    (tmp_path / "clip.M00").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="another clip"):
        MLVReader(path)


def test_truncated_recording_keeps_complete_frames(mlv_factory, tmp_path):
    path, _, mosaics = mlv_factory(n=3)
    data = path.read_bytes()
    cut = _write(tmp_path / "cut.MLV", data[: len(data) - 1000])
    with pytest.warns(MLVWarning) as caught:
        clip = MLVReader(cut)
    messages = " | ".join(str(w.message) for w in caught)
    assert "VIDF block at offset" in messages and "is cut off" in messages
    assert "promised 3 frames, 2 complete" in messages
    with clip:
        assert len(clip) == 2
        assert np.array_equal(clip.read(1), mosaics[1])


def test_lzma_clip_is_refused(mlv_factory, tmp_path):
    path, _, _ = mlv_factory(n=1)
    data = bytearray(path.read_bytes())
    data[32] |= 0x80  # videoClass LZMA flag
    with pytest.raises(UnsupportedError, match="LZMA"):
        MLVReader(_write(tmp_path / "lzma.MLV", bytes(data)))


def test_make_info_defaults():
    info = make_info()
    assert info.neutral[1] == 1.0 and all(v > 0 for v in info.neutral)


def test_white_point_of_a_colour_temperature():
    from rawvid.meta import D65_XYZ, white_xyz

    assert np.allclose(white_xyz(6504), D65_XYZ, rtol=0.01)  # D65 on the daylight locus
    xyz = white_xyz(2856)  # CIE illuminant A, on the Planckian locus: x 0.4476, y 0.4074
    assert xyz[0] / xyz.sum() == pytest.approx(0.4476, abs=0.002) and xyz[1] / xyz.sum() == pytest.approx(0.4074, abs=0.002)


@pytest.mark.parametrize(("mode", "kelvin", "want"), [(9, 3200, 3200.0), (3, 0, 3200.0), (1, 0, 5200.0), (0, 4000, None)])
def test_wbal_colour_temperature_becomes_the_as_shot_neutral(tmp_path, mode, kelvin, want):
    import struct

    from rawvid.meta import neutral_from_matrix

    info = make_info()
    path = tmp_path / "wb.MLV"
    write_mlv(path, info, n=2)
    data = bytearray(path.read_bytes())
    at = data.index(b"WBAL")
    struct.pack_into("<II", data, at + 16, mode, kelvin)
    path.write_bytes(bytes(data))
    with MLVReader(path) as clip:
        got = clip.info.as_shot_neutral
    if want is None:  # auto white balance: nothing known, the DNG falls back to D65
        assert got is None
    else:
        assert got == pytest.approx(neutral_from_matrix(info.color_matrix, want))
        d65 = neutral_from_matrix(info.color_matrix)
        assert (got[2] < d65[2]) == (want < 6504)  # under warmer light the camera sees white with less blue


def test_out_of_range_colour_matrix_is_dropped_with_a_warning(tmp_path):
    import struct

    info = make_info()
    path = tmp_path / "cm.MLV"
    write_mlv(path, info, n=2)
    data = bytearray(path.read_bytes())
    at = data.index(b"RAWI") + 16 + 4 + 36 + 16 + 16 + 8 + 8  # RAWI header, xRes/yRes, raw_info up to the matrix
    struct.pack_into("<ii", data, at, 2 ** 31 - 1, 1)
    path.write_bytes(bytes(data))
    with pytest.warns(MLVWarning, match="colour matrix out of range"):
        with MLVReader(path) as clip:
            assert clip.info.color_matrix is None
    res = run_cli("encode", path, "-o", tmp_path / "c.rvd", "--refine", "off")
    assert res.returncode == 0 and "Traceback" not in res.stderr


def test_lj92_frame_decoding_above_the_bit_depth_is_refused_by_name(tmp_path):
    from rawvid.mlv import MLVWriter

    info = make_info(bits=14)
    path = tmp_path / "bad.MLV"
    good = np.full((info.height, info.width), 3000, np.uint16)
    bad = good.copy()
    bad[5, 7] = 20000  # what a damaged LJ92 stream decoded to: above any 14-bit value
    with MLVWriter(path, info, lj92=True) as w:
        w.write_frame(good, number=0)
        w.write_frame(bad, number=1)
    with MLVReader(path) as clip:
        assert clip.read(0).max() == 3000
        with pytest.raises(FormatError, match=r"corrupt LJ92 frame 1 \(index 1\): value 20000 is above the 14-bit"):
            clip.read(1)
    res = run_cli("encode", path, "-o", tmp_path / "c.rvd", "--refine", "off")
    assert res.returncode == 2 and "corrupt LJ92 frame 1" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "c.rvd").exists()  # never an .rvd whose keyframe LibRaw cannot read


def test_an_absurd_frame_rate_is_replaced_with_a_warning(tmp_path):
    """Found by benchmarks/fuzz.py: an MLVI frame rate of millions of fps overflowed the DNG FrameRate tag."""
    import struct

    info = make_info()
    path = tmp_path / "fps.MLV"
    write_mlv(path, info, n=2)
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 44, 4_182_028_426, 1000)  # MLVI sourceFpsNom / Denom
    path.write_bytes(bytes(data))
    with pytest.warns(MLVWarning, match="frame rate 4.18203e\\+06 fps in MLVI is not plausible; using 25"):
        with MLVReader(path) as clip:
            assert clip.info.fps == 25.0
            write_dng(tmp_path / "f.dng", clip.read(0), clip.info)
    assert read_dng(tmp_path / "f.dng")[1].fps == 25.0
