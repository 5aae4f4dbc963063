"""How much memory a node manager needs to pull a large object from another node.

Starts a 2-node Cluster, makes an object of ``--mb`` megabytes on the second
node, and has the driver (whose store is the head node) get it, while a thread
samples the RSS of the head node's manager (the puller), of the other node's
manager (the chunk server) and of the driver every few milliseconds.  The chunks
are written into a shared-memory file, so the object itself never counts in the
puller's private memory: what grows is the window of chunks in flight.  (The
chunk server maps the object to send it without a copy, so its RSS counts the
object's shared pages while it serves them; its private memory does not grow.)

    python tools/transfer_memory.py --mb 1024
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil

import zray
from zray.cluster_utils import Cluster


def _memory(process) -> tuple[int, int]:
    """(RSS, private memory): RSS less the shared pages, such as those of a
    shared-memory object the process maps (which are the object, not a copy)."""
    info = process.memory_info()
    return info.rss, info.rss - info.shared


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024)
    args = parser.parse_args(argv)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        source = cluster.add_node(num_cpus=1, resources={"source": 1})
        zray.init(address=cluster.address)
        config = cluster._config
        processes = {"puller (node manager)": psutil.Process(cluster.head_node.pid),
                     "chunk server (node manager)": psutil.Process(source.pid),
                     "driver": psutil.Process()}

        @zray.remote(resources={"source": 1})
        def make(megabytes):
            return np.ones(megabytes * 2**20, dtype=np.uint8)

        ref = make.remote(args.mb)
        zray.wait([ref])
        before = {name: _memory(p) for name, p in processes.items()}
        peak = dict(before)
        done = threading.Event()

        def sample():
            while not done.is_set():
                for name, p in processes.items():
                    now = _memory(p)
                    peak[name] = tuple(max(a, b) for a, b in zip(peak[name], now))
                time.sleep(0.005)
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        array = zray.get(ref)
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        assert array.nbytes == args.mb * 2**20 and int(array[-1]) == 1
        window = config.transfer_window * config.transfer_chunk_bytes
        print(f"pulled {args.mb} MiB in {elapsed:.2f} s ({args.mb * 2**20 / elapsed / 1e9:.2f}"
              f" GB/s); window {config.transfer_window} x "
              f"{config.transfer_chunk_bytes // 2**20} MiB = {window // 2**20} MiB")
        print(f"  {'process':<28} {'private before':>14} {'peak growth':>12}"
              f" {'RSS peak growth':>16}")
        for name in processes:
            (rss0, anon0), (rss1, anon1) = before[name], peak[name]
            print(f"  {name:<28} {anon0 / 2**20:10.1f} MiB {(anon1 - anon0) / 2**20:8.1f} MiB"
                  f" {(rss1 - rss0) / 2**20:12.1f} MiB")
        del array
    finally:
        zray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
