"""The optional C extension :mod:`dynamo_cdc.convert._native` (``dynamo_cdc/convert/_native/``),
loaded once.

The install compiles it where a C compiler is; without it every reader takes its Python path
(slower, the same rows). ``DYNAMO_CDC_NATIVE=0`` in the environment turns it off.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

module: ModuleType | None
try:
    module = importlib.import_module("dynamo_cdc.convert._native")
except ImportError:  # installed where no C compiler was
    module = None

# Whether the readers try the C extension first.
ENABLED = module is not None and os.environ.get("DYNAMO_CDC_NATIVE", "1") != "0"
