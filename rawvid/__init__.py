"""rawvid: a RAW video codec. An sRGB video plus RAW keyframes, de-rendered back to RAW.

The method is FAGDN, "Leveraging Frame Affinity for sRGB-to-RAW Video De-rendering"
(Zhang et al., CVPR 2024). Import the pieces you need::

    from rawvid import encode, read_rvd, MLVReader, read_dng, write_dng
"""
__version__ = "0.1.0"

from .errors import FormatError, RawvidError, UnsupportedError  # noqa: E402
from .meta import Camera, Frame, RawInfo  # noqa: E402
from .mlv import MLVReader, MLVWriter  # noqa: E402
from .dng import DNGSequence, encode_dng, read_dng, write_dng  # noqa: E402

__all__ = [
    "__version__", "RawvidError", "FormatError", "UnsupportedError", "Camera", "Frame", "RawInfo",
    "MLVReader", "MLVWriter", "DNGSequence", "encode_dng", "read_dng", "write_dng",
]
