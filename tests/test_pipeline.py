"""Read-ahead and write-behind threads of the decoder: order, bounded, errors surface in the caller."""
from __future__ import annotations

import threading

import pytest

from rawvid.pipeline import ReadAhead, WriteBehind, keep_freed_memory


def test_read_ahead_keeps_order_and_prepares_from_start():
    ahead = ReadAhead(iter(range(10)), lambda x: x * x, start=3, depth=2)
    got = []
    while (item := ahead.next()) is not None:
        got.append(item)
    assert got == [(i, i * i if i >= 3 else None) for i in range(10)]
    assert ahead.next() is None  # the end stays the end
    ahead.close()


def test_read_ahead_raises_the_readers_error_in_the_caller():
    def frames():
        yield 1
        raise OSError("pipe broke")

    ahead = ReadAhead(frames(), lambda x: x)
    assert ahead.next() == (1, 1)
    with pytest.raises(OSError, match="pipe broke"):
        ahead.next()
    ahead.close()


def test_read_ahead_stops_early_without_hanging():
    produced = []

    def frames():
        for i in range(1000):
            produced.append(i)
            yield i

    ahead = ReadAhead(frames(), lambda x: x, depth=2)
    assert ahead.next() == (0, 0)
    ahead.close()
    assert len(produced) < 10  # bounded: it never ran far ahead
    assert not any(t.name == "rawvid-read-ahead" and t.is_alive() for t in threading.enumerate())


def test_write_behind_writes_in_order_and_reports_the_first_error():
    done = []
    w = WriteBehind(lambda i: done.append(i), depth=2)
    for i in range(20):
        w.submit(i)
    w.close()
    assert done == list(range(20))

    def fail(i):
        if i == 3:
            raise OSError("disk full")
        done.append(i)

    done.clear()
    w = WriteBehind(fail)
    for i in range(6):
        try:
            w.submit(i)
        except OSError:
            break
    with pytest.raises(OSError, match="disk full"):
        w.close()
    assert done == [0, 1, 2]  # nothing after the failed write


def test_freed_frame_buffers_stay_in_the_process_under_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    import ctypes

    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    assert keep_freed_memory() is True  # both thresholds accepted by the C library
    before = libc.mallinfo2().hblkhd  # bytes in mmap'd chunks
    buf = np.ones((16, 480, 800), np.float32)  # one 24 MB activation of a 1600x900 frame
    during = libc.mallinfo2().hblkhd
    del buf
    # served from the heap (and freed back into it for the next frame), not a fresh mapping: without
    # the setting glibc maps it (hblkhd grows by 24.6 MB) and unmaps it when freed
    assert during - before < 24_000_000
