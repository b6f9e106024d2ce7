"""rawvid: a RAW video codec. An sRGB video plus RAW keyframes, de-rendered back to RAW.

The method is FAGDN, "Leveraging Frame Affinity for sRGB-to-RAW Video De-rendering"
(Zhang et al., CVPR 2024). Import the pieces you need::

    from rawvid import encode, decode, EncodeOptions, DecodeOptions, LayerSettings, open_rvd

``open_rvd`` (also ``read_rvd``) opens and verifies an .rvd: its manifest, sizes and attachments.

The codec names load on first use (``rawvid --help`` does not import PyTorch).
"""
__version__ = "0.1.0"

from .errors import FormatError, RawvidError, UnsupportedError  # noqa: E402
from .meta import Camera, Frame, RawInfo  # noqa: E402
from .mlv import MLVReader, MLVWriter  # noqa: E402
from .dng import DNGSequence, encode_dng, read_dng, write_dng  # noqa: E402

_CODEC = ("encode", "decode", "EncodeOptions", "DecodeOptions", "LayerSettings", "read_rvd", "open_rvd", "frame_name")


def __getattr__(name: str):
    if name in _CODEC:
        from . import codec

        return getattr(codec, name)
    raise AttributeError(f"module 'rawvid' has no attribute {name!r}")


__all__ = [
    *_CODEC, "__version__", "RawvidError", "FormatError", "UnsupportedError", "Camera", "Frame", "RawInfo",
    "MLVReader", "MLVWriter", "DNGSequence", "encode_dng", "read_dng", "write_dng",
]
