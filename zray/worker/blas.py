"""Set the thread count of an OpenBLAS already loaded in this process.

A worker sets OMP/MKL/OPENBLAS_NUM_THREADS to its task's ``num_cpus`` (as Ray
does), but OpenBLAS reads them once, when it is loaded: a worker that loaded
numpy for an earlier task, or inherited it from its fork server
(``Config.worker_preload_modules``), would keep the count it had then.  So when
the count changes, the worker also calls OpenBLAS's own setter, found by its
exported name in the libraries this process has mapped (numpy's wheels bundle
OpenBLAS under a prefixed name).  Does nothing where no OpenBLAS is loaded.
"""

from __future__ import annotations

import ctypes

SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
           "scipy_openblas_set_num_threads_64_", "scipy_openblas_set_num_threads",
           "openblas_set_num_threads64_")

_found: dict = {}     # library path -> its setter (None: it has none)


def loaded_openblas(maps_path: str = "/proc/self/maps") -> list:
    try:
        with open(maps_path) as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps
                     if "openblas" in line.lower() and len(line.split(None, 5)) == 6}
    except OSError:
        return []
    return sorted(paths)


def _setter(path: str):
    if path not in _found:
        _found[path] = None
        try:
            library = ctypes.CDLL(path)
        except OSError:
            return None
        for name in SETTERS:
            function = getattr(library, name, None)
            if function is not None:
                function.argtypes = [ctypes.c_int]
                function.restype = None
                _found[path] = function
                break
    return _found[path]


def set_blas_threads(count: int) -> int:
    """Set every loaded OpenBLAS to ``count`` threads; how many were set."""
    done = 0
    for path in loaded_openblas():
        setter = _setter(path)
        if setter is not None:
            setter(max(1, int(count)))
            done += 1
    return done
