"""What bounds put_large and a first read of a large object on this machine.

Times, in turn (interleaved rounds, medians), for one array of ``--mb`` MB:

- numpy alloc+copy (``a.copy()``), and a copy into an existing array;
- ``pwrite`` of its bytes into a fresh file in /dev/shm (what zray's put does:
  the store keeps one tmpfs file per object);
- ``zray.put`` of the array (a local cluster with one CPU);
- summing the array through a fresh read-only map of such a file (page faults
  on first touch) and through the same map again.

    python tools/store_bound.py --mb 100 --rounds 7
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time

import numpy as np

BYTES_PER_GB = 1e9


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def pwrite_fresh(path: str, view: memoryview) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, len(view))
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
    finally:
        os.close(fd)


def map_and_sum(path: str) -> tuple[float, float]:
    """Seconds to sum through a fresh map (first touch), then through it again."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    array = np.frombuffer(mapped, dtype=np.float64)
    first = timed(array.sum)
    again = timed(array.sum)
    del array
    mapped.close()
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    import zray
    array = np.ones(options.mb * 1_000_000 // 8)
    view = memoryview(array).cast("B")
    into = np.empty_like(array)
    path = f"/dev/shm/zray-store-bound-{os.getpid()}"
    samples = {name: [] for name in ("alloc+copy", "copy into existing", "pwrite fresh tmpfs",
                                     "zray.put", "sum via fresh map", "sum via same map")}
    zray.init(num_cpus=1)
    try:
        zray.put(array)                                   # warm-up
        for _ in range(options.rounds):
            samples["alloc+copy"].append(timed(array.copy))
            samples["copy into existing"].append(timed(lambda: np.copyto(into, array)))
            samples["pwrite fresh tmpfs"].append(timed(lambda: pwrite_fresh(path, view)))
            first, again = map_and_sum(path)
            samples["sum via fresh map"].append(first)
            samples["sum via same map"].append(again)
            os.unlink(path)
            samples["zray.put"].append(timed(lambda: zray.put(array)))
    finally:
        zray.shutdown()
        if os.path.exists(path):
            os.unlink(path)
    print(f"{options.mb} MB, median of {options.rounds} interleaved rounds")
    print(f"{'step':24s} {'ms':>8s} {'GB/s':>7s}")
    for name, values in samples.items():
        seconds = statistics.median(values)
        print(f"{name:24s} {seconds * 1000:8.1f} {array.nbytes / BYTES_PER_GB / seconds:7.2f}")


if __name__ == "__main__":
    main()
