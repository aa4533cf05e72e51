"""Numba kernels on note arrays: quantise, tokenise, detokenise, attributes, grammar masks.

Kernels are compiled with ``cache=True``. Their cache goes to ``NUMBA_CACHE_DIR`` when it is set,
otherwise to a per-user cache directory, so a read-only install still caches its compiled code.
"""

import os
from pathlib import Path

if "NUMBA_CACHE_DIR" not in os.environ:
    _cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ["NUMBA_CACHE_DIR"] = str(_cache_home / "sideman" / "numba")
