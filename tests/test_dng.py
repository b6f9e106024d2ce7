"""DNG writing and reading: every variant opens in LibRaw bit-exactly; real DNGs read; sequences."""
from __future__ import annotations

import io

import numpy as np
import pytest
import rawpy
import tifffile
from conftest import make_info, make_mosaic, shared

from rawvid.dng import DNGSequence, encode_dng, read_dng, read_dng_bytes, write_dng
from rawvid.errors import FormatError, RawvidError


@pytest.mark.parametrize("compress", [False, True], ids=["packed", "lj92"])
@pytest.mark.parametrize("cfa", ["RGGB", "GRBG", "GBRG", "BGGR"])
@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_libraw_reads_every_variant_bit_exactly(bits, cfa, compress):
    info = make_info(bits=bits, cfa=cfa, width=64, height=48)
    mosaic = make_mosaic(info, seed=bits)
    data = encode_dng(mosaic, info, compress=compress, frame_index=1)
    with rawpy.imread(io.BytesIO(data)) as raw:
        assert np.array_equal(raw.raw_image, mosaic)
        assert raw.white_level == info.white
        assert list(raw.black_level_per_channel) == [info.black] * 4
        desc = raw.color_desc.decode()
        assert "".join(desc[c] for c in raw.raw_colors[:2, :2].reshape(-1)) == cfa
        rgb = raw.postprocess(output_bps=8)
        assert rgb.shape == (48, 64, 3)


def test_file_layout_and_tags():
    info = make_info(bits=14)
    page = tifffile.TiffFile(io.BytesIO(encode_dng(make_mosaic(info), info))).pages[0]
    assert page.bitspersample == 14  # the source bit depth, bit-packed
    assert len(page.dataoffsets) == 1  # one strip (Resolve rejects multi-strip DNGs)
    tags = {t.code: t.value for t in page.tags.values()}
    assert tags[50706] == b"\x01\x04\x00\x00"
    assert tags[33422] == b"\x00\x01\x01\x02"
    assert tags[50714] == 2048 and tags[50717] == 15000
    assert tags[50708] == "Canon EOS 5D Mark III" and tags[271] == "Canon"
    assert tags[50778] == 21 and len(tags[50721]) == 18 and len(tags[50728]) == 6
    h, w = info.height, info.width  # the tags developers and Resolve look for
    assert int(tags[274]) == 1 and tuple(tags[50829]) == (0, 0, h, w)
    assert tuple(tags[50719]) == (0, 0) and tuple(tags[50720]) == (w, h)
    assert tuple(tags[50727]) == (1, 1, 1, 1, 1, 1) and tuple(tags[50730]) == (0, 1)
    lj = tifffile.TiffFile(io.BytesIO(encode_dng(make_mosaic(info), info, compress=True))).pages[0]
    assert lj.compression == 7 and lj.bitspersample == 14 and len(lj.dataoffsets) == 1


def test_metadata_round_trip(tmp_path):
    info = make_info(bits=12, cfa="GBRG", fps=23.976)
    mosaic = make_mosaic(info)
    size = write_dng(tmp_path / "f.dng", mosaic, info, compress=True)
    assert size == (tmp_path / "f.dng").stat().st_size
    got, back = read_dng(tmp_path / "f.dng")
    assert np.array_equal(got, mosaic)
    assert (back.width, back.height, back.bits, back.black, back.white, back.cfa) == (96, 64, 12, 256, 3900, "GBRG")
    assert back.color_matrix == pytest.approx(info.color_matrix, abs=1e-4)
    assert back.as_shot_neutral == pytest.approx(info.neutral, rel=1e-4)
    assert back.camera.model == info.camera.model and back.camera.iso == 400 and back.camera.shutter_us == 20000
    assert back.fps == pytest.approx(23.976, abs=1e-3)
    assert not list(tmp_path.glob(".*part"))  # atomic write left no temp file


def test_real_magic_lantern_dng():
    mosaic, info = read_dng(shared("raw", "canon550d_colorchart.dng"))
    assert mosaic.shape == (1156, 1734)
    assert (info.bits, info.black, info.white, info.cfa) == (14, 2056, 15000, "RGGB")
    assert info.camera.make == "Canon"
    assert info.color_matrix[0] == pytest.approx(0.6461)


def test_real_cinemadng_with_lj92_and_linearisation():
    mosaic, info = read_dng(shared("raw", "bmpcc4k_lake.dng"))
    assert mosaic.shape == (2176, 4128) and info.cfa == "RGGB"
    assert info.bits == 16 and info.white == 65535
    assert mosaic.max() > 4096  # linearised to 16 bits by LibRaw


def test_rewritten_real_dng_is_identical_in_libraw(tmp_path):
    mosaic, info = read_dng(shared("raw", "canon550d_colorchart.dng"))
    write_dng(tmp_path / "copy.dng", mosaic, info, compress=True)
    again, info2 = read_dng(tmp_path / "copy.dng")
    assert np.array_equal(again, mosaic) and info2.black == info.black and info2.white == info.white


def test_sequence_sorted_by_frame_number(tmp_path):
    info = make_info()
    frames = {n: make_mosaic(info, seed=n) for n in (1, 2, 10)}
    for n, m in frames.items():
        write_dng(tmp_path / f"clip_{n}.dng", m, info)  # lexical order would put 10 before 2
    seq = DNGSequence.open(tmp_path, fps=30)
    assert [p.name for p in seq.files] == ["clip_1.dng", "clip_2.dng", "clip_10.dng"]
    got = list(seq.frames())
    assert [f.number for f in got] == [1, 2, 10]
    assert all(np.array_equal(f.mosaic, frames[f.number]) for f in got)
    assert got[1].timestamp_us == pytest.approx(1e6 / 30, abs=1)


def test_sequence_of_mixed_geometry_is_refused(tmp_path):
    write_dng(tmp_path / "a_000.dng", make_mosaic(make_info()), make_info())
    small = make_info(width=64)
    write_dng(tmp_path / "a_001.dng", make_mosaic(small), small)
    with pytest.raises(RawvidError, match=r"a_001\.dng.*mixed geometry"):
        DNGSequence.open(tmp_path)


def test_not_a_dng(tmp_path):
    (tmp_path / "x.dng").write_bytes(b"hello")
    with pytest.raises(FormatError, match="not a DNG"):
        read_dng(tmp_path / "x.dng")
    with pytest.raises(FormatError, match="no .dng files"):
        DNGSequence.open(tmp_path / "empty") if (tmp_path / "empty").mkdir() is None else None


def test_plain_tiff_is_not_a_dng():
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((8, 8), np.uint16))
    with pytest.raises(FormatError, match="not a DNG"):
        read_dng_bytes(buf.getvalue())


@pytest.mark.parametrize(("fps", "index", "want"), [
    (24000 / 1001, 17, (0, 0, 0, 17, False)),  # 23.976 counts at 24, frame by frame
    (23.976, 24, (0, 0, 1, 0, False)),
    (25.0, 25 * 3661 + 7, (1, 1, 1, 7, False)),
    (30.0, 30, (0, 0, 1, 0, False)),
    (30000 / 1001, 1799, (0, 0, 59, 29, True)),
    (29.97, 1800, (0, 1, 0, 2, True)),  # drop-frame: labels 00 and 01 skipped at the minute
    (29.97, 17982, (0, 10, 0, 0, True)),  # but not at the tenth
    (59.94, 3600, (0, 1, 0, 2, True)),  # frames 0-3 skipped, counted in pairs
    (120.0, 119, (0, 0, 0, 29, False)),  # high rates count frame groups: always two BCD digits
    (240.0, 240 * 59 + 239, (0, 0, 59, 29, False)),
])
def test_timecodes_come_from_the_frame_index_at_the_exact_rate(fps, index, want):
    from rawvid.dng import _timecode, timecode_fields

    assert timecode_fields(index, fps) == want
    code = _timecode(index, fps)
    assert len(code) == 8 and code[4:] == b"\0" * 4
    ff = code[0] & 0x3F
    assert (ff >> 4) * 10 + (ff & 15) == want[3] and bool(code[0] & 0x40) == want[4]


def test_timecodes_of_a_decoded_sequence_count_every_frame():
    info = make_info(width=32, height=16)
    info.fps = 24000 / 1001
    frames = []
    for i in range(18):
        page = tifffile.TiffFile(io.BytesIO(encode_dng(make_mosaic(info), info, frame_index=i))).pages[0]
        frames.append(page.tags[51043].value[0])
    assert frames == [((i // 10) << 4) | (i % 10) for i in range(18)]  # 0, 1, 2, ... 17: no repeats, no gaps


def test_exif_fields_live_in_an_exif_ifd_and_read_back():
    from rawvid.meta import Camera

    info = make_info(bits=14)
    info.camera = Camera(make="Canon", model="Canon EOS 5D Mark III", iso=800, shutter_us=20000, aperture=2.8,
                         focal_length_mm=35.0, datetime="2026:11:30 10:20:30")
    for compress in (False, True):
        data = encode_dng(make_mosaic(info), info, compress=compress, frame_index=0)
        tif = tifffile.TiffFile(io.BytesIO(data))
        root = tif.pages[0].tags
        assert 34666 not in root and all(c not in root for c in (33434, 33437, 34855, 37386))  # not in IFD0
        exif = root[34665].value
        assert exif["ISOSpeedRatings"] == 800 and tuple(exif["ExposureTime"]) == (20000, 1000000)
        assert tuple(exif["FNumber"]) == (14, 5) and tuple(exif["FocalLength"]) == (35, 1)
        assert exif["DateTimeOriginal"] == "2026:11:30 10:20:30"
        _, back = read_dng_bytes(data)
        assert back.camera.iso == 800 and back.camera.shutter_us == 20000
        with rawpy.imread(io.BytesIO(data)) as raw:  # LibRaw still finds the image and the same pixels
            assert raw.raw_image.shape == (info.height, info.width)


def test_hostile_camera_metadata_is_sanitised_not_fatal():
    from rawvid.meta import Camera

    info = make_info(bits=14)
    info.camera = Camera(make="Cañon\x00", model="EOS \xff\u2603", serial="\x80\x81", shutter_us=2 ** 40, iso=10 ** 9,
                         datetime="2026:11:30 10:20:30\u00e9")
    data = encode_dng(make_mosaic(info), info, compress=True, frame_index=0)  # no exception: the pixels are good
    tags = tifffile.TiffFile(io.BytesIO(data)).pages[0].tags
    assert tags[272].value == "EOS ??" and tags[271].value == "Ca?on?"
    exif = tags[34665].value
    assert exif["ISOSpeedRatings"] == 65535 and tuple(exif["ExposureTime"]) == (2 ** 32 - 1, 1_000_000)
    with rawpy.imread(io.BytesIO(data)) as raw:
        assert raw.raw_image.shape == (info.height, info.width)


def test_a_second_calibration_travels_from_source_to_every_decoded_frame(tmp_path):
    """Issue 13 item 5: a source with two calibrations (ColorMatrix2, CalibrationIlluminant2, as
    Blackmagic's DNGs carry) keeps both through the .rvd into every decoded DNG; resolution tags too."""
    from rawvid.codec import DecodeOptions, EncodeOptions, decode, encode

    info = make_info(96, 64)
    info.calibration_illuminant = 17  # Standard light A first, D65 second, as the BMPCC 4K writes them
    info.color_matrix2 = (0.68795, -0.24747, -0.04866, -0.39256, 1.20114, 0.15793, -0.08916, 0.20063, 0.58148)
    info.calibration_illuminant2 = 21
    (tmp_path / "seq").mkdir()
    for i in range(3):
        write_dng(tmp_path / "seq" / f"f_{i:04d}.dng", make_mosaic(info, seed=i, shift=2 * i), info)
    rvd = encode(tmp_path / "seq", tmp_path / "c.rvd", EncodeOptions(refine="off")).output
    decode(rvd, tmp_path / "out", DecodeOptions(method="global-fit"))
    for i in range(3):
        _, back = read_dng(tmp_path / "out" / f"seq_{i:06d}.dng")
        assert back.color_matrix2 == pytest.approx(info.color_matrix2, abs=1e-4)
        assert (back.calibration_illuminant, back.calibration_illuminant2) == (17, 21)
    page = tifffile.TiffFile(tmp_path / "out" / "seq_000001.dng").pages[0]
    assert page.tags["XResolution"].value == (180, 1) and page.tags["ResolutionUnit"].value == 2


def test_the_real_bmpcc_dng_has_two_calibrations():
    mosaic, info = read_dng(shared("raw", "bmpcc4k_lake.dng"))
    assert (info.calibration_illuminant, info.calibration_illuminant2) == (17, 21)
    assert info.color_matrix2 is not None and len(info.color_matrix2) == 9
