"""The array model core: dense integer ids, numpy array state and numba kernels (docs/design.md, "Model core").

The kernels are compiled on first use and cached in ``NUMBA_CACHE_DIR``, by default ``var/numba`` of the checkout
(set before numba is imported, so every entry point shares one writable cache, also where the sources are
read-only).
"""

import builtins
import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "var" / "numba"))

# PyFlink's Python worker (process mode) replaces the builtin print with a method of its own, which numba, as it is
# imported, refuses to register in place of print ("not globally reachable"): numba is imported with the real one
_print = builtins.print
_real = getattr(getattr(_print, "__self__", None), "_print", None)
if _real is not None:
    builtins.print = _real
    try:
        import numba  # noqa: F401
    finally:
        builtins.print = _print
