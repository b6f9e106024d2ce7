"""The codec's public surface: encoding (rawvid.encoder) and decoding (rawvid.decoder) in one namespace."""
from .chain import network_method, predict_frame, select_device as _select_device  # noqa: F401
from .decoder import DecodeOptions, DecodeResult, clip_name, decode, frame_name, info_from_manifest  # noqa: F401
from .encoder import (EncodeOptions, EncodeResult, encode, keyframe_indices, parse_range,  # noqa: F401
                      read_rvd, resolve_calibration, resolve_refinement, resolve_video)
from .rawlayer import LayerSettings  # noqa: F401

open_rvd = read_rvd  # the name the README uses; read_rvd stays
