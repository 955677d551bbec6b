"""numbacnn-spp: spatial pyramid pooling as a numbacnn layer plugin.

numbacnn finds the layer through the ``numbacnn.layers`` entry point and imports
``numbacnn_spp.spp`` the first time ``spp`` is used.
"""

__version__ = "0.1.0"
