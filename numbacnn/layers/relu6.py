"""relu6: y = min(max(x, 0), 6), torch.nn.ReLU6: hardtanh between 0 and 6, on its kernels
(gradient 0 at x <= 0 and x >= 6, as PyTorch's)."""

from __future__ import annotations

from typing import Any

from .hardtanh import Hardtanh, _off_edges


class ReLU6(Hardtanh):
    """Rectified linear unit capped at 6. Any shape -> same shape."""

    name = "relu6"
    kernel = "hardtanh"
    kernels = "numbacnn.layers.hardtanh"

    def __init__(self) -> None:
        super().__init__(0.0, 6.0)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Small cases for ``numbacnn layers --check relu6``."""
        return [{"config": {}, "input_shapes": [(2, 3, 4, 5)], "inputs": [_off_edges((2, 3, 4, 5), 0.0, 6.0)]}]
