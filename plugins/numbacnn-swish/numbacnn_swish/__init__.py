"""numbacnn-swish: the Swish activation as a numbacnn layer plugin.

numbacnn finds the layer through the ``numbacnn.layers`` entry point and imports
``numbacnn_swish.swish`` the first time ``swish`` is used; nothing here is imported before.
"""

__version__ = "0.1.0"
