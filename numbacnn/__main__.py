"""``python -m numbacnn``: the ``numbacnn`` command."""

import sys

from .cli import main

sys.exit(main())
