"""Layer-test setup: the shared case modules here (``_pool_cases``) importable by name.

pytest runs with ``--import-mode=importlib``, which puts no test folder on ``sys.path``;
this folder goes on it so the test files of several ranks can share one harness.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
