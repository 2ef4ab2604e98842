"""The array model core: dense integer ids, numpy array state and numba kernels (docs/design.md, "Model core").

The kernels are compiled on first use and cached in ``NUMBA_CACHE_DIR``, by default ``var/numba`` of the checkout
(set before numba is imported, so every entry point shares one writable cache, also where the sources are
read-only).
"""

import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "var" / "numba"))
