"""numbacnn-localconv: a locally connected 2D layer as a numbacnn layer plugin.

numbacnn finds the layer through the ``numbacnn.layers`` entry point and imports
``numbacnn_localconv.localconv`` the first time ``localconv`` is used.
"""

__version__ = "0.1.0"
