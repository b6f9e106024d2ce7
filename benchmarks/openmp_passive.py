"""Imported first by the speed benchmarks, before PyTorch: OpenMP's workers sleep between parallel
regions, and freed frame buffers stay in the process, as ``rawvid encode`` and ``rawvid decode`` set
them (rawvid.pipeline.passive_openmp, keep_freed_memory)."""
from rawvid.pipeline import keep_freed_memory, passive_openmp

passive_openmp()
keep_freed_memory()
