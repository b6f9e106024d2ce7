"""rawvid's lossless-JPEG writer: predictor 1 (what rawspeed/darktable decodes), bit-exact in two decoders."""
from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pytest
import rawpy
from conftest import EXAMPLE, make_info, make_mosaic

from rawvid import lj92
from rawvid.dng import encode_dng


def _sos_predictor(data: bytes) -> int:
    at = data.index(b"\xff\xda")
    ns = data[at + 4]
    return data[at + 5 + 2 * ns]  # Ss: the predictor in a lossless scan


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_round_trip_through_a_c_decoder(bits):
    info = make_info(bits=bits, width=96, height=64)
    m = make_mosaic(info, seed=bits)
    data = lj92.encode(m, bits)
    assert _sos_predictor(data) == 1
    back = imagecodecs.ljpeg_decode(data)
    assert back.shape == (64, 48, 2) and np.array_equal(back.reshape(64, 96), m)


@pytest.mark.parametrize("case", ["constant", "extremes", "noise"])
def test_edge_cases_decode_exactly(case):
    rng = np.random.default_rng(0)
    m = {"constant": np.full((8, 16), 1234, np.uint16),
         "extremes": np.tile(np.array([0, 65535], np.uint16), (6, 8)),  # differences of -32768 (category 16)
         "noise": rng.integers(0, 65536, (16, 32)).astype(np.uint16)}[case]
    data = lj92.encode(m, 16)
    assert np.array_equal(imagecodecs.ljpeg_decode(data).reshape(m.shape), m)


def test_code_lengths_are_limited_to_16_bits():
    counts = np.array([2 ** k for k in range(17)][::-1])  # a very skewed histogram: Huffman would go past 16
    lengths = lj92.code_lengths(counts)
    assert lengths.max() <= 16 and np.all(lengths > 0)
    assert sum(2.0 ** -ln for ln in lengths) < 1  # a prefix code that leaves the all-ones code free


def test_real_frame_in_a_dng_opens_in_libraw_and_is_smaller_than_before():
    from rawvid.mlv import MLVReader, encode_lj92

    with MLVReader(EXAMPLE) as clip:
        m, info = clip.read(2), clip.info
    data = encode_dng(m, info, compress=True)
    with rawpy.imread(io.BytesIO(data)) as raw:
        assert np.array_equal(raw.raw_image, m)
    assert len(lj92.encode(m, info.bits)) < len(encode_lj92(m, info.bits))  # than predictor 6, one component
