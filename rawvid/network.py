"""The ``network`` method in PyTorch: FAGDN chained from the previous output along DIS flow.

The same method without PyTorch, in ONNX Runtime, is :class:`rawvid.runtime.OnnxNetwork`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .flow import compose, flow_to_tensor, warp_error
from .methods import NetworkBase
from .model import FAGDN, LAYOUTS, memory_format, run_network, step_inputs

#: how the network's keyframe reference finds the keyframe: ``direct`` (one DIS call, as trained)
#: or ``safe`` (the better of direct and chained flows per pixel, untrusted pixels dropped)
KEY_FLOW = "direct"
#: ``safe``: the keyframe's sRGB, warped, must match the frame within this mean absolute error
KEY_TRUST_ERR = 0.04


class Network(NetworkBase):
    """FAGDN in PyTorch (see :class:`rawvid.methods.NetworkBase` for what runs around it)."""

    def __init__(self, model: FAGDN, device: str = "cpu", tile: int | None = None, flow_preset: str = "fast",
                 key_flow: str = KEY_FLOW, layout: str = "contiguous"):
        super().__init__(model.config, tile, flow_preset)
        if layout not in LAYOUTS:
            raise ValueError(f"unknown network layout {layout!r} ({', '.join(LAYOUTS)})")
        self.layout = layout
        self.model = model.to(device).to(memory_format=memory_format(layout)).eval()
        self.device = device
        if key_flow not in ("direct", "safe"):
            raise ValueError(f"unknown keyframe flow {key_flow!r} (direct, safe)")
        self.key_flow_mode = key_flow
        self.key_chain: torch.Tensor | None = None  # the last frame's flow to the keyframe (safe mode)
        self.key: dict[str, torch.Tensor] = {}

    def keyframe(self, raw: np.ndarray, srgb: np.ndarray) -> None:
        super().keyframe(raw, srgb)
        self.key_chain = None
        self.key = {k: self._t(v) for k, v in self.key_arrays.items()}  # as tensors, once per keyframe

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(0).to(self.device)

    def _safe_key_flow(self, srgb: torch.Tensor, flow: torch.Tensor,
                       direct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow to the keyframe and where to trust it (1 x 1 x h x w).

        Per pixel, the better (by the keyframe sRGB's warp error) of DIS straight to the
        keyframe and the last frame's flow to the keyframe chained through this frame's
        flow; trusted where that error is under KEY_TRUST_ERR.
        """
        t = time.perf_counter()
        key = self.key["key_srgb"]
        err = warp_error(key, direct, srgb)
        best = direct
        if self.key_chain is not None:
            chained, valid = compose(flow, self.key_chain)
            err_c = torch.where(valid > 0, warp_error(key, chained, srgb), torch.ones_like(err))
            use = err_c < err
            best = torch.where(use, chained, direct)
            err = torch.minimum(err, err_c)
        self.key_chain = best
        self.timings.add("flow", time.perf_counter() - t)
        return best, (err < KEY_TRUST_ERR).to(best.dtype)

    @torch.no_grad()
    def _forward(self, srgb, prev_srgb, prev_raw, flow, key_flow, priors: dict) -> np.ndarray:
        flow = flow_to_tensor(flow).to(self.device)
        extra = {k: self._t(v) for k, v in priors.items()}
        if key_flow is not None:
            key_flow, trust = flow_to_tensor(key_flow).to(self.device), None
            if self.key_flow_mode == "safe":
                key_flow, trust = self._safe_key_flow(self._t(srgb), flow, key_flow)
            extra.update(self.key, key_flow=key_flow, key_trust=trust)
        inputs = step_inputs(self.config, self._t(srgb), self._t(prev_srgb), self._t(prev_raw), flow, **extra)
        return run_network(self.model, inputs, tile=self.tile, layout=self.layout)[0].float().cpu().numpy()
