"""Lossless JPEG (ITU T.81 process 14, "LJ92") with predictor 1, the variant every raw reader decodes.

rawspeed (darktable's decoder) supports predictor 1 only (its issue 189); imagecodecs' liblj92
writes predictor 6. So DNG frames are written here: a Bayer frame of W x H becomes a JPEG of
W/2 x H with two interleaved components (the even and the odd columns), so predictor 1 (the
left neighbour) predicts every sample from the same CFA colour two columns to its left,
the first column from the sample above, and the first sample from 2^(P-1), as T.81 says.
One Huffman table, optimal for the frame (lengths limited to 16 bits). Pure numpy, vectorised.
"""
from __future__ import annotations

import heapq
import struct

import numpy as np


def residuals(mosaic: np.ndarray, bits: int) -> np.ndarray:
    """Predictor-1 differences of a W x H mosaic seen as W/2 x H with 2 interleaved components,
    modulo 2^16 as T.81 computes them, as int32 in [-32768, 32767]."""
    x = mosaic.astype(np.int32)
    pred = np.empty_like(x)
    pred[:, 2:] = x[:, :-2]  # left neighbour of the same component (two Bayer columns left)
    pred[1:, :2] = x[:-1, :2]  # the first column of each row: the sample above
    pred[0, :2] = 1 << (bits - 1)  # the first sample of each component
    d = (x - pred) & 0xFFFF
    return np.where(d >= 0x8000, d - 0x10000, d)


def categories(diff: np.ndarray) -> np.ndarray:
    """SSSS: the bit length of |diff| (0 for 0; 16 for -32768)."""
    a = np.abs(diff.astype(np.int64))
    return np.where(a == 0, 0, np.floor(np.log2(np.maximum(a, 1))).astype(np.int64) + 1)


def code_lengths(counts: np.ndarray, limit: int = 16) -> np.ndarray:
    """Huffman code lengths for the 17 categories (0 where unused), none longer than ``limit``.

    JPEG reserves the all-ones code, so one phantom symbol takes part in the construction; lengths
    over the limit are pulled back by the T.81 Annex K.3 adjustment."""
    freq = [int(c) for c in counts] + [1]  # the phantom
    used = [i for i, f in enumerate(freq) if f > 0]
    length = np.zeros(len(freq), np.int64)
    if len(used) == 1:
        length[used[0]] = 1
    heap = [(freq[i], k, [i]) for k, i in enumerate(used)]
    heapq.heapify(heap)
    tick = len(heap)
    while len(heap) > 1:
        f1, _, a = heapq.heappop(heap)
        f2, _, b = heapq.heappop(heap)
        for i in a + b:
            length[i] += 1
        heapq.heappush(heap, (f1 + f2, tick, a + b))
        tick += 1
    bl = np.bincount(length[length > 0], minlength=65)
    for i in range(64, limit, -1):  # Annex K.3: move symbols up from lengths over the limit
        while bl[i] > 0:
            j = i - 2
            while bl[j] == 0:
                j -= 1
            bl[i] -= 2
            bl[i - 1] += 1
            bl[j + 1] += 2
            bl[j] -= 1
    order = sorted(used, key=lambda i: (length[i], i))  # longest codes to the rarest symbols
    out = np.zeros(len(freq), np.int64)
    k = 0
    for ln in range(1, limit + 1):
        for _ in range(bl[ln]):
            out[order[k]] = ln
            k += 1
    phantom = len(freq) - 1
    if out[phantom] == 0 and len(used) > 1:
        raise AssertionError("Huffman construction lost the reserved code")
    return out[:phantom]


def canonical_codes(lengths: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """Codes from lengths (JPEG canonical order: by length, then by symbol); the DHT's BITS and HUFFVAL."""
    symbols = sorted((int(n), s) for s, n in enumerate(lengths) if n > 0)
    codes = np.zeros(len(lengths), np.int64)
    code, prev = 0, symbols[0][0] if symbols else 0
    for n, s in symbols:
        code <<= n - prev
        codes[s] = code
        code += 1
        prev = n
    bits = [sum(1 for n, _ in symbols if n == ln) for ln in range(1, 17)]
    return codes, bits, [s for _, s in symbols]


def pack_bits(values: np.ndarray, nbits: np.ndarray) -> bytes:
    """Concatenate ``values[i]`` written in ``nbits[i]`` (<= 32) bits, MSB first; pad with ones; stuff 0xFF.

    Each value is left-aligned in a big-endian 32-bit word, the words are unpacked to bits, and
    a mask keeps the first ``nbits[i]`` of each: one pass of array operations, no loop."""
    nbits = nbits.astype(np.int64)
    words = (values.astype(np.uint64) << (32 - nbits).astype(np.uint64)).astype(">u4")
    bits = np.unpackbits(words.view(np.uint8).reshape(-1, 4), axis=1)
    stream = bits[np.arange(32) < nbits[:, None]]
    stream = np.concatenate([stream, np.ones((-stream.size) % 8, np.uint8)])  # pad with ones (T.81 F.1.2.3)
    data = np.packbits(stream)
    ff = np.flatnonzero(data == 0xFF)
    return np.insert(data, ff + 1, 0).tobytes() if ff.size else data.tobytes()


def encode(mosaic: np.ndarray, bits: int) -> bytes:
    """A Bayer frame (H x W, W even) as a predictor-1 lossless JPEG of W/2 x H, 2 components."""
    h, w = mosaic.shape
    if w % 2 or not 2 <= bits <= 16:
        raise ValueError(f"cannot LJ92 a {w}x{h} {bits}-bit frame")
    diff = residuals(mosaic, bits).reshape(-1)
    ssss = categories(diff)
    lengths = code_lengths(np.bincount(ssss, minlength=17)[:17])
    codes, huff_bits, huff_vals = canonical_codes(lengths)
    extra = np.where(diff < 0, diff - 1, diff) & ((np.int64(1) << ssss) - 1)  # T.81: negatives as one's complement
    extra = np.where(ssss == 16, 0, extra)  # category 16 has no extra bits
    nb_extra = np.where(ssss == 16, 0, ssss)
    # one word per sample: its Huffman code followed by its extra bits (at most 16 + 16)
    scan = pack_bits((codes[ssss] << nb_extra) | extra, lengths[ssss] + nb_extra)
    sof = struct.pack(">HBHHB", 8 + 3 * 2, bits, h, w // 2, 2) + bytes([1, 0x11, 0, 2, 0x11, 0])
    dht = bytes([0x00]) + bytes(huff_bits) + bytes(huff_vals)
    sos = struct.pack(">HB", 6 + 2 * 2, 2) + bytes([1, 0x00, 2, 0x00]) + bytes([1, 0, 0])  # Ss=1 (predictor), Se=0, Ah/Al=0
    return (b"\xff\xd8" + b"\xff\xc3" + sof + b"\xff\xc4" + struct.pack(">H", 2 + len(dht)) + dht
            + b"\xff\xda" + sos + scan + b"\xff\xd9")
