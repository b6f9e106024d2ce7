"""Overlap a decode's I/O with its network: video frames read ahead, DNGs written behind.

The chain itself is sequential (each frame is predicted from the last), but reading the
sRGB video (an ffmpeg pipe) and writing DNG files (tifffile, zlib) do not depend on it
and release the GIL for most of their time. Two bounded queues keep memory flat: at most
``depth`` decoded frames ahead and ``depth`` DNGs behind. Frames are read and written in
order by one thread each, so the files that exist after an interruption are still a
prefix of the clip (each written atomically), and the output is byte-identical to a
sequential decode.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from typing import Callable, Iterator

_END = object()


def cpu_threads() -> int:
    """CPU threads one rawvid process may use: RAWVID_THREADS when set (``rawvid batch`` gives each
    clip its share of the cores; torchrun each process its share), else every core."""
    try:
        n = int(os.environ.get("RAWVID_THREADS", "0"))
    except ValueError:
        n = 0
    return n if n > 0 else max(1, os.cpu_count() or 1)


def passive_openmp() -> None:
    """Let PyTorch's OpenMP workers sleep between parallel regions instead of spinning.

    Encode and decode run their own threads beside the network's (video read ahead, the
    keyframe flow, DNGs written behind); spinning workers take the core those need. Measured
    on 2 cores: a 1600x900 decode 0.70 -> 0.59 CPU seconds a frame and 5-10% more frames/s,
    the example's decode 5.6-5.9 -> 5.3 s. Training (thousands of small operations on
    96x96 crops) runs 25% slower with it, so only the encode and decode commands set it.
    OpenMP reads the setting once, when PyTorch loads: call this before importing torch
    (an environment that sets OMP_WAIT_POLICY itself wins)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: glibc mallopt parameters: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Serve a frame's large buffers from the heap and keep what is freed there for the next frame.

    glibc maps every allocation over its (adaptive) threshold afresh and unmaps it when freed,
    so each frame's network activations and warps (5-25 MB each at 1600x900) page-fault anew
    on first touch: measured, one 24 MB concatenation in the network took 37 ms where the same
    copy into reused memory takes 1-2 ms. A fixed mmap threshold of 32 MB (glibc's adaptive one
    stops there) and a higher trim threshold keep that memory in the process between frames (at
    most ``trim_threshold`` of free memory is held). Returns False where the C library is not
    glibc or refuses a value."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


class ReadAhead:
    """Iterate ``frames`` in a background thread, applying ``prepare`` from index ``start`` on."""

    def __init__(self, frames: Iterator, prepare: Callable, start: int = 0, depth: int = 3):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(frames, prepare, start), daemon=True,
                                        name="rawvid-read-ahead")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, frames: Iterator, prepare: Callable, start: int) -> None:
        try:
            for i, rgb in enumerate(frames):
                if not self._put((rgb, prepare(rgb) if i >= start else None)):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)

    def next(self):
        """(frame, prepared or None), or None at the end; an error of the reader is raised here."""
        item = self._q.get()
        if item is _END:
            self._q.put(_END)  # later calls see the end too
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock the reader if it waits on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)


class WriteBehind:
    """Run ``write(*args)`` calls in order in one background thread; ``close`` waits and re-raises."""

    def __init__(self, write: Callable, depth: int = 3, timings=None, key: str = "dng"):
        self._write, self._timings, self._key = write, timings, key
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="rawvid-write-behind")
        self._thread.start()

    def _run(self) -> None:
        while True:
            args = self._q.get()
            if args is _END:
                return
            if self._error is not None:
                continue  # drain after a failure; the first error is what close() raises
            try:
                t = time.perf_counter()
                self._write(*args)
                if self._timings is not None:
                    self._timings.add(self._key, time.perf_counter() - t)
            except BaseException as exc:  # noqa: BLE001 - re-raised by submit/close in the caller
                self._error = exc

    def submit(self, *args) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(args)

    def close(self, wait: bool = True) -> None:
        """Finish the queued writes (``wait``) or drop them (an interrupted run), then re-raise any error."""
        if not wait:
            while True:
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    break
        self._q.put(_END)
        self._thread.join()
        if wait and self._error is not None:
            raise self._error
