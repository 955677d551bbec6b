"""``python -m numbacnn.cli``: the ``numbacnn`` command."""

import sys

from . import main

sys.exit(main())
