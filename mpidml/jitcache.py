"""Where Numba caches the compiled kernels.

Numba's ``cache=True`` checks only the timestamp of the file that defines a
function, not of the helpers it inlines from other files, so an edited or
upgraded ``kernels/`` can silently load stale machine code. It also writes
beside the source, which fails in a read-only site-packages on a cluster.

So, unless the user set ``NUMBA_CACHE_DIR``, the cache goes to
``$XDG_CACHE_HOME/mpidml/numba/<hash of all kernels/*.py>`` (default
``~/.cache``): a change to any kernel file gives a fresh directory, and the
location is per user and writable. Must run before Numba is imported.
"""

from __future__ import annotations

import hashlib
import os


def _kernels_dir() -> str:
    """The directory of mpidml.kernels without importing it (it would import Numba)."""
    import importlib.util

    spec = importlib.util.find_spec("mpidml.kernels")
    return os.path.dirname(spec.origin) if spec and spec.origin else ""


# Numba-compiled code outside kernels/: the compiled step loop, its MPI intrinsics and the node
# reducer it links, which inline kernels and whose cached code must follow a change to either.
_COMPILED_ELSEWHERE = (("parallel", "steploop.py"), ("parallel", "native.py"), ("parallel", "nodereduce.py"))


def kernels_source_hash() -> str:
    here = _kernels_dir()
    h = hashlib.sha256()
    for name in sorted(os.listdir(here)) if os.path.isdir(here) else []:
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as fh:
                h.update(name.encode() + b"\0" + fh.read())
    package = os.path.dirname(os.path.abspath(__file__))  # mpidml/ (kernels/ sits beside it or inside it)
    for parts in _COMPILED_ELSEWHERE:
        path = os.path.join(package, *parts)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                h.update("/".join(parts).encode() + b"\0" + fh.read())
    return h.hexdigest()[:16]


def configure_numba_cache() -> str | None:
    """Set NUMBA_CACHE_DIR (if unset) to a directory keyed by the kernels' source; returns it."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "mpidml", "numba", kernels_source_hash())
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # fall back to Numba's default location
    os.environ["NUMBA_CACHE_DIR"] = path
    return path
