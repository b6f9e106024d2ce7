"""Imported first by the speed benchmarks, before PyTorch: OpenMP's workers sleep between parallel
regions, as ``rawvid encode`` and ``rawvid decode`` set them (rawvid.pipeline.passive_openmp)."""
from rawvid.pipeline import passive_openmp

passive_openmp()
